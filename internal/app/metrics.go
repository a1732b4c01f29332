package app

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/limiter"
)

// registerLeaseMetrics exports the limiter's lease work (limiter.LeaseStats)
// as counters read at each scrape.
func registerLeaseMetrics(reg prometheus.Registerer, q *limiter.Quotas) {
	counter := func(name, help string, labels prometheus.Labels, f func(*limiter.LeaseStats) int64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { s := q.LeaseStats(); return float64(f(&s)) }))
	}
	counter("tollgate_lease_reservations_total", "Leases of quota tokens reserved from the ledger.", nil,
		func(s *limiter.LeaseStats) int64 { return s.Reservations })
	counter("tollgate_lease_reserved_tokens_total", "Tokens granted by the leases reserved from the ledger.", nil,
		func(s *limiter.LeaseStats) int64 { return s.ReservedTokens })
	counter("tollgate_lease_reservation_failures_total", "Lease reservations the ledger did not acknowledge (re-sent and refunded in the background).", nil,
		func(s *limiter.LeaseStats) int64 { return s.ReserveFailures })
	counter("tollgate_lease_refunds_total", "Admitted requests whose tokens went back to the lease: refund_on answers and bodies the client broke off.", nil,
		func(s *limiter.LeaseStats) int64 { return s.Refunds })
	counter("tollgate_lease_refunded_tokens_total", "Tokens of the refunded requests.", nil,
		func(s *limiter.LeaseStats) int64 { return s.RefundedTokens })
	for i, why := range limiter.ReturnReasons {
		labels := prometheus.Labels{"reason": why}
		counter("tollgate_lease_returns_total",
			"Returns of unused lease tokens to the ledger, by reason: excess (a reservation over the limit), unused (an idle lease, or the end of a period), shutdown.",
			labels, func(s *limiter.LeaseStats) int64 { return s.Returns[i] })
		counter("tollgate_lease_returned_tokens_total", "Unused lease tokens returned to the ledger, by reason.",
			labels, func(s *limiter.LeaseStats) int64 { return s.ReturnedTokens[i] })
	}
	counter("tollgate_lease_sweeps_total", "Expired lease records of other replicas swept by this one.", nil,
		func(s *limiter.LeaseStats) int64 { return s.Sweeps })
	counter("tollgate_lease_swept_tokens_total", "Tokens returned to the ledger for the expired lease records this replica swept.", nil,
		func(s *limiter.LeaseStats) int64 { return s.SweptTokens })
	counter("tollgate_lease_records_lost_total", "Lease records of this replica that another replica swept, taking it for dead.", nil,
		func(s *limiter.LeaseStats) int64 { return s.LostRecords })
}

// registerStoreMetrics exports the state of the connection to NATS and
// of the watchers that mirror buckets into memory.
func registerStoreMetrics(reg prometheus.Registerer, s *store.Store) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tollgate_nats_connected", Help: "1 while the connection to NATS is up, 0 while it is not.",
	}, func() float64 {
		if s.Connected() {
			return 1
		}
		return 0
	}))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "tollgate_nats_reconnects_total", Help: "Times the connection to NATS was re-established.",
	}, func() float64 { return float64(s.Reconnects()) }))
	reg.MustRegister(watchCollector{s})
}

// watchCollector exports each bucket watcher's state (store.WatchState).
type watchCollector struct{ s *store.Store }

var (
	watchPendingDesc = prometheus.NewDesc("tollgate_watch_pending",
		"Changes of a bucket its in-memory mirror has yet to apply, as last known.", []string{"bucket"}, nil)
	watchStaleDesc = prometheus.NewDesc("tollgate_watch_staleness_seconds",
		"Seconds since a bucket's in-memory mirror was last known to hold all of it: about 1 at most while its watcher works.", []string{"bucket"}, nil)
	watchRestartsDesc = prometheus.NewDesc("tollgate_watch_restarts_total",
		"Watchers of a bucket created to replace another (after a reconnect, or one found silent).", []string{"bucket"}, nil)
)

func (c watchCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- watchPendingDesc
	ch <- watchStaleDesc
	ch <- watchRestartsDesc
}

func (c watchCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, w := range c.s.Watches() {
		ch <- prometheus.MustNewConstMetric(watchPendingDesc, prometheus.GaugeValue, float64(w.Pending), w.Bucket)
		ch <- prometheus.MustNewConstMetric(watchStaleDesc, prometheus.GaugeValue, w.Staleness(now).Seconds(), w.Bucket)
		ch <- prometheus.MustNewConstMetric(watchRestartsDesc, prometheus.CounterValue, float64(w.Restarts), w.Bucket)
	}
}
