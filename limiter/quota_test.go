package limiter_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/tollgate/tollgate/limiter"
)

// clock is an injectable clock for period tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

type limits struct {
	mu sync.Mutex
	m  map[string]limiter.Limit
}

func (l *limits) get(tenant string) (limiter.Limit, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.m[tenant]
	return v, ok
}

func (l *limits) set(tenant string, v limiter.Limit) {
	l.mu.Lock()
	l.m[tenant] = v
	l.mu.Unlock()
}

// replica starts a Quotas on its own NATS connection, as one tollgate
// replica would, and stops it (returning its lease) when the test ends
// unless the test closed it first.
func replica(t *testing.T, s *store.Store, name string, l *limits, now func() time.Time, maxLease int64) (*limiter.Quotas, func()) {
	t.Helper()
	q := limiter.NewQuotas(limiter.QuotaOptions{
		Ledger: s.Ledger, Limits: l.get, Now: now, MaxLease: maxLease, ReplicaID: name, LeaseIdle: time.Hour,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = q.Run(ctx); close(done) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer ccancel()
			if err := q.Close(cctx); err != nil {
				t.Errorf("close %s: %v", name, err)
			}
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	return q, stop
}

func TestQuotaSingleReplicaExact(t *testing.T) {
	s := storetest.Open(t)
	l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: 137}}}
	q, stop := replica(t, s, "r1", l, time.Now, 10)
	admitted := 0
	for i := 0; i < 300; i++ {
		d := q.Admit("acme", 1)
		if d.Err != nil {
			t.Fatalf("admit %d: %v", i, d.Err)
		}
		if d.Allowed {
			admitted++
			if d.Remaining != int64(137-admitted) {
				// Remaining is exact on a single replica.
				t.Fatalf("after %d admitted, Remaining = %d, want %d", admitted, d.Remaining, 137-admitted)
			}
		} else if d.Remaining != 0 || d.Limit != 137 {
			t.Fatalf("refusal says limit %d remaining %d, want 137 and 0", d.Limit, d.Remaining)
		}
	}
	if admitted != 137 {
		t.Errorf("admitted %d, want 137", admitted)
	}
	stop()
	if got, _ := s.Ledger.Total(context.Background(), "acme", limiter.PeriodAt(time.Now(), time.UTC, 0).Key); got != 137 {
		t.Errorf("ledger total after close = %d, want 137", got)
	}
}

func TestQuotaUnknownTenantAndUnlimited(t *testing.T) {
	s := storetest.Open(t)
	l := &limits{m: map[string]limiter.Limit{"free": {Monthly: 0}}}
	q, _ := replica(t, s, "r1", l, time.Now, 10)
	if d := q.Admit("ghost", 1); d.Allowed || d.Err != limiter.ErrUnknownTenant {
		t.Errorf("unknown tenant: %+v, want refused with ErrUnknownTenant", d)
	}
	for i := 0; i < 50; i++ {
		if d := q.Admit("free", 1); !d.Allowed || !d.Unlimited {
			t.Fatalf("unlimited tenant refused: %+v", d)
		}
	}
	u, err := q.Usage(context.Background(), "free")
	if err != nil || u.Used != 50 || u.Limit != 0 {
		t.Errorf("usage = %+v, %v; want 50 used of unlimited", u, err)
	}
}

