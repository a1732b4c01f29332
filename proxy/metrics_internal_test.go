package proxy

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/problems"
)

// metricsTable compiles routes into a table bound to m.
func metricsTable(t testing.TB, m *Metrics, tenantLabels bool, routes ...config.Route) *table {
	t.Helper()
	c := config.Default()
	c.Routes = routes
	c.Upstreams = map[string]config.Upstream{"api": {URL: "http://127.0.0.1:1"}}
	c.Metrics.TenantLabels = tenantLabels
	if err := config.Validate(c); err != nil {
		t.Fatal(err)
	}
	tab, err := compile(c, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.bind(tab)
	return tab
}

// series returns the value of every series of the family name in reg,
// by its labels written as `k="v",…` in label-name order (the value of a
// histogram is its count).
func series(t testing.TB, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, mt := range f.GetMetric() {
			out[labelsOf(mt)] = valueOf(mt)
		}
	}
	return out
}

func labelsOf(mt *dto.Metric) string {
	s := ""
	for i, l := range mt.GetLabel() {
		if i > 0 {
			s += ","
		}
		s += l.GetName() + `="` + l.GetValue() + `"`
	}
	return s
}

func valueOf(mt *dto.Metric) float64 {
	switch {
	case mt.Counter != nil:
		return mt.Counter.GetValue()
	case mt.Histogram != nil:
		return float64(mt.Histogram.GetSampleCount())
	case mt.Gauge != nil:
		return mt.Gauge.GetValue()
	}
	return 0
}

func TestObserveCountsByRouteMethodClassAndTenant(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	tab := metricsTable(t, m, true,
		config.Route{Name: "things", PathPrefix: "/things", Upstream: "api", Auth: []string{"api_key"}},
		config.Route{Host: "Files.Example", PathPrefix: "/f", Upstream: "http://127.0.0.1:2/base"})
	things, files := tab.match(nil, []byte("/things/1")), tab.match([]byte("files.example"), []byte("/f/x"))
	if things == nil || files == nil {
		t.Fatal("routes not matched")
	}
	acme := access.Principal{Tenant: "acme"}
	for _, tt := range []struct {
		rs     reqState
		method string
		status int
	}{
		{reqState{route: things, id: acme}, "GET", 200},
		{reqState{route: things, id: acme}, "GET", 200},
		{reqState{route: things, id: acme}, "BREW", 418},
		{reqState{route: files}, "POST", 502},
		{reqState{}, "GET", 404},
		{reqState{unparsed: true}, "GET", 400},
		{reqState{endpoint: endpointSelf, id: access.Principal{Tenant: "globex"}}, "GET", 200},
		{reqState{endpoint: endpointOAuth}, "POST", 401},
	} {
		m.observe(tab, &tt.rs, []byte(tt.method), tt.status, time.Millisecond)
	}
	got := series(t, reg, "tollgate_route_requests_total")
	for labels, want := range map[string]float64{
		`class="2xx",method="GET",route="things"`:             2,
		`class="4xx",method="other",route="things"`:           1,
		`class="5xx",method="POST",route="files.example/f"`:   1,
		`class="4xx",method="GET",route="none"`:               1,
		`class="4xx",method="other",route="none"`:             1,
		`class="2xx",method="GET",route="self_service"`:       1,
		`class="4xx",method="POST",route="oauth"`:             1,
		`class="2xx",method="DELETE",route="files.example/f"`: 0,
		`class="other",method="OPTIONS",route="self_service"`: 0,
	} {
		if v, ok := got[labels]; !ok || v != want {
			t.Errorf("tollgate_route_requests_total{%s} = %v (present %v), want %v", labels, v, ok, want)
		}
	}
	// Every route, method and class is resolved in advance.
	if n, want := len(got), 5*numMethods*numClasses; n != want {
		t.Errorf("%d route series, want %d", n, want)
	}
	tenants := series(t, reg, "tollgate_tenant_requests_total")
	if want := map[string]float64{`class="2xx",tenant="acme"`: 2, `class="4xx",tenant="acme"`: 1, `class="2xx",tenant="globex"`: 1}; !equalSeries(tenants, want) {
		t.Errorf("tollgate_tenant_requests_total = %v, want %v", tenants, want)
	}
	if got := series(t, reg, "tollgate_requests_total")[`class="2xx"`]; got != 3 {
		t.Errorf(`tollgate_requests_total{class="2xx"} = %v, want 3`, got)
	}
}

