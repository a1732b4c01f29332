package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/allocs"
	"github.com/tollgate/tollgate/internal/app"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/echo"
	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/valyala/fasthttp"
)

const adminToken = "test-admin-token-0123456789"

type running struct {
	a      *app.App
	cancel context.CancelFunc
	done   chan error
	cfg    *config.Config
}

// startApp runs tollgate in process on random loopback ports with an
// embedded NATS under dir, in front of a fast backend.
func startApp(t testing.TB, dir string, mutate func(*config.Config)) *running {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/echo":
			echo.Handler(ctx)
			return
		case "/slow":
			// A slow upstream is what the tests of /slow are about.
			time.Sleep(50 * time.Millisecond)
		}
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"hello":"world"}`)
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	c := config.Default()
	c.Listen, c.Admin.Listen, c.DataDir, c.Admin.Token = "127.0.0.1:0", "127.0.0.1:0", dir, adminToken
	f := false
	c.NATS.SyncAlways = &f
	c.Log.Level = "warn"
	c.Plans = map[string]config.Plan{"pro": {MonthlyRequests: 1 << 40}, "tiny": {MonthlyRequests: 5}}
	c.Routes = []config.Route{{PathPrefix: "/", Upstream: "http://" + ln.Addr().String(), Auth: []string{"api_key"}}}
	if mutate != nil {
		mutate(c)
	}
	if err := config.Validate(c); err != nil {
		t.Fatal(err)
	}
	r := &running{done: make(chan error, 1), cfg: c}
	ready := make(chan *app.App, 1)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		r.done <- app.Run(ctx, c, app.Options{LogOut: io.Discard, Out: io.Discard, OnReady: func(a *app.App) { ready <- a }})
	}()
	select {
	case r.a = <-ready:
	case err := <-r.done:
		t.Fatalf("tollgate stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("tollgate did not become ready")
	}
	t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	r.cancel()
	<-r.done
	r.done <- nil // later stops return at once
}

func (r *running) admin(t testing.TB, method, path, body string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+r.a.AdminAddr+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode
}

func (r *running) newKey(t testing.TB, tenant, plan string) string {
	t.Helper()
	if code := r.admin(t, "POST", "/v1/tenants", fmt.Sprintf(`{"id":%q,"plan":%q}`, tenant, plan), nil); code != 201 && code != 409 {
		t.Fatalf("create tenant: %d", code)
	}
	var k struct{ Key string }
	if code := r.admin(t, "POST", "/v1/tenants/"+tenant+"/keys", `{"name":"k`+fmt.Sprint(time.Now().UnixNano())+`"}`, &k); code != 201 {
		t.Fatalf("create key: %d", code)
	}
	return k.Key
}

func TestQuotaThroughTheWholeApp(t *testing.T) {
	r := startApp(t, t.TempDir(), nil)
	key := r.newKey(t, "small", "tiny")
	c := &fasthttp.Client{}
	statuses := []int{}
	for i := 0; i < 7; i++ {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://" + r.a.ProxyAddr + "/x")
		req.Header.Set("X-API-Key", key)
		if err := c.Do(req, resp); err != nil {
			t.Fatal(err)
		}
		statuses = append(statuses, resp.StatusCode())
	}
	if got, want := fmt.Sprint(statuses), "[200 200 200 200 200 429 429]"; got != want {
		t.Errorf("statuses = %s, want %s", got, want)
	}
	var u struct{ Used, Remaining, Limit int64 }
	r.admin(t, "GET", "/v1/tenants/small/usage", "", &u)
	if u.Used != 5 || u.Remaining != 0 || u.Limit != 5 {
		t.Errorf("usage = %+v, want 5 used of 5", u)
	}
	// The tenant's first request reserved its lease on the request path;
	// the refusals waited for the ledger too (to learn nothing was left).
	resp, err := http.Get("http://" + r.a.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var waits int
	for _, line := range strings.Split(string(metrics), "\n") {
		if v, ok := strings.CutPrefix(line, "tollgate_quota_wait_seconds_count "); ok {
			waits, _ = strconv.Atoi(v)
		}
	}
	if waits < 1 || !strings.Contains(string(metrics), `tollgate_quota_wait_seconds_bucket{le="0.1"}`) {
		t.Errorf("tollgate_quota_wait_seconds: count %d, want at least 1 and buckets, in\n%s", waits, metrics)
	}
}

func TestReloadRefusesFixedChangesAndBadFiles(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/config.yaml"
	write := func(s string) {
		t.Helper()
		if err := writeFile(file, s); err != nil {
			t.Fatal(err)
		}
	}
	r := startApp(t, dir+"/data", func(c *config.Config) { c.File = file })
	base := fmt.Sprintf("listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0, token: %s}\ndata_dir: %s\nnats: {sync_always: false}\nlog: {level: warn}\nplans: {pro: {monthly_requests: 1099511627776}, tiny: {monthly_requests: 5}}\n",
		adminToken, dir+"/data")
	write(base + "routes: [{path_prefix: /, upstream: " + r.cfg.Routes[0].Upstream + ", auth: [api_key]}]\n")
	// The running config was built in code; after this first reload it is
	// the file's.
	if err := r.a.Reload(); err != nil {
		t.Fatalf("reload of an equivalent file: %v", err)
	}
	write(base + "routes: [{path_prefix: /, upstream: 'htp://nope', auth: [api_key]}]\n")
	err := r.a.Reload()
	var re *app.ReloadError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "routes[0].upstream") {
		t.Errorf("invalid reload: %v, want a refusal naming routes[0].upstream", err)
	}
	write(strings.Replace(base, "listen: 127.0.0.1:0\n", "listen: 127.0.0.1:1\n", 1) + "routes: [{path_prefix: /, upstream: " + r.cfg.Routes[0].Upstream + "}]\n")
	if err := r.a.Reload(); err == nil || !strings.Contains(err.Error(), "listen: cannot change while running") {
		t.Errorf("listen change: %v, want a refusal naming listen", err)
	}
	// A good change applies: the route no longer needs a key.
	write(base + "routes: [{path_prefix: /, upstream: " + r.cfg.Routes[0].Upstream + "}]\n")
	var out struct{ OK, Reloaded bool }
	if code := r.admin(t, "POST", "/v1/reload", "", &out); code != 200 || !out.Reloaded {
		t.Fatalf("POST /v1/reload: %d %+v", code, out)
	}
	resp, err := http.Get("http://" + r.a.ProxyAddr + "/open")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("after reload without auth: %d, want 200", resp.StatusCode)
	}
}

// BenchmarkHotPath measures the whole request path through the real
// pieces (fasthttp proxy, API key verification against the credential set,
// quota admission from a lease, limit and identity headers, access log)
// with a cached key and a tenant far from its limit. allocs/op counts the
// client and the backend too: all three are fasthttp, which allocates
// nothing per request once warm.
func BenchmarkHotPath(b *testing.B) {
	for _, access := range []bool{false, true} {
		b.Run(fmt.Sprintf("access_log=%v", access), func(b *testing.B) {
			r := startApp(b, b.TempDir(), func(c *config.Config) { c.Log.Access = &access })
			key := r.newKey(b, "acme", "pro")
			hc := &fasthttp.HostClient{Addr: r.a.ProxyAddr, MaxConns: 64}
			warm := func(n int) {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				req.SetRequestURI("http://" + r.a.ProxyAddr + "/bench")
				req.Header.Set("X-API-Key", key)
				for i := 0; i < n; i++ {
					if err := hc.Do(req, resp); err != nil || resp.StatusCode() != 200 {
						b.Fatalf("warm-up: %v %d %s", err, resp.StatusCode(), resp.Body())
					}
				}
			}
			warm(2000)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				req.SetRequestURI("http://" + r.a.ProxyAddr + "/bench")
				req.Header.Set("X-API-Key", key)
				for pb.Next() {
					if err := hc.Do(req, resp); err != nil || resp.StatusCode() != 200 {
						b.Errorf("request: %v %d", err, resp.StatusCode())
						return
					}
				}
			})
		})
	}
}

// TestReloadUnderLoad: reloads while requests are in flight drop none.
func TestReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/config.yaml"
	r := startApp(t, dir+"/data", func(c *config.Config) { c.File = file })
	key := r.newKey(t, "acme", "pro")
	conf := func(cost int, extra string) string {
		return fmt.Sprintf("listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0, token: %s}\ndata_dir: %s\nnats: {sync_always: false}\nlog: {level: warn}\n"+
			"plans: {pro: {monthly_requests: 1099511627776}, tiny: {monthly_requests: 5}}\n"+
			"routes:\n  - {path_prefix: /, upstream: %s, auth: [api_key], cost: %d}\n%s", adminToken, dir+"/data", r.cfg.Routes[0].Upstream, cost, extra)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	for c := 0; c < 8; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &fasthttp.Client{}
			for i := 0; i < 20000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				req.SetRequestURI("http://" + r.a.ProxyAddr + "/x")
				req.Header.Set("X-API-Key", key)
				if err := hc.DoTimeout(req, resp, 5*time.Second); err != nil || resp.StatusCode() != 200 {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
				fasthttp.ReleaseRequest(req)
				fasthttp.ReleaseResponse(resp)
			}
		}()
	}
	reloads, refused := 0, 0
	for i := 0; i < 20; i++ {
		text := conf(1+i%3, fmt.Sprintf("  - {path_prefix: /extra%d, upstream: %s}\n", i, r.cfg.Routes[0].Upstream))
		if i%5 == 4 {
			text = conf(1, "  - {path_prefix: /bad, upstream: 'nope://x'}\n")
		}
		if err := writeFile(file, text); err != nil {
			t.Fatal(err)
		}
		if err := r.a.Reload(); err != nil {
			refused++
		} else {
			reloads++
		}
		// Requests run under each config before the next reload.
		done := ok.Load() + failed.Load()
		storetest.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
			if n := ok.Load() + failed.Load() - done; n < 16 {
				return fmt.Errorf("%d requests since reload %d", n, i)
			}
			return nil
		})
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Errorf("%d requests failed, %d succeeded during %d reloads", failed.Load(), ok.Load(), reloads)
	}
	if reloads != 16 || refused != 4 {
		t.Errorf("%d reloads applied and %d refused, want 16 and 4", reloads, refused)
	}
	t.Logf("%d requests, none failed, across %d reloads (%d invalid ones refused)", ok.Load(), reloads, refused)
}

// TestHotPathAllocatesNothingInTollgate runs the real pieces (API key
// verification against the credential set, rate limit, quota from a
// lease, headers, access log) and checks that tollgate's own code makes no
// allocation per request once warm.
func TestHotPathAllocatesNothingInTollgate(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation sampling is slow")
	}
	r := startApp(t, t.TempDir(), func(c *config.Config) {
		c.Plans["rated"] = config.Plan{MonthlyRequests: 1 << 40, Rate: &config.Rate{Requests: 1 << 30, Per: config.Duration(time.Second)}}
	})
	key := r.newKey(t, "acme", "rated")
	hc := &fasthttp.HostClient{Addr: r.a.ProxyAddr}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI("http://" + r.a.ProxyAddr + "/x")
	req.Header.Set("X-API-Key", key)
	run := func(n int) {
		for i := 0; i < n; i++ {
			if err := hc.Do(req, resp); err != nil || resp.StatusCode() != 200 {
				t.Fatalf("%v %d %s", err, resp.StatusCode(), resp.Body())
			}
		}
	}
	run(3000)
	done := allocs.Sites()
	run(3000)
	// Background work (lease refills: one ledger operation per lease)
	// allocates off the request path; it is small and bounded per lease.
	sites := done()
	for site, n := range sites {
		if n > 100 {
			t.Errorf("%d allocations in 3000 requests at %s", n, site)
		}
	}
	t.Logf("tollgate allocation sites during 3000 requests (background lease work only): %v", sites)
}