// TestQuotaExactAcrossReplicas is the core promise: three replicas with
// 64 concurrent clients between them, a limit of 10,000 and 30,000
// requests offered never admit more than the limit, and admit exactly the
// limit once leases settle; the ledger then holds what was admitted.
func TestQuotaExactAcrossReplicas(t *testing.T) {
	s := storetest.Open(t)
	const limit, offered, clients = 10000, 30000, 64
	l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: limit}}}
	var qs []*limiter.Quotas
	var stops []func()
	for i := 0; i < 3; i++ {
		q, stop := replica(t, storetest.Connect(t, s), fmt.Sprintf("r%d", i), l, time.Now, 100)
		qs, stops = append(qs, q), append(stops, stop)
	}
	var admitted, sent atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := qs[c%len(qs)]
			for sent.Add(1) <= offered {
				d := q.Admit("acme", 1)
				if d.Err != nil {
					t.Errorf("admit: %v", d.Err)
					return
				}
				if d.Allowed {
					if n := admitted.Add(1); n > limit {
						t.Errorf("admitted %d > limit %d", n, limit)
					}
				}
			}
		}()
	}
	wg.Wait()
	during := admitted.Load()
	var ops int64
	for i, stop := range stops {
		ops += qs[i].LedgerOps()
		stop()
	}
	period := limiter.PeriodAt(time.Now(), time.UTC, 0).Key
	total, err := s.Ledger.Total(context.Background(), "acme", period)
	if err != nil {
		t.Fatal(err)
	}
	if total != during {
		t.Errorf("ledger total %d != admitted %d after leases were returned", total, during)
	}
	// Demand continues on a fresh replica: it gets exactly what is left.
	q, _ := replica(t, storetest.Connect(t, s), "late", l, time.Now, 100)
	for {
		d := q.Admit("acme", 1)
		if !d.Allowed {
			break
		}
		admitted.Add(1)
	}
	if got := admitted.Load(); got != limit {
		t.Errorf("admitted %d in all, want exactly %d", got, limit)
	}
	t.Logf("3 replicas x %d clients, %d offered: %d admitted under load, %d after settling; ledger %d; %d ledger ops (%.1f per 1000 admitted)",
		clients, offered, during, admitted.Load(), total, ops, float64(ops)*1000/float64(during))
}

func TestQuotaLimitChangeKeepsUsage(t *testing.T) {
	s := storetest.Open(t)
	l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: 20}}}
	q, _ := replica(t, s, "r1", l, time.Now, 5)
	n := 0
	for q.Admit("acme", 1).Allowed {
		n++
	}
	if n != 20 {
		t.Fatalf("admitted %d, want 20", n)
	}
	l.set("acme", limiter.Limit{Monthly: 30})
	q.Changed("acme")
	for q.Admit("acme", 1).Allowed {
		n++
	}
	if n != 30 {
		t.Errorf("after raising the limit to 30, admitted %d in all, want 30", n)
	}
	l.set("acme", limiter.Limit{Monthly: 25})
	q.Changed("acme")
	if d := q.Admit("acme", 1); d.Allowed || d.Remaining != 0 {
		t.Errorf("after lowering the limit below usage: %+v, want refused with 0 remaining", d)
	}
}

func TestQuotaMonthRollover(t *testing.T) {
	s := storetest.Open(t)
	c := &clock{t: time.Date(2027, 1, 31, 23, 59, 0, 0, time.UTC)}
	l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: 10}}}
	q, stop := replica(t, s, "r1", l, c.Now, 4)
	for i := 0; i < 3; i++ {
		if d := q.Admit("acme", 1); !d.Allowed || d.Reset != 60 {
			t.Fatalf("january admit %d: %+v, want allowed with reset 60s", i, d)
		}
	}
	c.Set(time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC))
	n := 0
	var last limiter.Decision
	for {
		d := q.Admit("acme", 1)
		if !d.Allowed {
			last = d
			break
		}
		n++
	}
	if n != 10 {
		t.Errorf("february admitted %d, want a fresh 10", n)
	}
	if want := int64(28 * 24 * 3600); last.Reset != want {
		t.Errorf("february reset = %d, want %d (28 days)", last.Reset, want)
	}
	stop()
	ctx := context.Background()
	if got, _ := s.Ledger.Total(ctx, "acme", "2027-01"); got != 3 {
		t.Errorf("january total = %d, want 3 (unused lease returned at rollover)", got)
	}
	if got, _ := s.Ledger.Total(ctx, "acme", "2027-02"); got != 10 {
		t.Errorf("february total = %d, want 10", got)
	}
}

