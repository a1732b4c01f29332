package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// strandPlan is one plan of TestKill9StrandsAtMostOnePercent and the load
// sent to each replica for its tenant.
type strandPlan struct {
	name    string
	monthly int64
	every   time.Duration // between one worker's requests; 0: as fast as answered
	// Counted per tenant: 2xx answers, answers of any other status,
	// requests to the killed replica that failed (one per worker there:
	// in flight at the kill, or refused after it), and requests the
	// backend received (admitted and forwarded, answered or not).
	served, other, unanswered, received atomic.Int64
	key                                 string
}

// bound is what a crash may strand of the plan's month (issue 18).
func (p *strandPlan) bound() int64 { return max(p.monthly/100, 10) }

// countingBackend answers 200 to everything and counts the requests of
// each plan by the first segment of their path.
func countingBackend(t *testing.T, plans []*strandPlan) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range plans {
			if strings.HasPrefix(r.URL.Path, "/"+p.name+"/") {
				p.received.Add(1)
			}
		}
		_, _ = io.WriteString(w, "ok")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// TestKill9StrandsAtMostOnePercent: three replicas of the real binary on
// one NATS (embedded in the first), lease_ttl 3s, tenants on a 1,000, a
// 10,000 and a 1,000,000 plan under load at every replica. One replica
// (not the NATS server's) is killed with -9 mid-load; the others go on,
// then the load stops, one survivor stops gracefully (returning its
// leases), and the other sweeps the killed replica's lease records once
// they expire. The ledger then holds what was served plus what the crash
// stranded, which must be at most 1% of the plan, or 10 tokens (issue
// 18). A request the killed replica admitted and forwarded but never
// answered was admitted: the backend's count tells them apart from
// stranded tokens, so the bound is asserted on ledger − requests the
// backend received, and ledger − 2xx answers may exceed it by those
// requests (at most one per worker at the killed replica).
func TestKill9StrandsAtMostOnePercent(t *testing.T) {
	plans := []*strandPlan{
		// About 60 requests/s in all: ~300 of 1,000 in the 5 s of load.
		{name: "small", monthly: 1_000, every: 50 * time.Millisecond},
		// About 600 requests/s in all: ~3,000 of 10,000.
		{name: "medium", monthly: 10_000, every: 5 * time.Millisecond},
		{name: "large", monthly: 1_000_000},
	}
	up := countingBackend(t, plans)
	natsAddr := freeAddr(t)
	rest := fmt.Sprintf(`quota: {lease_ttl: 3s, lease_idle: 2s}
log: {access: false}
plans:
  small: {monthly_requests: 1000}
  medium: {monthly_requests: 10000}
  large: {monthly_requests: 1000000}
routes:
  - {path_prefix: /, upstream: http://%s, auth: [api_key]}
`, up)
	a := configured(t, sharedNATS(natsAddr, true), rest)
	a.start()
	b, c := configured(t, sharedNATS(natsAddr, false), rest), configured(t, sharedNATS(natsAddr, false), rest)
	b.spawn()
	c.spawn()
	b.waitReady()
	c.waitReady()
	for _, p := range plans {
		if _, err := a.cli(replicaToken, "tenants", "create", "t-"+p.name, "--plan", p.name); err != nil {
			t.Fatal(err)
		}
		out, err := a.cli(replicaToken, "keys", "create", "t-"+p.name, "--name", "k")
		if err != nil {
			t.Fatal(err)
		}
		var k struct{ Key string }
		if err := json.Unmarshal([]byte(out), &k); err != nil {
			t.Fatal(err)
		}
		p.key = k.Key
	}
	// Every replica must know the keys before the load starts (they sync
	// through NATS): one request of each plan through each, counted.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	send := func(ctx context.Context, in *instance, p *strandPlan) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+in.proxy+"/"+p.name+"/x", nil)
		req.Header.Set("X-API-Key", p.key)
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			p.served.Add(1)
		} else {
			p.other.Add(1)
		}
		return resp.StatusCode, nil
	}
	for _, in := range []*instance{a, b, c} {
		for _, p := range plans {
			checkFor(t, 15*time.Second, 100*time.Millisecond, func() error {
				code, err := send(context.Background(), in, p)
				if err != nil || code != 200 {
					return fmt.Errorf("%s at %s: %d %v", p.name, in.proxy, code, err)
				}
				return nil
			})
		}
	}
	p0 := make([]int64, len(plans))
	for i, p := range plans {
		p0[i] = p.other.Load()
	}

	// Load at all three; b is killed 2.5 s in, a and c go on to 5 s.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	byReplica := map[*instance]*atomic.Int64{a: {}, b: {}, c: {}}
	for _, in := range []*instance{a, b, c} {
		for _, p := range plans {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 50_000 && ctx.Err() == nil; i++ {
					before := p.served.Load()
					if _, err := send(ctx, in, p); err != nil {
						if in == b && ctx.Err() == nil {
							p.unanswered.Add(1) // killed (a request in flight, or the next one refused)
						}
						return
					}
					if p.served.Load() > before {
						byReplica[in].Add(1)
					}
					if p.every > 0 {
						select {
						case <-ctx.Done():
						case <-time.After(p.every):
						}
					}
				}
			}()
		}
	}
	time.Sleep(2500 * time.Millisecond)
	b.kill()
	killedAt := time.Now()
	wg.Wait()
	c.stop(syscall.SIGTERM) // c returns its leases

	// b's records expire 3 s after its last write; a sweeps every second.
	// Wait until then, and until every tenant's usage stays put.
	usage := func(p *strandPlan) int64 {
		code, body := clusterAdmin(context.Background(), http.DefaultClient, a, "GET", "/v1/tenants/t-"+p.name+"/usage", "")
		if code != 200 {
			t.Fatalf("usage of %s: %d %s", p.name, code, body)
		}
		var u struct{ Used int64 }
		if err := json.Unmarshal(body, &u); err != nil {
			t.Fatal(err)
		}
		return u.Used
	}
	time.Sleep(time.Until(killedAt.Add(5 * time.Second)))
	used := make([]int64, len(plans))
	checkFor(t, 15*time.Second, 500*time.Millisecond, func() error {
		changed := false
		for i, p := range plans {
			if u := usage(p); u != used[i] {
				used[i], changed = u, true
			}
		}
		if changed {
			return fmt.Errorf("usage %v still moving", used)
		}
		return nil
	})
	swept := grepLines(a.logs(), "returning tokens of an expired lease")
	t.Logf("served by replica: a %d, b %d (killed -9 at 2.5 s), c %d", byReplica[a].Load(), byReplica[b].Load(), byReplica[c].Load())
	for i, p := range plans {
		served, received := p.served.Load(), p.received.Load()
		stranded := used[i] - max(received, served)
		t.Logf("plan %d: %d served (2xx; %d other answers), %d received by the backend, %d failed at the killed replica; "+
			"ledger %d: %d unserved, %d stranded (bound %d)",
			p.monthly, served, p.other.Load()-p0[i], received, p.unanswered.Load(), used[i], used[i]-served, stranded, p.bound())
		if used[i] < served {
			t.Errorf("plan %d: ledger %d under the %d served: over-admission", p.monthly, used[i], served)
		}
		if stranded > p.bound() || used[i]-served > p.bound()+p.unanswered.Load() {
			t.Errorf("plan %d: kill -9 stranded %d tokens (%d unserved), want at most %d", p.monthly, stranded, used[i]-served, p.bound())
		}
		if p.other.Load() != p0[i] {
			t.Errorf("plan %d: %d answers other than 2xx under load", p.monthly, p.other.Load()-p0[i])
		}
	}
	if swept != "" {
		t.Logf("sweeps:\n%s", swept)
	}
}
