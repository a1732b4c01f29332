package app_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/valyala/fasthttp"
)

// scrape reads /metrics from the admin listener with the Prometheus text
// parser.
func scrape(t testing.TB, r *running) metricsPage {
	t.Helper()
	resp, err := http.Get("http://" + r.a.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

type metricsPage map[string]*dto.MetricFamily

// get sums the series of name whose labels include labels (name=value
// pairs); a histogram counts its observations. ok is false when there is
// no such series.
func (p metricsPage) get(name string, labels ...string) (sum float64, ok bool) {
	f := p[name]
	if f == nil {
		return 0, false
	}
series:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue series
			}
		}
		ok = true
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum, ok
}

// moved checks that each series moved by exactly its delta from before
// to after.
type delta struct {
	name   string
	labels []string
	by     float64
}

func checkMoved(t *testing.T, what string, before, after metricsPage, want ...delta) {
	t.Helper()
	for _, d := range want {
		b, _ := before.get(d.name, d.labels...)
		a, ok := after.get(d.name, d.labels...)
		if !ok {
			t.Errorf("%s: no series %s%v", what, d.name, d.labels)
			continue
		}
		if a-b != d.by {
			t.Errorf("%s: %s%v moved by %v, want %v", what, d.name, d.labels, a-b, d.by)
		}
	}
}

func do(t testing.TB, r *running, method, path string, hdr ...string) *fasthttp.Response {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.Header.SetMethod(method)
	req.SetRequestURI("http://" + r.a.ProxyAddr + path)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return resp
}

// metricsApp runs tollgate with two routes to a named upstream ("api",
// with credentials, and "/open", unnamed, without), plans with small
// limits, and short idle leases.
func metricsApp(t *testing.T, tenantLabels bool) *running {
	return startApp(t, t.TempDir(), func(c *config.Config) {
		backend := c.Routes[0].Upstream
		c.Upstreams = map[string]config.Upstream{"backend": {URL: backend}}
		c.Routes = []config.Route{
			{Name: "api", PathPrefix: "/api", StripPrefix: true, Upstream: "backend", Auth: []string{"api_key", "basic", "bearer"}},
			{PathPrefix: "/open", StripPrefix: true, Upstream: "backend"},
		}
		c.Auth.Basic.Argon2 = config.Argon2{Time: 1, Memory: 8 << 20, Threads: 1}
		c.Plans["rated"] = config.Plan{MonthlyRequests: 1000, Rate: &config.Rate{Requests: 1, Per: config.Duration(time.Hour), Burst: 2}}
		c.Plans["one_at_a_time"] = config.Plan{MonthlyRequests: 1 << 40, Concurrency: 1}
		c.Quota.LeaseIdle = config.Duration(200 * time.Millisecond)
		c.Metrics.TenantLabels = tenantLabels
	})
}