func TestQuotaLedgerOpsFarFromLimit(t *testing.T) {
	s := storetest.Open(t)
	l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: 100_000_000}}}
	q, _ := replica(t, s, "r1", l, time.Now, 1000)
	const n = 100_000
	for i := 0; i < n; i++ {
		if d := q.Admit("acme", 1); !d.Allowed {
			t.Fatalf("admit %d refused: %+v", i, d)
		}
	}
	ops, days := q.LedgerOps(), q.DayOps()
	per1000 := float64(ops) * 1000 / n
	t.Logf("%d admitted with %d ledger operations: %.2f per 1000, and %d additions to the daily history", n, ops, per1000, days)
	if per1000 > 10 {
		t.Errorf("%.2f ledger operations per 1000 admitted, want ≤ 10", per1000)
	}
	// The daily history follows the ledger: one addition per operation
	// that changed the month, none per request.
	if days == 0 || days > ops {
		t.Errorf("%d additions to the daily history for %d ledger operations", days, ops)
	}
}

func BenchmarkAdmit(b *testing.B) {
	s := storetest.Open(b)
	l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: 1 << 40}}}
	q := limiter.NewQuotas(limiter.QuotaOptions{Ledger: s.Ledger, Limits: l.get, MaxLease: 1000, ReplicaID: "b"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = q.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	q.Admit("acme", 1)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if !q.Admit("acme", 1).Allowed {
				b.Fatal("refused")
			}
		}
	})
	b.ReportMetric(float64(q.LedgerOps())*1000/float64(b.N+1), "ledger-ops/1000")
}

// A lease holds at most MaxLease tokens and, above 1,000, at most a
// thousandth of the tenant's limit: a busy tenant of a big plan costs few
// ledger writes, and a small plan strands little on a crash.
func TestQuotaLeaseCappedByLimit(t *testing.T) {
	s := storetest.Open(t)
	cases := []struct {
		monthly        int64
		cap            int64 // the largest lease
		minOps, maxOps int64 // about n/cap reservations, plus the first small ones
	}{
		{monthly: 1_000_000_000_000, cap: 10_000, minOps: 20, maxOps: 40}, // MaxLease
		{monthly: 5_000_000, cap: 5_000, minOps: 40, maxOps: 60},          // a thousandth
		{monthly: 300_000, cap: 1_000, minOps: 200, maxOps: 220},          // the floor
	}
	const n = 200_000
	ctx := context.Background()
	for i, tc := range cases {
		tenant := fmt.Sprintf("t%d", i)
		l := &limits{m: map[string]limiter.Limit{tenant: {Monthly: tc.monthly}}}
		q, _ := replica(t, s, "r-"+tenant, l, time.Now, 10_000)
		for k := 0; k < n; k++ {
			if d := q.Admit(tenant, 1); !d.Allowed {
				t.Fatalf("%s: admit %d refused: %+v", tenant, k, d)
			}
		}
		ops := q.LedgerOps()
		u, err := q.Usage(ctx, tenant)
		if err != nil {
			t.Fatal(err)
		}
		total, err := s.Ledger.Total(ctx, tenant, u.Period)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("limit %d: %d admitted with %d ledger operations; %d reserved and unspent", tc.monthly, n, ops, total-n)
		if ops < tc.minOps || ops > tc.maxOps {
			t.Errorf("limit %d: %d ledger operations for %d requests, want %d-%d (leases of %d)", tc.monthly, ops, n, tc.minOps, tc.maxOps, tc.cap)
		}
		// At most the lease being spent and one refilled ahead of it.
		if held := total - n; held < 0 || held > 2*tc.cap {
			t.Errorf("limit %d: %d tokens reserved and unspent, want 0-%d", tc.monthly, held, 2*tc.cap)
		}
	}
}
