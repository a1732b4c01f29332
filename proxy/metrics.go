package proxy

import (
	"bytes"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/problems"
)

// Metrics are the proxy's Prometheus series. Every series a request
// counts in is resolved before the request comes (at construction, or
// when a configuration is compiled), so that counting a request is a few
// indexes into arrays and atomic adds, without a lock, a map lookup or an
// allocation. The exception is metrics.tenant_labels: a tenant's counters
// are looked up in a lock-free map, and resolved (allocating) the first
// time the tenant is seen.
type Metrics struct {
	authFail [access.KindClient + 1][numAuthReasons]prometheus.Counter
	byClass  [numClasses]prometheus.Counter
	byCode   map[problems.Code]prometheus.Counter
	duration prometheus.Histogram
	decision [numDecisions]prometheus.Counter

	routeReqs  *prometheus.CounterVec   // route, method, class
	upstreams  *prometheus.HistogramVec // upstream
	tenantReqs *prometheus.CounterVec   // tenant, class
	// The requests of no configured route: no route matched, the
	// self-service paths, the OAuth2 endpoints.
	unrouted, self, oauth *routeCounts
	// tenants holds a *tenantCounts per tenant seen, while
	// metrics.tenant_labels is on.
	tenants sync.Map

	mu sync.Mutex // serialises bind; protects the label sets below
	// The route and upstream labels of the table bound last: a reload
	// forgets the series of those the new table does not have.
	routeLabels, upstreamLabels map[string]bool
}

// Status classes: the label values of class, by status/100 (0: other).
const numClasses = 6

var classNames = [numClasses]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

func classOf(status int) int {
	c := status / 100
	if c < 1 || c >= numClasses {
		return 0
	}
	return c
}

// Methods: the label values of method. Any other method is "other", so
// that a client cannot make up series.
const (
	methodGet = iota
	methodHead
	methodPost
	methodPut
	methodPatch
	methodDelete
	methodOptions
	methodOther
	numMethods
)

var methodNames = [numMethods]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}

// methodOf is the method's index; it does not allocate (a switch on
// string(b) does not convert).
func methodOf(m []byte) int {
	switch string(m) {
	case "GET":
		return methodGet
	case "HEAD":
		return methodHead
	case "POST":
		return methodPost
	case "PUT":
		return methodPut
	case "PATCH":
		return methodPatch
	case "DELETE":
		return methodDelete
	case "OPTIONS":
		return methodOptions
	}
	return methodOther
}

// routeCounts are one route's request counters by method and class.
type routeCounts [numMethods][numClasses]prometheus.Counter

// The route label of the requests no configured route answers. A
// configured route of one of these names shares their series.
const (
	RouteNone        = "none"         // no route matched (404), or the request could not be parsed
	RouteSelfService = "self_service" // self_service.* paths
	RouteOAuth       = "oauth"        // oauth.token_path, oauth.revoke_path
)

// reqState.endpoint: the request was for a path tollgate answers itself.
const (
	endpointSelf  = 1 + iota // a self-service path
	endpointOAuth            // an OAuth2 endpoint
)

// Quota decisions: the label values of decision.
const (
	decAdmitted = iota
	decQuota
	decRate
	decConcurrency
	decUnavailable
	decUnknownTenant
	decOverage
	decShadowQuota
	decShadowRate
	decShadowConcurrency
	numDecisions
)

var decisionNames = [numDecisions]string{"admitted", "quota", "rate", "concurrency", "unavailable", "unknown_tenant",
	"overage", "shadow_quota", "shadow_rate", "shadow_concurrency"}