// TestMetricsMove scrapes /metrics, parses it with the Prometheus text
// parser and checks that each series moves as requests come: requests
// by route, method and class; quota decisions of each kind; failed
// authentications by kind and reason; lease work; the upstream's latency;
// the credentials held; NATS and its watchers; tenant labels.
func TestMetricsMove(t *testing.T) {
	r := metricsApp(t, true)
	key := r.newKey(t, "acme", "pro")
	page := scrape(t, r)
	if v, ok := page.get("tollgate_nats_connected"); !ok || v != 1 {
		t.Errorf("tollgate_nats_connected = %v (present %v), want 1", v, ok)
	}
	if v, ok := page.get("tollgate_nats_reconnects_total"); !ok || v != 0 {
		t.Errorf("tollgate_nats_reconnects_total = %v (present %v), want 0", v, ok)
	}
	for _, b := range []string{"tollgate_keys", "tollgate_tenants", "tollgate_tokens", "tollgate_limit_requests"} {
		if v, ok := page.get("tollgate_watch_pending", "bucket", b); !ok || v != 0 {
			t.Errorf("tollgate_watch_pending{bucket=%q} = %v (present %v), want 0", b, v, ok)
		}
		if v, ok := page.get("tollgate_watch_staleness_seconds", "bucket", b); !ok || v > 5 {
			t.Errorf("tollgate_watch_staleness_seconds{bucket=%q} = %v (present %v), want a few seconds at most", b, v, ok)
		}
	}

	t.Run("requests", func(t *testing.T) {
		before := scrape(t, r)
		for i := 0; i < 3; i++ {
			if resp := do(t, r, "GET", "/api/x", "X-API-Key", key); resp.StatusCode() != 200 {
				t.Fatalf("GET: %d %s", resp.StatusCode(), resp.Body())
			}
		}
		for _, m := range []string{"POST", "BREW"} {
			if resp := do(t, r, m, "/api/x", "X-API-Key", key); resp.StatusCode() != 200 {
				t.Fatalf("%s: %d %s", m, resp.StatusCode(), resp.Body())
			}
		}
		if resp := do(t, r, "GET", "/open/x"); resp.StatusCode() != 200 {
			t.Fatalf("open route: %d", resp.StatusCode())
		}
		if resp := do(t, r, "GET", "/nowhere", "X-API-Key", key); resp.StatusCode() != 404 {
			t.Fatalf("no route: %d", resp.StatusCode())
		}
		after := scrape(t, r)
		checkMoved(t, "requests", before, after,
			delta{"tollgate_route_requests_total", []string{"route", "api", "method", "GET", "class", "2xx"}, 3},
			delta{"tollgate_route_requests_total", []string{"route", "api", "method", "POST", "class", "2xx"}, 1},
			delta{"tollgate_route_requests_total", []string{"route", "api", "method", "other", "class", "2xx"}, 1},
			delta{"tollgate_route_requests_total", []string{"route", "/open", "method", "GET", "class", "2xx"}, 1},
			delta{"tollgate_route_requests_total", []string{"route", "none", "method", "GET", "class", "4xx"}, 1},
			delta{"tollgate_requests_total", []string{"class", "2xx"}, 6},
			delta{"tollgate_quota_decisions_total", []string{"decision", "admitted"}, 5},
			delta{"tollgate_upstream_duration_seconds", []string{"upstream", "backend"}, 6},
			delta{"tollgate_tenant_requests_total", []string{"tenant", "acme", "class", "2xx"}, 5},
		)
	})

	t.Run("quota decisions", func(t *testing.T) {
		small, rated, single := r.newKey(t, "small", "tiny"), r.newKey(t, "rated", "rated"), r.newKey(t, "single", "one_at_a_time")
		before := scrape(t, r)
		for i := 0; i < 7; i++ {
			do(t, r, "GET", "/api/x", "X-API-Key", small)
		}
		for i := 0; i < 3; i++ {
			do(t, r, "GET", "/api/x", "X-API-Key", rated)
		}
		after := scrape(t, r)
		checkMoved(t, "quota and rate", before, after,
			delta{"tollgate_quota_decisions_total", []string{"decision", "admitted"}, 5 + 2},
			delta{"tollgate_quota_decisions_total", []string{"decision", "quota"}, 2},
			delta{"tollgate_quota_decisions_total", []string{"decision", "rate"}, 1},
			delta{"tollgate_route_requests_total", []string{"route", "api", "class", "4xx"}, 3},
			delta{"tollgate_tenant_requests_total", []string{"tenant", "small", "class", "4xx"}, 2},
		)
		// Requests in flight at once: one is served (50 ms upstream), the
		// others refused by the cap of one.
		refused := 0
		for round := 0; refused == 0 && round < 20; round++ {
			var wg sync.WaitGroup
			var mu sync.Mutex
			for i := 0; i < 4; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if do(t, r, "GET", "/api/slow", "X-API-Key", single).StatusCode() == 429 {
						mu.Lock()
						refused++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
		}
		if refused == 0 {
			t.Fatal("no request refused by the concurrency cap")
		}
		v, _ := scrape(t, r).get("tollgate_quota_decisions_total", "decision", "concurrency")
		if v != float64(refused) {
			t.Errorf(`tollgate_quota_decisions_total{decision="concurrency"} = %v, want the %d refused`, v, refused)
		}
	})

	t.Run("authentication failures and tokens", func(t *testing.T) {
		var client struct {
			ID     string `json:"id"`
			Secret string `json:"client_secret"`
		}
		if code := r.admin(t, "POST", "/v1/tenants/acme/clients", `{"name":"erp","scopes":["READ"],"grants":["client_credentials"]}`, &client); code != 201 {
			t.Fatalf("create client: %d", code)
		}
		basic := func(user, pass string) string {
			return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(user)+":"+url.QueryEscape(pass)))
		}
		form := "application/x-www-form-urlencoded"
		before := scrape(t, r)
		resp := do(t, r, "POST", "/oauth/token?grant_type=client_credentials", "Authorization", basic(client.ID, client.Secret), "Content-Type", form)
		if resp.StatusCode() != 200 {
			t.Fatalf("token: %d %s", resp.StatusCode(), resp.Body())
		}
		if resp := do(t, r, "POST", "/oauth/token?grant_type=client_credentials", "Authorization", basic(client.ID, "wrong"), "Content-Type", form); resp.StatusCode() != 401 {
			t.Fatalf("token with a wrong secret: %d %s", resp.StatusCode(), resp.Body())
		}
		for _, tc := range []struct {
			hdr  []string
			want int
		}{
			{nil, 401},
			{[]string{"X-API-Key", "tg_nonsense"}, 401},
			{[]string{"Authorization", "Bearer nonsense"}, 401},
			{[]string{"Authorization", basic("nobody", "secret")}, 401},
		} {
			if resp := do(t, r, "GET", "/api/x", tc.hdr...); resp.StatusCode() != tc.want {
				t.Fatalf("%v: %d %s, want %d", tc.hdr, resp.StatusCode(), resp.Body(), tc.want)
			}
		}
		after := scrape(t, r)
		checkMoved(t, "authentication failures", before, after,
			delta{"tollgate_auth_failures_total", []string{"kind", "none", "reason", "missing"}, 1},
			delta{"tollgate_auth_failures_total", []string{"kind", "api_key", "reason", "malformed"}, 1},
			delta{"tollgate_auth_failures_total", []string{"kind", "bearer"}, 1},
			delta{"tollgate_auth_failures_total", []string{"kind", "basic", "reason", "invalid"}, 1},
			delta{"tollgate_auth_failures_total", []string{"kind", "client", "reason", "invalid"}, 1},
			delta{"tollgate_route_requests_total", []string{"route", "oauth", "method", "POST", "class", "2xx"}, 1},
			delta{"tollgate_route_requests_total", []string{"route", "oauth", "method", "POST", "class", "4xx"}, 1},
		)
		// The token issued is held in memory once the watcher brings it.
		storetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			if v, _ := scrape(t, r).get("tollgate_credentials", "kind", "token"); v != 1 {
				return fmt.Errorf(`tollgate_credentials{kind="token"} = %v, want 1`, v)
			}
			return nil
		})
		if v, _ := after.get("tollgate_credentials", "kind", "api_key"); v != 4 {
			t.Errorf(`tollgate_credentials{kind="api_key"} = %v, want the 4 keys made`, v)
		}
	})

	t.Run("leases", func(t *testing.T) {
		page := scrape(t, r)
		if v, _ := page.get("tollgate_lease_reservations_total"); v < 4 {
			t.Errorf("tollgate_lease_reservations_total = %v, want one at least per tenant that made requests (4)", v)
		}
		if v, _ := page.get("tollgate_lease_reserved_tokens_total"); v < 10 {
			t.Errorf("tollgate_lease_reserved_tokens_total = %v, want at least acme's first lease (10)", v)
		}
		// Idle leases go back after quota.lease_idle (200 ms here).
		storetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			page := scrape(t, r)
			n, _ := page.get("tollgate_lease_returns_total", "reason", "unused")
			tokens, _ := page.get("tollgate_lease_returned_tokens_total", "reason", "unused")
			if n == 0 || tokens == 0 {
				return fmt.Errorf("idle leases: %v returns of %v tokens, want some", n, tokens)
			}
			return nil
		})
		for _, name := range []string{"tollgate_lease_refunds_total", "tollgate_lease_sweeps_total", "tollgate_lease_records_lost_total",
			"tollgate_lease_reservation_failures_total"} {
			if _, ok := page.get(name); !ok {
				t.Errorf("no series %s", name)
			}
		}
	})
}

