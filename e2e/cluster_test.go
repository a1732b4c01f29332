package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The cluster test plays issue 14's operator: three nats-server nodes
// (built from the module tollgate embeds), three tollgate replicas of the
// real binary with nats.replicas 3, a 5,000 plan, 32 clients offering
// requests at 80/s, and a fault schedule: the ledger stream's leader killed
// with -9 and started again 5 s later, then every node stopped with
// SIGTERM and started again in turn. Each round asserts what the README
// promises on a cluster:
//
//   - admitted = the limit, exactly, once leases settle, and every
//     replica's usage says so (usage = ledger);
//   - a revoked key is refused by every replica within 2 s (p99) of the
//     DELETE's answer, and the DELETE itself succeeds through failovers;
//   - a replica holding a lease never stalls an admission beyond 100 ms;
//   - the streams' consumers stay bounded round after round.
//
// The timing bounds are checked as stated with TOLLGATE_STRICT_TIMING=1 (a
// quiet machine, `make cluster-test`); by default, on a machine that runs
// the rest of the suite at the same time, stalls may reach 1 s and the
// revocation p99 3 s, which still fails what issue 14 found (stalls of
// 1.45-1.83 s and more, revocations after 7.7 s).
// TOLLGATE_CLUSTER_ROUNDS sets the number of rounds (default 3).
func TestClusterFailover(t *testing.T) {
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("TOLLGATE_CLUSTER_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	stallMax, revokeP99 := time.Second, 3*time.Second
	if os.Getenv("TOLLGATE_STRICT_TIMING") == "1" {
		stallMax, revokeP99 = 100*time.Millisecond, 2*time.Second
	}
	// Issue 18 bounds what a crash strands to 1 % of the limit: a lease is
	// at most half of that, 25 tokens of this plan of 5,000, about a
	// second of this load per replica. What a replica can spend while the
	// ledger has no leader is what a crash can strand, so this plan no
	// longer rides out the election of a killed leader (4-9 s): its
	// admissions wait for it, up to the ledger timeout, and some are
	// answered 503. Plans whose half percent covers failover_horizon of
	// their traffic still never wait (TestLeaderFailoverKeepsAdmitting).
	stallMax = max(stallMax, 12*time.Second)

	up := backend(t)
	nc := startNATSCluster(t, 3)
	reps := make([]*instance, 3)
	for i := range reps {
		reps[i] = clusterReplica(t, up, nc.URL())
	}
	// Three replicas started at once on an empty cluster: all must come up.
	for _, r := range reps {
		r.spawn()
	}
	for _, r := range reps {
		r.waitReady()
	}
	if _, err := reps[0].cli(replicaToken, "tenants", "create", "probe", "--plan", "big"); err != nil {
		t.Fatal(err)
	}
	nc.waitCurrent(60 * time.Second)
	baseline, per := nc.consumers()
	t.Logf("consumers after start: %d %v", baseline, per)

	for round := 1; round <= rounds; round++ {
		tenant := fmt.Sprintf("acme%d", round)
		key := newTenantKey(t, reps[round%3], replicaToken, tenant)
		res := clusterRound(t, nc, reps, key)
		served := res.served.Load()
		t.Logf("round %d (%s): %s", round, res.elapsed.Round(time.Second), res.summary())
		if len(res.stuck) > 0 {
			// Slow revocations (over 1 s) are rare: say where and when,
			// with what the replicas' watchers did, even when p99 holds.
			t.Logf("round %d: %v", round, res.stuck)
			for i, r := range reps {
				t.Logf("replica %d (%s) watch and store lines:\n%s", i, r.proxy, grepLines(r.logs(), `"logger":"watch"`, `"logger":"store"`))
			}
		}

		if served != 5000 {
			t.Errorf("round %d: %d admitted, want exactly the limit of 5000", round, served)
			for i, r := range reps {
				t.Logf("replica %d's warnings:\n%s", i, warnings(r.logs()))
			}
		}
		for i, r := range reps {
			if used := clusterUsage(t, r, tenant); used != served {
				t.Errorf("round %d: replica %d reports %d used, %d were admitted", round, i, used, served)
			}
		}
		if n := res.statuses.other() - res.statuses.counts()[503]; n > 0 {
			t.Errorf("round %d: %d answers neither 200, 429 nor 503: %v", round, n, res.statuses.counts())
		}
		if worst := res.worstStall(); worst > stallMax {
			t.Errorf("round %d: an admission took %v, want at most %v", round, worst, stallMax)
		}
		if len(res.revoked) == 0 {
			t.Errorf("round %d: no revocation was measured", round)
		} else if p := percentile(res.revoked, 99); p > revokeP99 {
			t.Errorf("round %d: revocation p99 %v, want at most %v; %v", round, p, revokeP99, res.stuck)
			for i, r := range reps {
				t.Logf("replica %d (%s):\n%s", i, r.proxy, r.logs())
			}
		}
		if res.deleteFailed.Load() > 0 || res.createFailed.Load() > 0 {
			t.Errorf("round %d: %d key creations and %d DELETEs failed through failovers: %v",
				round, res.createFailed.Load(), res.deleteFailed.Load(), res.stuck)
			for i, r := range reps {
				t.Logf("replica %d's warnings:\n%s", i, warnings(r.logs()))
			}
		}
		// Consumers: what the replicas hold (their watchers) and nothing
		// that grows round after round. A watcher recreated after its
		// node went away may leave its old consumer until the server
		// deletes it as inactive, which under a loaded machine took more
		// than 30 s: a couple per replica may linger, no more.
		bound := baseline + 2*len(reps)
		checkFor(t, 60*time.Second, 500*time.Millisecond, func() error {
			n, per := nc.consumers()
			if n > bound {
				return fmt.Errorf("%d consumers, %d after start (bound %d): %v", n, baseline, bound, per)
			}
			return nil
		})
		n, per := nc.consumers()
		t.Logf("round %d: %d consumers %v", round, n, per)
	}
	for i, r := range reps {
		for _, bad := range []string{"panic", "DATA RACE"} {
			if bytes.Contains([]byte(r.logs()), []byte(bad)) {
				t.Errorf("replica %d logged %q:\n%s", i, bad, r.logs())
			}
		}
	}
}

func clusterReplica(t *testing.T, upstream, natsURL string) *instance {
	t.Helper()
	in := configured(t, fmt.Sprintf(`{url: "%s", replicas: 3}`, natsURL), fmt.Sprintf(`quota: {lease_ttl: 3s, lease_idle: 2s}
log: {access: false}
# The revocation probes send revoked keys from one address by design: a
# failure limit would answer them, and then everything from 127.0.0.1, 429.
auth: {failures: {per_address: 0}}
plans:
  pro: {monthly_requests: 5000}
  big: {monthly_requests: 100000000}
routes:
  - {path_prefix: /, upstream: http://%s, auth: [api_key]}
`, upstream))
	return in
}

type statusCounts struct {
	mu sync.Mutex
	m  map[int]int
}

func (s *statusCounts) add(code int) {
	s.mu.Lock()
	if s.m == nil {
		s.m = map[int]int{}
	}
	s.m[code]++
	s.mu.Unlock()
}

func (s *statusCounts) counts() map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.m)
}

