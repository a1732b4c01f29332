package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const replicaToken = "e2e-admin-token-0123456789abcdef"

// replica writes a config for one tollgate of a group sharing NATS: the
// first embeds the server and serves it on natsAddr, the others use it.
func replica(t *testing.T, upstream, natsAddr string, embedded bool) *instance {
	t.Helper()
	in := configured(t, sharedNATS(natsAddr, embedded), fmt.Sprintf(`quota: {max_lease: 200, lease_idle: 2s, lease_ttl: 3s}
log: {access: false}
plans:
  pro: {monthly_requests: 3000}
routes:
  - {path_prefix: /, upstream: http://%s, auth: [api_key]}
`, upstream))
	return in
}

// sharedNATS is the nats setting of a replica of a group sharing one
// server: the first embeds it and serves it on addr, the others use it.
func sharedNATS(addr string, embedded bool) string {
	if embedded {
		return fmt.Sprintf(`{url: "", listen: "%s"}`, addr)
	}
	return fmt.Sprintf(`{url: "nats://%s"}`, addr)
}

// configured returns an instance whose config file has the listeners,
// the admin token replicaToken, its own data dir, nats (a YAML value; ""
// for the default) and then rest.
func configured(t *testing.T, nats, rest string) *instance {
	t.Helper()
	in := &instance{t: t, dir: t.TempDir(), proxy: freeAddr(t), admin: freeAddr(t)}
	in.config = filepath.Join(in.dir, "config.yaml")
	cfg := fmt.Sprintf("listen: %s\nadmin: {listen: %s, token: %s}\ndata_dir: %s\n", in.proxy, in.admin, replicaToken, filepath.Join(in.dir, "data"))
	if nats != "" {
		cfg += "nats: " + nats + "\n"
	}
	if err := os.WriteFile(in.config, []byte(cfg+rest), 0o600); err != nil {
		t.Fatal(err)
	}
	return in
}

// load sends requests with key to the given replicas from clients
// goroutines until stop says so; it counts 200s.
func load(ctx context.Context, key string, clients int, targets []*instance, served *atomic.Int64, refused *atomic.Int64, stop func() bool) {
	var wg sync.WaitGroup
	hc := &http.Client{Timeout: 5 * time.Second}
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			target := targets[c%len(targets)]
			for i := 0; i < 5000 && ctx.Err() == nil && !stop(); i++ {
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+target.proxy+"/x", nil)
				req.Header.Set("X-API-Key", key)
				resp, err := hc.Do(req)
				if err != nil {
					return // the replica is gone
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case 200:
					served.Add(1)
				case 429:
					refused.Add(1)
				}
			}
		}()
	}
	wg.Wait()
}

// newTenantKey creates tenant on plan pro with one key, through the CLI,
// and returns the key.
func newTenantKey(t *testing.T, in *instance, token, tenant string) string {
	t.Helper()
	return tenantKeyOn(t, in, token, tenant, "pro")
}

// tenantKeyOn creates tenant on plan with one key, through the CLI, and
// returns the key.
func tenantKeyOn(t *testing.T, in *instance, token, tenant, plan string) string {
	t.Helper()
	if _, err := in.cli(token, "tenants", "create", tenant, "--plan", plan); err != nil {
		t.Fatal(err)
	}
	out, err := in.cli(token, "keys", "create", tenant, "--name", "k")
	if err != nil {
		t.Fatal(err)
	}
	var k struct{ Key string }
	if err := json.Unmarshal([]byte(out), &k); err != nil {
		t.Fatal(err)
	}
	return k.Key
}

