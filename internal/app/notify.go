package app

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate/tollgate/internal/notify"
	"github.com/tollgate/tollgate/internal/tenants"
)

// newNotifier builds the webhook notifier over the store's notifications
// bucket. It reads the tenant's plan and limit at each use, so a reload
// (or a grant) applies at once.
func (a *App) newNotifier(replica string) *notify.Notifier {
	return notify.New(notify.Options{
		KV: a.store.Notifications, Replica: replica, Target: a.notifyTarget,
		StoreTimeout: a.Config().NATS.Timeout.D(), Log: a.log.Named("notify"),
	})
}

// notifyTarget is where tenant's notifications go: its plan's notify
// block, and its monthly limit now.
func (a *App) notifyTarget(tenant string) (notify.Target, bool) {
	t := a.tenants.Get(tenant)
	if t == nil {
		return notify.Target{}, false
	}
	c := a.Config()
	p, ok := c.Plans[t.Plan]
	if !ok || p.Notify == nil {
		return notify.Target{}, false
	}
	n := p.Notify
	return notify.Target{URL: n.URL, Secret: n.Secret, Percents: n.Percents, Limit: tenants.Limit(c, t), Sends: n.Sends}, true
}

// registerNotifyMetrics exports the notifier's work: notifications by
// kind and outcome, and those still to create or deliver.
func registerNotifyMetrics(reg prometheus.Registerer, n *notify.Notifier) {
	for _, kind := range notify.Kinds {
		for _, outcome := range notify.Outcomes {
			reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name:        "tollgate_notifications_total",
				Help:        "Webhook notifications on this replica, by kind and outcome: created (by this replica), exists (another creation was first), create_failed (retried), delivered (acknowledged with 2xx), failed (an attempt to retry).",
				ConstLabels: prometheus.Labels{"kind": kind, "outcome": outcome},
			}, func() float64 { return float64(n.Count(kind, outcome)) }))
		}
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tollgate_notifications_pending", Help: "Webhook notifications not yet delivered (in the bucket).",
	}, func() float64 { _, d := n.Pending(); return float64(d) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tollgate_notifications_uncreated", Help: "Notifications this replica holds in memory because NATS did not take them yet.",
	}, func() float64 { c, _ := n.Pending(); return float64(c) }))
}