func (s *statusCounts) other() int {
	n := 0
	for code, c := range s.counts() {
		if code != 200 && code != 429 {
			n += c
		}
	}
	return n
}

type roundResult struct {
	elapsed      time.Duration
	served       atomic.Int64
	statuses     statusCounts
	mu           sync.Mutex
	lat          []time.Duration // admissions during the fault schedule
	revoked      []time.Duration // DELETE answered → the replica refuses, per replica and probe
	deletes      []time.Duration // how long each DELETE took
	createFailed atomic.Int64
	deleteFailed atomic.Int64
	faults       []string
	slow         []string // admissions over 50 ms: when, where, how long
	stuck        []string // revocations never seen
}

func (r *roundResult) worstStall() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Max(append([]time.Duration{0}, r.lat...))
}

func (r *roundResult) summary() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("admitted %d %v; faults %v; admissions during faults n=%d p50 %v p99 %v p99.9 %v max %v; "+
		"revocation n=%d p50 %v p99 %v max %v; DELETE n=%d p50 %v max %v; slow %v",
		r.served.Load(), r.statuses.counts(), r.faults,
		len(r.lat), percentile(r.lat, 50), percentile(r.lat, 99), percentile(r.lat, 99.9), percentile(r.lat, 100),
		len(r.revoked), percentile(r.revoked, 50), percentile(r.revoked, 99), percentile(r.revoked, 100),
		len(r.deletes), percentile(r.deletes, 50), percentile(r.deletes, 100), r.slow)
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)].Round(100 * time.Microsecond)
}

