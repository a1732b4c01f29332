package proxy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/problems"
)

// Metrics are the proxy's Prometheus series. Every series is resolved at
// construction so that counting a request is a few atomic adds.
type Metrics struct {
	authFail [access.KindClient + 1][numAuthReasons]prometheus.Counter
	byClass  [6]prometheus.Counter
	byCode   map[problems.Code]prometheus.Counter
	duration prometheus.Histogram
}

// NewMetrics registers the proxy's series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{byCode: map[problems.Code]prometheus.Counter{}}
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_requests_total", Help: "Requests answered by the proxy, by status class.",
	}, []string{"class"})
	for i, c := range []string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"} {
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
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
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
	reg.MustRegister(reqs, errs, m.duration, fails)
	return m
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

func (m *Metrics) observe(status int, code problems.Code, d time.Duration) {
	class := status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	m.byClass[class].Inc()
	if code != "" {
		if c := m.byCode[code]; c != nil {
			c.Inc()
		}
	}
	m.duration.Observe(d.Seconds())
}