func equalSeries(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestMetricsFollowReload: a reload keeps the counts of the routes and
// upstreams it keeps, forgets those it removes, and turning tenant labels
// off drops the tenants' series.
func TestMetricsFollowReload(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	keep := config.Route{Name: "keep", PathPrefix: "/keep", Upstream: "api"}
	gone := config.Route{Name: "gone", PathPrefix: "/gone", Upstream: "http://127.0.0.1:9/"}
	t1 := metricsTable(t, m, true, keep, gone)
	for _, r := range t1.routes {
		m.observe(t1, &reqState{route: r, id: access.Principal{Tenant: "acme"}}, []byte("GET"), 200, time.Millisecond)
		r.upstream.latency.Observe(0.001)
	}
	t2 := metricsTable(t, m, false, keep, config.Route{Name: "new", PathPrefix: "/new", Upstream: "api"})
	m.observe(t2, &reqState{route: t2.match(nil, []byte("/keep")), id: access.Principal{Tenant: "acme"}}, []byte("GET"), 200, time.Millisecond)

	got := series(t, reg, "tollgate_route_requests_total")
	if v := got[`class="2xx",method="GET",route="keep"`]; v != 2 {
		t.Errorf("route keep counted %v, want 2 across the reload", v)
	}
	if _, ok := got[`class="2xx",method="GET",route="new"`]; !ok {
		t.Error("route new has no series")
	}
	for labels := range got {
		if labels == `class="2xx",method="GET",route="gone"` {
			t.Error("route gone still has series after the reload removed it")
		}
	}
	ups := series(t, reg, "tollgate_upstream_duration_seconds")
	if want := map[string]float64{`upstream="api"`: 1}; !equalSeries(ups, want) {
		t.Errorf("tollgate_upstream_duration_seconds = %v, want %v", ups, want)
	}
	if got := series(t, reg, "tollgate_tenant_requests_total"); len(got) != 0 {
		t.Errorf("tenant series after tenant_labels went off: %v", got)
	}
}

func TestUpstreamLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	tab := metricsTable(t, m, false,
		config.Route{PathPrefix: "/a", Upstream: "api"},
		config.Route{PathPrefix: "/b", Upstream: "http://127.0.0.1:2/base"})
	for _, r := range tab.routes {
		r.upstream.latency.Observe(0.01)
	}
	got := series(t, reg, "tollgate_upstream_duration_seconds")
	if want := map[string]float64{`upstream="api"`: 1, `upstream="http://127.0.0.1:2/base"`: 1}; !equalSeries(got, want) {
		t.Errorf("tollgate_upstream_duration_seconds = %v, want %v", got, want)
	}
}

func TestDecisionsCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	for _, d := range []access.Decision{
		{Allowed: true}, {Allowed: true, Open: true},
		{Reason: access.ReasonQuota},
		{Reason: access.ReasonRate},
		{Reason: access.ReasonConcurrency},
		{Err: access.ErrLedgerUnavailable},
		{Err: access.ErrUnknownTenant},
		{Allowed: true, HasOverage: true, Overage: 3},
		{Allowed: true, HasOverage: true, Overage: 3, Remaining: 0}, // refunded, still past the limit
		{Allowed: true, HasOverage: true, Remaining: 5},
		{Allowed: true, Shadow: access.ReasonQuota, Uncounted: true},
		{Allowed: true, Shadow: access.ReasonRate},
		{Allowed: true, Shadow: access.ReasonConcurrency}, {Allowed: true, Shadow: access.ReasonConcurrency},
	} {
		m.decided(&d)
	}
	got := series(t, reg, "tollgate_quota_decisions_total")
	want := map[string]float64{`decision="admitted"`: 3, `decision="quota"`: 1, `decision="rate"`: 1,
		`decision="concurrency"`: 1, `decision="unavailable"`: 1, `decision="unknown_tenant"`: 1,
		`decision="overage"`: 2, `decision="shadow_quota"`: 1, `decision="shadow_rate"`: 1, `decision="shadow_concurrency"`: 2}
	if !equalSeries(got, want) {
		t.Errorf("tollgate_quota_decisions_total = %v, want %v", got, want)
	}
}

