package limiter_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/tollgate/tollgate/limiter"
)

// offer sends n requests of tenant spread over the replicas from 16
// goroutines, and returns how many each decision admitted; f, when set,
// sees every decision.
func offer(reps []*limiter.Quotas, tenant string, n int, mode limiter.Mode, f func(q *limiter.Quotas, d limiter.Decision)) (admitted int64) {
	var a atomic.Int64
	var wg sync.WaitGroup
	var next atomic.Int64
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := reps[g%len(reps)]
			for next.Add(1) <= int64(n) {
				d := q.AdmitRequest(tenant, "key", 1, mode)
				if d.Allowed {
					a.Add(1)
				}
				if f != nil {
					f(q, d)
				}
			}
		}()
	}
	wg.Wait()
	return a.Load()
}

// TestOverageExactAcrossReplicas: a plan of 1,000 that allows 10 % over
// its limit admits exactly 1,100 requests over three replicas; every
// answer past the limit says remaining 0 and an overage, and the usage
// shows 1,000 of the limit and 100 of overage.
func TestOverageExactAcrossReplicas(t *testing.T) {
	s := storetest.Open(t)
	l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: 1000, Overage: 100}}}
	var reps []*limiter.Quotas
	var stops []func()
	for _, name := range []string{"a", "b", "c"} {
		q, stop := replica(t, s, name, l, time.Now, 50)
		reps = append(reps, q)
		stops = append(stops, stop)
	}
	var bad atomic.Int64
	var sawOverage atomic.Bool
	admitted := offer(reps, "acme", 3000, limiter.ModePlan, func(_ *limiter.Quotas, d limiter.Decision) {
		if d.Limit != 1000 || !d.HasOverage || d.Overage < 0 || d.Overage > 100 || d.Remaining < 0 || d.Remaining > 1000 {
			bad.Add(1)
		}
		if d.Overage > 0 && d.Remaining != 0 {
			bad.Add(1)
		}
		if d.Allowed && d.Overage > 0 {
			sawOverage.Store(true)
		}
		if !d.Allowed && (d.Reason != limiter.ReasonQuota || d.Remaining != 0) {
			bad.Add(1)
		}
	})
	if admitted != 1100 {
		t.Errorf("admitted %d, want exactly 1100 (limit 1000 and 10%% overage)", admitted)
	}
	if bad.Load() != 0 {
		t.Errorf("%d decisions had inconsistent limit, remaining or overage", bad.Load())
	}
	if !sawOverage.Load() {
		t.Error("no admitted request reported overage")
	}
	for _, stop := range stops {
		stop()
	}
	q, _ := replica(t, s, "reader", l, time.Now, 50)
	u, err := q.Usage(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	if u.Used != 1100 || u.Limit != 1000 || u.Remaining != 0 || u.Overage != 100 || u.OverageAllowed != 100 {
		t.Errorf("usage = %+v, want used 1100 of 1000, overage 100 of 100 allowed", u)
	}
}

// TestShadowAdmitsAndCounts: a shadow plan of 200 admits all 500
// requests over three replicas; the ledger counts exactly the 200 its
// limit holds, and every answer past it names quota_exceeded. Rate and
// concurrency refusals are named too and admitted. Switched to enforce
// (a reload), the period's usage is kept and the next request is refused.
func TestShadowAdmitsAndCounts(t *testing.T) {
	s := storetest.Open(t)
	l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: 200, Shadow: true}}}
	var reps []*limiter.Quotas
	for _, name := range []string{"a", "b", "c"} {
		q, _ := replica(t, s, name, l, time.Now, 20)
		reps = append(reps, q)
	}
	var would, uncounted atomic.Int64
	admitted := offer(reps, "acme", 500, limiter.ModePlan, func(_ *limiter.Quotas, d limiter.Decision) {
		if d.Shadow == limiter.ReasonQuota {
			would.Add(1)
		}
		if d.Uncounted {
			uncounted.Add(1)
			if d.Remaining != 0 {
				t.Errorf("a request past the limit says remaining %d", d.Remaining)
			}
		}
	})
	if admitted != 500 {
		t.Errorf("shadow admitted %d of 500", admitted)
	}
	if would.Load() != 300 || uncounted.Load() != 300 {
		t.Errorf("%d answers said quota_exceeded, %d uncounted; want 300 each (500 past a limit of 200)", would.Load(), uncounted.Load())
	}
	// Enforce on the route overrides the plan's shadow.
	if d := reps[0].AdmitRequest("acme", "key", 1, limiter.ModeEnforce); d.Allowed {
		t.Errorf("mode enforce on a shadow plan past its limit admitted: %+v", d)
	}
	// The plan switches to enforce: a reload.
	l.set("acme", limiter.Limit{Monthly: 200})
	for _, q := range reps {
		q.ChangedAll()
	}
	if d := reps[1].AdmitRequest("acme", "key", 1, limiter.ModePlan); d.Allowed || d.Reason != limiter.ReasonQuota || d.Shadow != limiter.ReasonNone {
		t.Errorf("after the switch to enforce: %+v, want refused by the quota", d)
	}
	u, err := reps[2].Usage(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	if u.Used != 200 {
		t.Errorf("usage after the switch = %+v, want the period's 200 kept", u)
	}

	// Rate and concurrency in shadow: named, admitted, and counted in
	// the monthly quota.
	l.set("rated", limiter.Limit{Monthly: 1000, Shadow: true, Rate: limiter.Rate{Requests: 5, Per: time.Hour, Burst: 5}, Concurrency: 1})
	q := reps[0]
	var reasons [4]int
	for range 10 {
		d := q.AdmitRequest("rated", "key", 1, limiter.ModePlan)
		if !d.Allowed || d.Uncounted {
			t.Fatalf("shadow refused or did not count: %+v", d)
		}
		reasons[d.Shadow]++
	}
	// The first holds the only concurrency slot (never released here):
	// 1 none, 4 concurrency, then 5 rate (rate comes first).
	if reasons[limiter.ReasonNone] != 1 || reasons[limiter.ReasonConcurrency] != 4 || reasons[limiter.ReasonRate] != 5 {
		t.Errorf("shadow reasons = %v, want 1 none, 4 concurrency, 5 rate", reasons)
	}
	q.Release("rated")
}