// latencyBuckets are the buckets of the duration histograms, in seconds.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewMetrics registers the proxy's series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{byCode: map[problems.Code]prometheus.Counter{}}
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_requests_total", Help: "Requests answered by the proxy, by status class.",
	}, []string{"class"})
	for i, c := range classNames {
		m.byClass[i] = reqs.WithLabelValues(c)
	}
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_errors_total", Help: "Errors tollgate answered itself, by problem code.",
	}, []string{"code"})
	for _, e := range problems.Catalogue {
		m.byCode[e.Code] = errs.WithLabelValues(string(e.Code))
	}
	m.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "tollgate_request_duration_seconds", Help: "Time from request read to response handed to the server, upstream included.",
		Buckets: latencyBuckets,
	})
	fails := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_auth_failures_total",
		Help: "Requests refused by authentication or authorization, by the kind of credential presented (none: no credential) and the reason.",
	}, []string{"kind", "reason"})
	for k := range m.authFail {
		kind := access.Kind(k).String()
		if kind == "" {
			kind = "none"
		}
		for r := range m.authFail[k] {
			m.authFail[k][r] = fails.WithLabelValues(kind, authReasonNames[r])
		}
	}
	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_quota_decisions_total",
		Help: "Admissions of authenticated requests on routes: admitted, or refused by the monthly quota, the rate limit, the concurrency cap, an unreachable ledger (unavailable) or an unknown tenant.",
	}, []string{"decision"})
	for d := range m.decision {
		m.decision[d] = decisions.WithLabelValues(decisionNames[d])
	}
	m.routeReqs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_route_requests_total",
		Help: "Requests answered by the proxy, by route (its name, else host and path_prefix; none: no route), method (other: not a common one) and status class.",
	}, []string{"route", "method", "class"})
	m.unrouted, m.self, m.oauth = m.routeCounts(RouteNone), m.routeCounts(RouteSelfService), m.routeCounts(RouteOAuth)
	m.upstreams = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tollgate_upstream_duration_seconds",
		Help:    "Time an upstream took to answer a forwarded request (its head and buffered body), failures included, by upstream (its name, or the URL given inline on a route).",
		Buckets: latencyBuckets,
	}, []string{"upstream"})
	m.tenantReqs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_tenant_requests_total",
		Help: "Requests of authenticated tenants, by tenant and status class; only with metrics.tenant_labels.",
	}, []string{"tenant", "class"})
	reg.MustRegister(reqs, errs, m.duration, fails, decisions, m.routeReqs, m.upstreams, m.tenantReqs)
	return m
}

func (m *Metrics) routeCounts(label string) *routeCounts {
	rc := new(routeCounts)
	for i := range rc {
		for j := range rc[i] {
			rc[i][j] = m.routeReqs.WithLabelValues(label, methodNames[i], classNames[j])
		}
	}
	return rc
}

// routeLabel is the route label of r: its name, else its host and path
// prefix (unique among routes).
func routeLabel(r *config.Route) string {
	if r.Name != "" {
		return r.Name
	}
	return r.Host + r.PathPrefix
}

// upstreamLabel is the upstream label of the upstream called name: the
// name, or for an upstream given inline on a route (named after the
// route's index) its URL.
func upstreamLabel(c *config.Config, name string) string {
	for i := range c.Routes {
		if r := &c.Routes[i]; r.UpstreamName == name && r.Upstream != name {
			return r.Upstream
		}
	}
	return name
}

// isFixedRoute reports whether label is one of the routes' labels that
// exist whatever the configuration.
func isFixedRoute(label string) bool {
	return label == RouteNone || label == RouteSelfService || label == RouteOAuth
}

// bind resolves the series of t, before it is published: each route's
// request counters and each new upstream's latency histogram (an upstream
// carried over from the last table keeps its own). It forgets the series
// of the routes and upstreams that the last table bound had and t does
// not (a reload removed them), and the tenants' series when t has no
// tenant labels.
func (m *Metrics) bind(t *table) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	routes, ups := map[string]bool{}, map[string]bool{}
	for _, r := range t.routes {
		r.counts = m.routeCounts(r.label)
		routes[r.label] = true
		if up := r.upstream; up.latency == nil {
			up.latency = m.upstreams.WithLabelValues(up.label)
		}
		ups[r.upstream.label] = true
	}
	for l := range m.routeLabels {
		if !routes[l] && !isFixedRoute(l) {
			m.routeReqs.DeletePartialMatch(prometheus.Labels{"route": l})
		}
	}
	for l := range m.upstreamLabels {
		if !ups[l] {
			m.upstreams.DeleteLabelValues(l)
		}
	}
	m.routeLabels, m.upstreamLabels = routes, ups
	if !t.tenantLabels {
		m.tenants.Clear()
		m.tenantReqs.Reset()
	}
}

// authReason is why a credential was refused.
type authReason uint8

const (
	authMissing authReason = iota
	authMalformed
	authInvalid // unknown, wrong secret, revoked or expired: one answer
	authThrottled
	authUnavailable
	authTenant // may not act for the tenant named, or named none
	authScope
	authModule
	numAuthReasons
)

var authReasonNames = [numAuthReasons]string{"missing", "malformed", "invalid", "throttled", "store_unavailable", "tenant", "scope", "module"}

// authFailed counts a refusal of a credential of kind (0: none presented).
func (m *Metrics) authFailed(kind access.Kind, r authReason) {
	if m == nil || int(kind) >= len(m.authFail) {
		return
	}
	m.authFail[kind][r].Inc()
}