// TestReplicasShareOneExactQuota runs three tollgate processes on one NATS
// (embedded in the first): a limit of 3,000 is never exceeded whichever
// replica serves, and is reached exactly once leases are returned. Then a
// replica is killed with -9 under load: no over-admission, and what it
// strands is at most its leases.
func TestReplicasShareOneExactQuota(t *testing.T) {
	up := backend(t)
	natsAddr := freeAddr(t)
	a := replica(t, up, natsAddr, true)
	a.start()
	b, c := replica(t, up, natsAddr, false), replica(t, up, natsAddr, false)
	b.start()
	c.start()
	key := newTenantKey(t, a, replicaToken, "acme")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	var served, refused atomic.Int64
	load(ctx, key, 48, []*instance{a, b, c}, &served, &refused, func() bool { return refused.Load() >= 600 })
	during := served.Load()
	if during > 3000 {
		t.Fatalf("%d served, over the limit of 3000", during)
	}
	// Return every lease (graceful stop), then drain what is left.
	b.stop(syscall.SIGTERM)
	c.stop(syscall.SIGTERM)
	refused.Store(0)
	load(ctx, key, 4, []*instance{a}, &served, &refused, func() bool { return refused.Load() >= 20 })
	if got := served.Load(); got != 3000 {
		t.Errorf("3 replicas: %d served under load, %d after settling; want exactly 3000", during, got)
	}
	t.Logf("3 replicas x 16 clients: %d served under load, %d after leases were returned", during, served.Load())

	// kill -9 of a replica holding leases, mid-load.
	b.start()
	key2 := newTenantKey(t, a, replicaToken, "beta")
	var served2, refused2 atomic.Int64
	var killed atomic.Bool
	go func() {
		waitFor(ctx, 5*time.Millisecond, func() bool { return served2.Load() >= 800 })
		b.kill()
		killed.Store(true)
	}()
	load(ctx, key2, 32, []*instance{a, b}, &served2, &refused2, func() bool { return killed.Load() && refused2.Load() >= 200 })
	got := served2.Load()
	if got > 3000 {
		t.Errorf("after kill -9: %d served, over the limit", got)
	}
	usage := func() int64 {
		out, err := a.cli(replicaToken, "usage", "beta")
		if err != nil {
			t.Fatal(err)
		}
		var u struct{ Used int64 }
		json.Unmarshal([]byte(out), &u)
		return u.Used
	}
	strandedAtKill := usage() - got
	// Once the killed replica's lease record expires (lease_ttl 3s), a
	// survivor returns what it had reserved beyond its recorded spending
	// bound. With max_lease 200 the bound runs at most a lease ahead (what
	// the tenant spends in the failover horizon, 12 s, up to a lease: this
	// load spends more).
	const step, lease = 200, 200
	// Wait until little is stranded, or a survivor has logged the return
	// and it has reached the ledger: the usage, read after the log line,
	// no longer falls (nothing else changes it while no load runs).
	last := int64(-1)
	checkFor(t, 20*time.Second, 250*time.Millisecond, func() error {
		used := usage()
		switch {
		case used-got <= step+16:
			return nil
		case !strings.Contains(a.logs(), "returning tokens of an expired lease"):
			last = -1
			return fmt.Errorf("%d unserved and no sweep yet", used-got)
		case used != last:
			last = used
			return fmt.Errorf("swept; usage %d, settling", used)
		}
		return nil
	})
	refused2.Store(0)
	load(ctx, key2, 4, []*instance{a}, &served2, &refused2, func() bool { return refused2.Load() >= 20 })
	got = served2.Load()
	u := struct{ Used int64 }{usage()}
	swept := strings.Contains(a.logs(), "returning tokens of an expired lease")
	t.Logf("kill -9 mid-load: %d unserved at the kill, %d after the lease expired (swept: %v); %d served of 3000 in all, ledger %d",
		strandedAtKill, u.Used-got, swept, got, u.Used)
	// Unserved: at most the bound's step above what was spent, plus a
	// whole lease if the replica died between reserving its next lease in
	// the ledger and recording it (the record is written after the
	// reservation, so a sweeper cannot know of it), plus the requests it
	// had admitted but not answered (its 16 clients). The lease in that
	// window is what a failure under machine load showed (max_lease 50
	// then): 57 unserved after a sweep that returned 6.
	if got > 3000 || got < 3000-step-lease-16 {
		t.Errorf("after kill -9 and the sweep: %d served of 3000, want %d..3000", got, 3000-step-lease-16)
	}
	if u.Used < got || u.Used > 3000 {
		t.Errorf("ledger %d used for %d served", u.Used, got)
	}
}
