package proxy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate/tollgate/internal/problems"
)

// Metrics are the proxy's Prometheus series. Every series is resolved at
// construction so that counting a request is a few atomic adds.
type Metrics struct {
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
	reg.MustRegister(reqs, errs, m.duration)
	return m
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