// clusterRound runs the load and the fault schedule once, then spends
// what is left of the month and waits until nothing more is admitted.
func clusterRound(t *testing.T, nc *natsCluster, reps []*instance, key string) *roundResult {
	t.Helper()
	res := &roundResult{}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer hc.CloseIdleConnections()

	var paced atomic.Bool // 80/s while the faults run, then as fast as answers come
	paced.Store(true)
	const clients, offered, rate = 32, 10000, 80
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			target := reps[c%len(reps)]
			every := time.Duration(clients) * time.Second / rate
			next := start.Add(time.Duration(c) * every / clients)
			for i := 0; i < offered/clients && ctx.Err() == nil; i++ {
				if paced.Load() {
					time.Sleep(time.Until(next))
					next = next.Add(every)
				}
				during := paced.Load()
				t0 := time.Now()
				code := clusterGet(ctx, hc, target, key)
				el := time.Since(t0)
				res.statuses.add(code)
				if code == 200 {
					res.served.Add(1)
					if during {
						res.mu.Lock()
						res.lat = append(res.lat, el)
						if el > 50*time.Millisecond {
							res.slow = append(res.slow, fmt.Sprintf("%.2fs:r%d:%v", t0.Sub(start).Seconds(), c%len(reps), el.Round(time.Millisecond)))
						}
						res.mu.Unlock()
					}
				}
			}
		}()
	}

	faultsDone := make(chan struct{})
	var probes sync.WaitGroup
	probes.Add(1)
	go func() {
		defer probes.Done()
		for p := 0; ; p++ {
			select {
			case <-faultsDone:
				return
			default:
			}
			revokeProbe(ctx, hc, reps, p, res)
		}
	}()

	// The fault schedule, with leases in place first.
	time.Sleep(3 * time.Second)
	leader := nc.leaderOf("TOLLGATE_LEDGER_0")
	res.faults = append(res.faults, fmt.Sprintf("%.2fs:kill -9 %s", time.Since(start).Seconds(), leader))
	nc.restart(nc.node(leader), syscall.SIGKILL, 5*time.Second)
	for _, nd := range nc.nodes {
		res.faults = append(res.faults, fmt.Sprintf("%.2fs:SIGTERM %s", time.Since(start).Seconds(), nd.name))
		nc.restart(nd, syscall.SIGTERM, time.Second)
	}
	time.Sleep(2 * time.Second)
	close(faultsDone)
	probes.Wait()
	paced.Store(false)
	wg.Wait()

	// Settle: what replicas still hold is spent by requests to each of
	// them, and idle leases are returned (lease_idle 2s) for others to
	// take; done when nothing was admitted for 4 s.
	last, quiet := res.served.Load(), time.Now()
	for time.Since(quiet) < 4*time.Second && ctx.Err() == nil {
		for _, r := range reps {
			if clusterGet(ctx, hc, r, key) == 200 {
				res.served.Add(1)
			}
		}
		if n := res.served.Load(); n != last {
			last, quiet = n, time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.elapsed = time.Since(start)
	return res
}

func clusterGet(ctx context.Context, hc *http.Client, in *instance, key string) int {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+in.proxy+"/x", nil)
	req.Header.Set("X-API-Key", key)
	resp, err := hc.Do(req)
	if err != nil {
		return -1
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// clusterAdmin sends one admin request and returns its status and body.
func clusterAdmin(ctx context.Context, hc *http.Client, in *instance, method, path, body string) (int, []byte) {
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+in.admin+path, bytes.NewBufferString(body))
	req.Header.Set("Authorization", "Bearer "+replicaToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return -1, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// revokeProbe creates a key of tenant "probe" on one replica, waits until
// every replica admits it, deletes it through another, and measures how
// long each replica goes on admitting it (200) after the DELETE was
// answered.
func revokeProbe(ctx context.Context, hc *http.Client, reps []*instance, p int, res *roundResult) {
	creator, deleter := reps[p%len(reps)], reps[(p+1)%len(reps)]
	code, body := clusterAdmin(ctx, hc, creator, "POST", "/v1/tenants/probe/keys", fmt.Sprintf(`{"name":"p%d-%d"}`, p, time.Now().UnixNano()))
	if code != 201 {
		res.createFailed.Add(1)
		res.mu.Lock()
		res.stuck = append(res.stuck, fmt.Sprintf("key creation through %s answered %d %s", creator.admin, code, body))
		res.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
		return
	}
	var k struct{ ID, Key string }
	if json.Unmarshal(body, &k) != nil {
		res.createFailed.Add(1)
		return
	}
	for _, r := range reps {
		if !waitFor(ctx, 10*time.Millisecond, func() bool { return clusterGet(ctx, hc, r, k.Key) == 200 }) {
			return
		}
	}
	t0 := time.Now()
	code, body = clusterAdmin(ctx, hc, deleter, "DELETE", "/v1/tenants/probe/keys/"+k.ID, "")
	answered := time.Now()
	res.mu.Lock()
	res.deletes = append(res.deletes, answered.Sub(t0))
	res.mu.Unlock()
	if code != 204 {
		res.deleteFailed.Add(1)
		res.mu.Lock()
		res.stuck = append(res.stuck, fmt.Sprintf("DELETE of key %s through %s at %s answered %d %s",
			k.ID, deleter.admin, answered.Format("15:04:05.000"), code, body))
		res.mu.Unlock()
		// Delete it anyway, so that it does not live on.
		waitFor(ctx, 100*time.Millisecond, func() bool {
			c, _ := clusterAdmin(ctx, hc, deleter, "DELETE", "/v1/tenants/probe/keys/"+k.ID, "")
			return c == 204 || c == 404
		})
		return
	}
	var wg sync.WaitGroup
	for _, r := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dl, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			// Revoked: no longer admitted. A replica that must ask the
			// store about a key it no longer holds (a miss) while the
			// keys stream elects a leader answers 503: refused too.
			if waitFor(dl, 10*time.Millisecond, func() bool { c := clusterGet(ctx, hc, r, k.Key); return c != 200 && c != -1 }) {
				el := time.Since(answered)
				res.mu.Lock()
				res.revoked = append(res.revoked, el)
				if el > time.Second {
					res.stuck = append(res.stuck, fmt.Sprintf("key %s (created through %s) deleted through %s at %s admitted by %s for %v",
						k.ID, creator.admin, deleter.admin, answered.Format("15:04:05.000"), r.proxy, el.Round(time.Millisecond)))
				}
				res.mu.Unlock()
			} else {
				res.mu.Lock()
				res.revoked = append(res.revoked, time.Hour) // never: fails the p99
				res.stuck = append(res.stuck, fmt.Sprintf("key %s deleted through %s at %s still admitted by %s 30 s later",
					k.ID, deleter.admin, answered.Format("15:04:05.000"), r.proxy))
				res.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond)
}

func clusterUsage(t *testing.T, in *instance, tenant string) int64 {
	t.Helper()
	var used int64 = -1
	checkFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		code, body := clusterAdmin(context.Background(), http.DefaultClient, in, "GET", "/v1/tenants/"+tenant+"/usage", "")
		if code != 200 {
			return fmt.Errorf("usage: %d %s", code, body)
		}
		var u struct{ Used int64 }
		if err := json.Unmarshal(body, &u); err != nil {
			return err
		}
		used = u.Used
		return nil
	})
	return used
}

// warnings are the lines of logs at level warn or above.
func warnings(logs string) string {
	var b strings.Builder
	for _, l := range strings.Split(logs, "\n") {
		if !strings.Contains(l, `"level":"info"`) && !strings.Contains(l, `"level":"debug"`) && l != "" {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// grepLines are the lines of logs containing any of subs.
func grepLines(logs string, subs ...string) string {
	var b strings.Builder
	for _, l := range strings.Split(logs, "\n") {
		for _, sub := range subs {
			if strings.Contains(l, sub) {
				b.WriteString(l + "\n")
				break
			}
		}
	}
	return b.String()
}