// TestMetricsNoTenantLabels: without metrics.tenant_labels, no series
// names a tenant.
func TestMetricsNoTenantLabels(t *testing.T) {
	r := metricsApp(t, false)
	key := r.newKey(t, "acme", "pro")
	if resp := do(t, r, "GET", "/api/x", "X-API-Key", key); resp.StatusCode() != 200 {
		t.Fatalf("GET: %d", resp.StatusCode())
	}
	page := scrape(t, r)
	if v, _ := page.get("tollgate_route_requests_total", "route", "api", "method", "GET", "class", "2xx"); v != 1 {
		t.Errorf("route counter %v, want 1", v)
	}
	if f, ok := page["tollgate_tenant_requests_total"]; ok && len(f.GetMetric()) > 0 {
		t.Errorf("tenant series without tenant_labels: %v", f)
	}
	for name, f := range page {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "tenant" || strings.Contains(l.GetValue(), "acme") {
					t.Errorf("%s has a tenant label: %v", name, m.GetLabel())
				}
			}
		}
	}
}

// TestMetricsFollowReload: a reload that renames a route moves its
// requests to the new name and drops the old one's series; one that turns
// tenant labels off drops the tenants' series.
func TestMetricsFollowReload(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/config.yaml"
	r := startApp(t, dir+"/data", func(c *config.Config) { c.File = file })
	key := r.newKey(t, "acme", "pro")
	conf := func(route string, tenantLabels bool) {
		t.Helper()
		text := fmt.Sprintf("listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0, token: %s}\ndata_dir: %s\nnats: {sync_always: false}\nlog: {level: warn}\n"+
			"plans: {pro: {monthly_requests: 1099511627776}}\nmetrics: {tenant_labels: %v}\n"+
			"routes:\n  - {name: %s, path_prefix: /, upstream: %s, auth: [api_key]}\n", adminToken, dir+"/data", tenantLabels, route, r.cfg.Routes[0].Upstream)
		if err := writeFile(file, text); err != nil {
			t.Fatal(err)
		}
		if err := r.a.Reload(); err != nil {
			t.Fatal(err)
		}
		if resp := do(t, r, "GET", "/x", "X-API-Key", key); resp.StatusCode() != 200 {
			t.Fatalf("GET: %d", resp.StatusCode())
		}
	}
	conf("first", true)
	page := scrape(t, r)
	if v, _ := page.get("tollgate_route_requests_total", "route", "first", "class", "2xx"); v != 1 {
		t.Errorf("route first: %v, want 1", v)
	}
	if v, _ := page.get("tollgate_tenant_requests_total", "tenant", "acme"); v != 1 {
		t.Errorf("tenant acme: %v, want 1", v)
	}
	conf("second", false)
	page = scrape(t, r)
	if v, _ := page.get("tollgate_route_requests_total", "route", "second", "class", "2xx"); v != 1 {
		t.Errorf("route second: %v, want 1", v)
	}
	if _, ok := page.get("tollgate_route_requests_total", "route", "first"); ok {
		t.Error("route first still has series after the reload renamed it")
	}
	if _, ok := page.get("tollgate_tenant_requests_total"); ok {
		t.Error("tenant series after the reload turned tenant_labels off")
	}
}
