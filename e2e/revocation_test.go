package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The revocation tests run three replicas of the real binary on one
// external nats-server and measure how long a deleted API key goes on
// being admitted by the replicas that did not delete it: from the
// DELETE's answer (through replica A) to the first 401 from B and from C,
// each polled every 5 ms. The bounds: 1 s at p99 in steady state,
// 5 s at p99 when the keys are deleted right after the NATS server
// restarted (SIGTERM, or kill -9), without consumers piling up on the keys
// stream. Each test logs one line "revocation <case>: n=… p50=… p99=…
// max=…" with its figures.

const (
	revocationTenant = "rev"
	revocationPoll   = 5 * time.Millisecond
)

// singleNATS starts one nats-server process with JetStream and no
// cluster, on a port that stays the same across its restarts.
func singleNATS(t *testing.T) *natsCluster {
	t.Helper()
	dir := t.TempDir()
	nd := &natsNode{t: t, name: "n0", port: freePort(t), conf: filepath.Join(dir, "nats.conf")}
	conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
jetstream { store_dir: %q, max_memory_store: 64MB, max_file_store: 1GB }
`, nd.name, nd.port, filepath.Join(dir, "js"))
	if err := os.WriteFile(nd.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	nd.start(natsServerBinary(t))
	c := &natsCluster{t: t, nodes: []*natsNode{nd}}
	t.Cleanup(func() { nd.stop(syscall.SIGKILL) })
	c.waitCurrent(30 * time.Second)
	return c
}

// revocationReplica configures a replica on natsURL with a plan that the
// probes cannot exhaust, and no limit on failed authentications per
// address: every probe comes from 127.0.0.1 and each revocation it sees
// is a failure; throttled, the probes would see 429s, not the 401 they
// wait for.
func revocationReplica(t *testing.T, upstream, natsURL string) *instance {
	t.Helper()
	in := configured(t, fmt.Sprintf(`{url: "%s"}`, natsURL), fmt.Sprintf(`log: {access: false}
auth: {failures: {per_address: 0}}
plans:
  big: {monthly_requests: 100000000}
routes:
  - {path_prefix: /, upstream: http://%s, auth: [api_key]}
`, upstream))
	return in
}

// revocationSetup starts the nats-server and three replicas, and creates
// the tenant whose keys the tests revoke.
func revocationSetup(t *testing.T) (*natsCluster, []*instance, *http.Client) {
	t.Helper()
	up := backend(t)
	nc := singleNATS(t)
	reps := make([]*instance, 3)
	for i := range reps {
		reps[i] = revocationReplica(t, up, nc.URL())
		reps[i].spawn()
	}
	for _, r := range reps {
		r.waitReady()
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(hc.CloseIdleConnections)
	code, body := clusterAdmin(context.Background(), hc, reps[0], "POST", "/v1/tenants",
		fmt.Sprintf(`{"id":%q,"plan":"big"}`, revocationTenant))
	if code != 201 {
		t.Fatalf("create tenant: %d %s", code, body)
	}
	return nc, reps, hc
}

type createdKey struct{ ID, Key string }

// revokedKey is a key, the idx-th of its round, whose DELETE was answered
// at answered.
type revokedKey struct {
	createdKey
	idx      int
	answered time.Time
}

// createKeys creates n keys through in, and waits until every replica
// admits each of them.
func createKeys(t *testing.T, hc *http.Client, in *instance, reps []*instance, prefix string, n int) []createdKey {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	keys := make([]createdKey, n)
	for i := range keys {
		code, body := clusterAdmin(ctx, hc, in, "POST", "/v1/tenants/"+revocationTenant+"/keys", fmt.Sprintf(`{"name":"%s-%d"}`, prefix, i))
		if code != 201 {
			t.Fatalf("create key %s-%d: %d %s", prefix, i, code, body)
		}
		if err := json.Unmarshal(body, &keys[i]); err != nil || keys[i].Key == "" || keys[i].ID == "" {
			t.Fatalf("create key %s-%d: %v %s", prefix, i, err, body)
		}
	}
	for _, r := range reps {
		for _, k := range keys {
			if !waitFor(ctx, revocationPoll, func() bool { return clusterGet(ctx, hc, r, k.Key) == 200 }) {
				t.Fatalf("replica %s does not admit key %s", r.proxy, k.ID)
			}
		}
	}
	return keys
}

// awaitRefusal polls in with key every revocationPoll until it answers
// 401, for at most limit, and returns how long after since that was (or
// limit and false). Other answers than 200 and 401 (503 while a replica
// cannot reach NATS) are counted in others.
func awaitRefusal(ctx context.Context, hc *http.Client, in *instance, key string, since time.Time, limit time.Duration, others *int) (time.Duration, bool) {
	tick := time.NewTicker(revocationPoll)
	defer tick.Stop()
	deadline := since.Add(limit)
	for {
		switch clusterGet(ctx, hc, in, key) {
		case 401:
			return time.Since(since), true
		case 200:
		default:
			*others++
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return limit, false
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

func revocationSummary(d []time.Duration) string {
	return fmt.Sprintf("n=%d p50=%v p99=%v max=%v", len(d), percentile(d, 50), percentile(d, 99), percentile(d, 100))
}

// goroutines reads go_goroutines from in's /metrics.
var goroutinesRE = regexp.MustCompile(`(?m)^go_goroutines (\d+)`)

func goroutines(t *testing.T, hc *http.Client, in *instance) int {
	t.Helper()
	code, body := clusterAdmin(context.Background(), hc, in, "GET", "/metrics", "")
	m := goroutinesRE.FindSubmatch(body)
	if code != 200 || m == nil {
		t.Fatalf("metrics of %s: %d", in.admin, code)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestRevocationSteady: 200 keys, created through A and admitted by every
// replica first, then deleted one at a time through A, B and C polled
// with each after its DELETE's answer: p99 of the time to their first 401
// ≤ 1 s.
func TestRevocationSteady(t *testing.T) {
	const (
		n      = 200
		target = time.Second
	)
	_, reps, hc := revocationSetup(t)
	a, others := reps[0], reps[1:]
	start := time.Now()
	keys := createKeys(t, hc, a, reps, "steady", n)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		lat     []time.Duration
		not401  int
		missing []string
	)
	for _, k := range keys {
		code, body := clusterAdmin(ctx, hc, a, "DELETE", "/v1/tenants/"+revocationTenant+"/keys/"+k.ID, "")
		answered := time.Now()
		if code != 204 {
			t.Fatalf("DELETE %s: %d %s", k.ID, code, body)
		}
		var wg sync.WaitGroup
		got := make([]time.Duration, len(others))
		seen := make([]bool, len(others))
		counts := make([]int, len(others))
		for i, r := range others {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[i], seen[i] = awaitRefusal(ctx, hc, r, k.Key, answered, 10*time.Second, &counts[i])
			}()
		}
		wg.Wait()
		for i := range others {
			lat = append(lat, got[i])
			not401 += counts[i]
			if !seen[i] {
				missing = append(missing, fmt.Sprintf("%s on %s", k.ID, others[i].proxy))
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("ran out of time after %d revocations", len(lat)/len(others))
		}
	}
	t.Logf("revocation steady: %s (%d revocations × %d replicas in %v, %d answers neither 200 nor 401)",
		revocationSummary(lat), n, len(others), time.Since(start).Round(time.Millisecond), not401)
	if len(missing) > 0 {
		t.Errorf("deleted keys still admitted after 10 s: %v", missing)
	}
	if p := percentile(lat, 99); p > target {
		t.Errorf("revocation p99 %v in steady state, want ≤ %v", p, target)
	}
}

// TestRevocationAcrossNATSRestart: the nats-server is restarted (SIGTERM
// and kill -9 in turn), and as soon as it listens again 50 keys are
// deleted through A at once, each DELETE repeated until it is answered
// 204; B and C must refuse each within 5 s (p99) of that answer. The
// replicas' watchers of the keys bucket lost their consumers with the
// server: they must notice at once, and leave no consumers behind.
func TestRevocationAcrossNATSRestart(t *testing.T) {
	const (
		restarts = 4
		perRound = 50
		stream   = "KV_tollgate_keys"
		// A replica watches the keys bucket once; a watcher recreated on
		// a reconnect deletes the consumer it leaves, if the server kept
		// it. The margin is for one that lingers until the server drops
		// it as inactive.
		watchersPerReplica = 1
		margin             = 2
	)
	// The bound, 5 s; with TOLLGATE_STRICT_TIMING=1 (a quiet
	// machine) 1 s, which watchers that notice a restart only by their
	// periodic check fail (p99 1.35 s here; 5.6 s in the issue), and
	// watchers that start over at the reconnect meet (0.2 s).
	target := 5 * time.Second
	if os.Getenv("TOLLGATE_STRICT_TIMING") == "1" {
		target = time.Second
	}
	nc, reps, hc := revocationSetup(t)
	nd := nc.nodes[0]
	a, others := reps[0], reps[1:]
	_, per := nc.consumers()
	baseline := per[stream]
	g0 := make([]int, len(reps))
	for i, r := range reps {
		g0[i] = goroutines(t, hc, r)
	}
	t.Logf("consumers on %s after start: %d; goroutines %v", stream, baseline, g0)
	bound := len(reps)*watchersPerReplica + margin

	start := time.Now()
	var (
		all    []time.Duration
		lines  []string
		not401 int
		stuck  []string
		// gLow: each replica's fewest goroutines after a restart, with
		// the HTTP servers' workers of the probes.
		gLow []int
	)
	for round := range restarts {
		// SIGTERM and kill -9 in turn; the server back at once, then
		// after an outage of 3 s (the replicas' periodic checks of their
		// watchers fail meanwhile).
		sig := syscall.SIGTERM
		if round%2 == 1 {
			sig = syscall.SIGKILL
		}
		down := time.Duration(0)
		if round/2%2 == 1 {
			down = 3 * time.Second
		}
		keys := createKeys(t, hc, a, reps, fmt.Sprintf("restart%d", round), perRound)
		nc.waitCurrent(30 * time.Second)

		stopped := time.Now()
		nd.stop(sig)
		time.Sleep(down) // the outage: the fault, not a synchronization
		nd.start(natsServerBinary(t))
		up := time.Now()

		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		var (
			mu       sync.Mutex
			answered []revokedKey    // DELETEs answered 204, in that order
			deletes  []time.Duration // from the server listening to a DELETE's 204
			attempts int
			lat      []time.Duration
			deleters sync.WaitGroup
		)
		// A burst: every key's DELETE at once, each repeated until it is
		// answered 204.
		for i, k := range keys {
			deleters.Add(1)
			go func() {
				defer deleters.Done()
				for n := 1; ; n++ {
					code, _ := clusterAdmin(ctx, hc, a, "DELETE", "/v1/tenants/"+revocationTenant+"/keys/"+k.ID, "")
					// 404 after an attempt that got no 204: that attempt
					// deleted it, at an unknown time; this answer is
					// later, so the revocation measured from it is, if
					// anything, shorter than it was (counted in lines).
					if code == 204 || (code == 404 && n > 1) {
						now := time.Now()
						mu.Lock()
						answered = append(answered, revokedKey{k, i, now})
						deletes = append(deletes, now.Sub(up))
						attempts += n
						mu.Unlock()
						return
					}
					if ctx.Err() != nil {
						mu.Lock()
						stuck = append(stuck, fmt.Sprintf("round %d: DELETE %s never answered 204 (last %d)", round, k.ID, code))
						mu.Unlock()
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
		}
		deleted := make(chan struct{})
		go func() { deleters.Wait(); close(deleted) }()
		// B and C each polled by pollers goroutines, each with its share
		// of the keys whose DELETE was answered and that the replica
		// still admits, one request at a time, starting a pass every 5 ms
		// at most: 50 keys polled at once each every 5 ms on both would
		// swamp two cores. A refusal is seen at most one pass late; the
		// longest pass is logged.
		const pollers = 4
		var (
			polling  sync.WaitGroup
			longPass time.Duration
		)
		for _, r := range others {
			for p := range pollers {
				polling.Add(1)
				go func() {
					defer polling.Done()
					done := map[string]bool{}
					tick := time.NewTicker(revocationPoll)
					defer tick.Stop()
					for {
						mu.Lock()
						var list []revokedKey
						for _, rk := range answered {
							if rk.idx%pollers == p {
								list = append(list, rk)
							}
						}
						mu.Unlock()
						finished := false
						select {
						case <-deleted:
							finished = len(done) == len(list)
						default:
						}
						if finished || ctx.Err() != nil {
							return
						}
						pass := time.Now()
						for _, rk := range list {
							if done[rk.ID] {
								continue
							}
							code := clusterGet(ctx, hc, r, rk.Key)
							el := time.Since(rk.answered)
							switch {
							case code == 401:
							case el > 20*time.Second:
								mu.Lock()
								stuck = append(stuck, fmt.Sprintf("round %d: key %s deleted at %s still admitted by %s after 20 s",
									round, rk.ID, rk.answered.Format("15:04:05.000"), r.proxy))
								mu.Unlock()
							default:
								if code != 200 {
									mu.Lock()
									not401++
									mu.Unlock()
								}
								continue
							}
							done[rk.ID] = true
							mu.Lock()
							lat = append(lat, el)
							mu.Unlock()
						}
						mu.Lock()
						longPass = max(longPass, time.Since(pass))
						mu.Unlock()
						select {
						case <-ctx.Done():
						case <-tick.C:
						}
					}
				}()
			}
		}
		polling.Wait()
		<-deleted
		cancel()
		all = append(all, lat...)
		lines = append(lines, fmt.Sprintf("round %d (%v, down %v): server down and up in %v; DELETEs answered %v..%v after it (%d attempts for %d keys); revocation %s (longest poll pass %v)",
			round, sig, down, up.Sub(stopped).Round(time.Millisecond), percentile(deletes, 0), percentile(deletes, 100),
			attempts, len(keys), revocationSummary(lat), longPass.Round(time.Millisecond)))

		// Consumers do not pile up on the keys stream.
		checkFor(t, 30*time.Second, 250*time.Millisecond, func() error {
			_, per := nc.consumers()
			if n := per[stream]; n > bound {
				return fmt.Errorf("round %d: %d consumers on %s (bound %d, %d after start)", round, n, stream, bound, baseline)
			}
			return nil
		})
		_, per := nc.consumers()
		hc.CloseIdleConnections()
		g := make([]int, len(reps))
		for i, r := range reps {
			g[i] = goroutines(t, hc, r)
		}
		if gLow == nil {
			gLow = slices.Clone(g)
		}
		for i := range g {
			gLow[i] = min(gLow[i], g[i])
		}
		lines[len(lines)-1] += fmt.Sprintf("; %d consumers on %s; goroutines %v", per[stream], stream, g)
	}
	for _, l := range lines {
		t.Log(l)
	}
	t.Logf("revocation after restart: %s (%d restarts × %d keys × %d replicas in %v, %d answers neither 200 nor 401)",
		revocationSummary(all), restarts, perRound, len(others), time.Since(start).Round(time.Millisecond), not401)
	if len(stuck) > 0 {
		t.Errorf("%d stuck: %v", len(stuck), stuck)
		for i, r := range reps {
			t.Logf("replica %d (%s) watch and store lines:\n%s", i, r.proxy, grepLines(r.logs(), `"logger":"watch"`, `"logger":"store"`))
		}
	}
	if p := percentile(all, 99); p > target {
		t.Errorf("revocation p99 %v after a NATS restart, want ≤ %v", p, target)
		for i, r := range reps {
			t.Logf("replica %d (%s) watch and store lines:\n%s", i, r.proxy, grepLines(r.logs(), `"logger":"watch"`, `"logger":"store"`))
		}
	}

	// Goroutines: what the restarts left in each replica, no more than
	// after the restart that left the fewest, once the probes'
	// connections are closed and the HTTP servers' idle workers are gone
	// (fasthttp keeps them up to 10 s); the goroutines of a watcher or
	// subscription left behind at each restart would add up. (The store's
	// TestWatchRevocationAcrossRestarts counts them exactly.)
	hc.CloseIdleConnections()
	checkFor(t, 30*time.Second, 500*time.Millisecond, func() error {
		for i, r := range reps {
			if g := goroutines(t, hc, r); g > gLow[i]+3 {
				return fmt.Errorf("replica %d: %d goroutines, as few as %d after a restart and %d after start", i, g, gLow[i], g0[i])
			}
		}
		return nil
	})
	g1 := make([]int, len(reps))
	for i, r := range reps {
		g1[i] = goroutines(t, hc, r)
	}
	t.Logf("goroutines after start %v, fewest after a restart %v, at the end %v", g0, gLow, g1)
}