func TestOAuthFailuresCounted(t *testing.T) {
	answer := func(status int, code problems.Code, field string) OAuthAnswer {
		b := []byte(`{"error":"` + string(code) + `","error_description":"x",`)
		b = append(b, problems.Append(nil, status, []problems.Problem{{Code: code, Field: field}})[1:]...)
		return OAuthAnswer{Status: status, Body: b}
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	for _, tt := range []struct {
		apiKey bool
		a      OAuthAnswer
	}{
		{false, answer(401, problems.CodeInvalidClient, "client_secret")},
		{true, answer(401, problems.CodeInvalidClient, "Api-Key")},
		{false, answer(400, problems.CodeInvalidGrant, "password")},
		{false, answer(429, problems.CodeTooManyFailures, "username")},
		{false, answer(429, problems.CodeTooManyFailures, "")},
		{false, answer(400, problems.CodeInvalidScope, "scope")}, // not an authentication
		{false, answer(429, problems.CodeQuotaExceeded, "")},     // nor this
		{false, OAuthAnswer{Status: 200, Body: []byte(`{"access_token":"x"}`)}},
	} {
		m.oauthFailed(tt.apiKey, &tt.a)
	}
	got := series(t, reg, "tollgate_auth_failures_total")
	for labels, want := range map[string]float64{
		`kind="client",reason="invalid"`:   1,
		`kind="api_key",reason="invalid"`:  1,
		`kind="basic",reason="invalid"`:    1,
		`kind="basic",reason="throttled"`:  1,
		`kind="client",reason="throttled"`: 1,
		`kind="bearer",reason="invalid"`:   0,
		`kind="none",reason="missing"`:     0,
	} {
		if v, ok := got[labels]; !ok || v != want {
			t.Errorf("tollgate_auth_failures_total{%s} = %v (present %v), want %v", labels, v, ok, want)
		}
	}
}

// TestObserveAllocatesNothing: counting a request, tenant labels
// included, allocates nothing once the tenant has been seen.
func TestObserveAllocatesNothing(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	tab := metricsTable(t, m, true, config.Route{Name: "things", PathPrefix: "/", Upstream: "api"})
	rs := reqState{route: tab.routes[0], id: access.Principal{Tenant: "acme"}, code: problems.CodeQuotaExceeded}
	d := access.Decision{Allowed: true}
	method := []byte("GET")
	m.observe(tab, &rs, method, 429, time.Millisecond) // first sight of acme
	if n := testing.AllocsPerRun(1000, func() {
		m.observe(tab, &rs, method, 429, time.Millisecond)
		m.decided(&d)
		tab.routes[0].upstream.latency.Observe(0.001)
	}); n != 0 {
		t.Errorf("%v allocations per request", n)
	}
}

// BenchmarkObserve is what counting one request costs, on every core at
// once (the counters are shared).
func BenchmarkObserve(b *testing.B) {
	for _, tenants := range []bool{false, true} {
		name := "tenant_labels=false"
		if tenants {
			name = "tenant_labels=true"
		}
		b.Run(name, func(b *testing.B) {
			m := NewMetrics(prometheus.NewRegistry())
			tab := metricsTable(b, m, tenants, config.Route{Name: "things", PathPrefix: "/", Upstream: "api"})
			method := []byte("GET")
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				rs := reqState{route: tab.routes[0], id: access.Principal{Tenant: "acme"}}
				for pb.Next() {
					m.observe(tab, &rs, method, 200, 3*time.Millisecond)
				}
			})
		})
	}
}