// oauthFailed counts the refusals of the OAuth2 endpoints that are
// failed authentications: of the client (or, for a legacy client, its API
// key), and of the user of a password grant. The answer says which by its
// RFC 6749 §5.2 error code.
// apiKey says the client presented an API key.
func (m *Metrics) oauthFailed(apiKey bool, a *OAuthAnswer) {
	if m == nil || a.Status < 400 {
		return
	}
	client := access.KindClient
	if apiKey {
		client = access.KindAPIKey
	}
	switch {
	case bytes.HasPrefix(a.Body, errInvalidClient):
		m.authFailed(client, authInvalid)
	case bytes.HasPrefix(a.Body, errInvalidGrant):
		m.authFailed(access.KindBasic, authInvalid)
	case bytes.HasPrefix(a.Body, errTooManyFailures):
		// Throttled by user name (the password grant's) or by address.
		if bytes.Contains(a.Body, fieldUsername) {
			m.authFailed(access.KindBasic, authThrottled)
		} else {
			m.authFailed(client, authThrottled)
		}
	}
}

var (
	errInvalidClient   = []byte(`{"error":"` + problems.CodeInvalidClient + `"`)
	errInvalidGrant    = []byte(`{"error":"` + problems.CodeInvalidGrant + `"`)
	errTooManyFailures = []byte(`{"error":"` + problems.CodeTooManyFailures + `"`)
	fieldUsername      = []byte(`"field":"username"`)
)

// decided counts a quota decision.
func (m *Metrics) decided(d *access.Decision) {
	if m == nil {
		return
	}
	i := decAdmitted
	switch {
	case d.Allowed && d.Shadow != access.ReasonNone:
		// Admitted in shadow mode, where a limit would have refused.
		switch d.Shadow {
		case access.ReasonRate:
			i = decShadowRate
		case access.ReasonConcurrency:
			i = decShadowConcurrency
		default:
			i = decShadowQuota
		}
	case d.Allowed && d.Overage > 0 && d.Remaining == 0:
		i = decOverage
	case d.Allowed:
	case d.Err == access.ErrUnknownTenant:
		i = decUnknownTenant
	case d.Err != nil:
		i = decUnavailable
	case d.Reason == access.ReasonRate:
		i = decRate
	case d.Reason == access.ReasonConcurrency:
		i = decConcurrency
	default:
		i = decQuota
	}
	m.decision[i].Inc()
}

// observe counts an answered request: by class and code, its duration,
// by route, method and class, and by tenant when t has tenant labels.
func (m *Metrics) observe(t *table, rs *reqState, method []byte, status int, d time.Duration) {
	class := classOf(status)
	m.byClass[class].Inc()
	if rs.code != "" {
		if c := m.byCode[rs.code]; c != nil {
			c.Inc()
		}
	}
	m.duration.Observe(d.Seconds())
	rc := m.unrouted
	switch {
	case rs.route != nil && rs.route.counts != nil:
		rc = rs.route.counts
	case rs.endpoint == endpointSelf:
		rc = m.self
	case rs.endpoint == endpointOAuth:
		rc = m.oauth
	}
	mi := methodOther
	if !rs.unparsed {
		mi = methodOf(method)
	}
	rc[mi][class].Inc()
	if t.tenantLabels && rs.id.Tenant != "" {
		m.countTenant(rs.id.Tenant, class)
	}
}

// tenantCounts are a tenant's request counters by class, each resolved
// the first time the tenant gets an answer of its class: a tenant has
// series only for the classes it was answered with.
type tenantCounts struct {
	tenant string
	class  [numClasses]atomic.Pointer[prometheus.Counter]
}

// countTenant counts a request of tenant in class. Once the tenant and
// class have been seen it is a lock-free map lookup and an atomic add.
func (m *Metrics) countTenant(tenant string, class int) {
	v, ok := m.tenants.Load(tenant)
	if !ok {
		// The tenant id points into a credential: keep a copy of its own.
		tenant = strings.Clone(tenant)
		v, _ = m.tenants.LoadOrStore(tenant, &tenantCounts{tenant: tenant})
	}
	tc := v.(*tenantCounts)
	c := tc.class[class].Load()
	if c == nil {
		// Two requests may resolve it at once: WithLabelValues returns
		// the same counter to both.
		cc := m.tenantReqs.WithLabelValues(tc.tenant, classNames[class])
		c = &cc
		tc.class[class].Store(c)
	}
	(*c).Inc()
}