// TestRefundsCountedApart: three replicas admit 600 requests and refund
// every third; once they close, the ledger holds exactly the 400 served,
// usage shows 400 used and 200 refunded, and each refunded decision's
// tokens were spent again rather than lost.
func TestRefundsCountedApart(t *testing.T) {
	s := storetest.Open(t)
	set := new(access.StatusSet)
	set.AddStatus(503)
	l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: 10_000, RefundOn: set}}}
	var reps []*limiter.Quotas
	var stops []func()
	for _, name := range []string{"a", "b", "c"} {
		q, stop := replica(t, s, name, l, time.Now, 50)
		reps = append(reps, q)
		stops = append(stops, stop)
	}
	var n, refunded atomic.Int64
	admitted := offer(reps, "acme", 600, limiter.ModePlan, func(q *limiter.Quotas, d limiter.Decision) {
		if d.RefundOn != set {
			t.Error("the decision does not carry the plan's refund_on")
		}
		if d.Allowed && n.Add(1)%3 == 0 {
			q.Refund("acme", 1, d)
			refunded.Add(1)
		}
	})
	if admitted != 600 || refunded.Load() != 200 {
		t.Fatalf("admitted %d, refunded %d; want 600 and 200", admitted, refunded.Load())
	}
	// Before closing, usage already shows the refunds.
	u, err := reps[0].Usage(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	if u.Refunded != 200 {
		t.Logf("before settling: %+v (other replicas' refunds are counted when they flush)", u)
	}
	for _, stop := range stops {
		stop()
	}
	period := limiter.PeriodAt(time.Now(), time.UTC, 0).Key
	if got, _ := s.Ledger.Total(context.Background(), "acme", period); got != 400 {
		t.Errorf("ledger total = %d, want exactly 400 (600 admitted, 200 refunded)", got)
	}
	q, _ := replica(t, s, "reader", l, time.Now, 50)
	u, err = q.Usage(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	if u.Used != 400 || u.Refunded != 200 {
		t.Errorf("usage = %+v, want 400 used and 200 refunded", u)
	}
	// A request admitted in shadow past the limit holds no quota: its
	// refund gives nothing back.
	l.set("shadow", limiter.Limit{Monthly: 1, Shadow: true})
	_ = q.AdmitRequest("shadow", "key", 1, limiter.ModePlan)
	d := q.AdmitRequest("shadow", "key", 1, limiter.ModePlan)
	if !d.Uncounted {
		t.Fatalf("second request of a shadow plan of 1: %+v, want admitted uncounted", d)
	}
	q.Refund("shadow", 1, d)
	if d := q.AdmitRequest("shadow", "key", 1, limiter.ModeEnforce); d.Allowed {
		t.Error("refunding an uncounted request created a token")
	}
}

// BenchmarkAdmitRequestOutcomes: admission with a refund of every other
// request (refund_on), in shadow mode past the limit (admitted,
// uncounted), and with overage allowed, on a real embedded NATS server.
func BenchmarkAdmitRequestOutcomes(b *testing.B) {
	s := storetest.Open(b)
	set := new(access.StatusSet)
	set.AddStatus(503)
	l := &limits{m: map[string]limiter.Limit{
		"refund":  {Monthly: 1 << 40, RefundOn: set},
		"shadow":  {Monthly: 10, Shadow: true},
		"overage": {Monthly: 1 << 40, Overage: 1 << 39},
	}}
	q := limiter.NewQuotas(limiter.QuotaOptions{Ledger: s.Ledger, Limits: l.get, MaxLease: 1000, ReplicaID: "b"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = q.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for _, tenant := range []string{"refund", "shadow", "overage"} {
		for range 20 {
			q.AdmitRequest(tenant, "k", 1, limiter.ModePlan)
		}
		b.Run(tenant, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					d := q.AdmitRequest(tenant, "k", 1, limiter.ModePlan)
					if !d.Allowed {
						b.Fatal("refused")
					}
					if i++; i%2 == 0 && tenant == "refund" {
						q.Refund(tenant, 1, d)
					}
				}
			})
		})
	}
}
