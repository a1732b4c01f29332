package limiter_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/tollgate/tollgate/limiter"
)

// TestDailyHistoryMatchesMonthlyUsage: three replicas on one NATS server
// serve two tenants (one in UTC, one nine hours ahead) from 28 November to
// 2 December on an injected clock, so that leases cross midnights and a
// month end. Once every replica has returned its leases, each day's count
// in the history equals the requests admitted on that day in the tenant's
// time zone, and the days of each month add up to the ledger's total for
// that month, which is its usage.
func TestDailyHistoryMatchesMonthlyUsage(t *testing.T) {
	s := storetest.Open(t)
	c := &clock{t: time.Date(2026, 11, 28, 20, 10, 0, 0, time.UTC)}
	tokyo := time.FixedZone("UTC+9", 9*3600)
	l := &limits{m: map[string]limiter.Limit{
		"acme":   {Monthly: 1_000_000},
		"kaisha": {Monthly: 1_000_000, Location: tokyo},
	}}
	locs := map[string]*time.Location{"acme": time.UTC, "kaisha": tokyo}
	var reps []*limiter.Quotas
	var stops []func()
	for _, name := range []string{"a", "b", "c"} {
		conn := storetest.Connect(t, s)
		q := limiter.NewQuotas(limiter.QuotaOptions{Ledger: conn.Ledger, Leases: conn.Leases(), Limits: l.get, Now: c.Now,
			MaxLease: 200, ReplicaID: name, LeaseIdle: time.Hour, LeaseTTL: time.Hour})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = q.Run(ctx); close(done) }()
		reps = append(reps, q)
		stops = append(stops, func() { cancel(); <-done })
	}
	want := map[string]map[string]int64{"acme": {}, "kaisha": {}}
	// Steps of 47 minutes: every replica serves a few requests of each
	// tenant, more in some hours than others, from several goroutines.
	for step := 0; c.Now().Before(time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)); step++ {
		now := c.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i, q := range reps {
			for tenant, loc := range locs {
				n := 5 + (step*7+i*3)%23
				wg.Add(1)
				go func() {
					defer wg.Done()
					admitted := int64(0)
					for range n {
						if q.Admit(tenant, 1).Allowed {
							admitted++
						}
					}
					if admitted != int64(n) {
						t.Errorf("replica %d admitted %d of %d requests of %s", i, admitted, n, tenant)
					}
					mu.Lock()
					want[tenant][now.In(loc).Format(limiter.DayLayout)] += admitted
					mu.Unlock()
				}()
			}
		}
		wg.Wait()
		c.Set(now.Add(47 * time.Minute))
	}
	// Before the leases are returned, other replicas' unused tokens count
	// as used on their day, as they do in the month's usage.
	ctx := context.Background()
	for tenant := range locs {
		d, err := reps[0].Daily(ctx, tenant, "2026-11-28", "2026-12-02")
		if err != nil {
			t.Fatal(err)
		}
		u, err := reps[0].Usage(ctx, tenant)
		if err != nil {
			t.Fatal(err)
		}
		// Not asserted: a day's addition follows its month's, and the
		// midnight moves are queued, so the two may differ for a moment.
		t.Logf("%s before settling: December's days add up to %d, its usage is %d", tenant, sumMonth(d, "2026-12"), u.Used)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for i, q := range reps {
		stops[i]()
		if err := q.Close(cctx); err != nil {
			t.Fatalf("replica %d: close: %v", i, err)
		}
	}
	probe := limiter.NewQuotas(limiter.QuotaOptions{Ledger: s.Ledger, Limits: l.get, Now: c.Now, ReplicaID: "probe"})
	for tenant := range locs {
		d, err := probe.Daily(ctx, tenant, "2026-11-27", "2026-12-03")
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Days) != 7 || d.Days[0].Date != "2026-11-27" || d.Days[6].Date != "2026-12-03" {
			t.Fatalf("%s: days %+v: want every day from 27 November to 3 December", tenant, d.Days)
		}
		for _, day := range d.Days {
			if day.Used != want[tenant][day.Date] {
				t.Errorf("%s on %s: history says %d, %d were admitted", tenant, day.Date, day.Used, want[tenant][day.Date])
			}
		}
		for _, month := range []string{"2026-11", "2026-12"} {
			total, err := s.Ledger.Total(ctx, tenant, month)
			if err != nil {
				t.Fatal(err)
			}
			if got := sumMonth(d, month); got != total || total == 0 {
				t.Errorf("%s: the days of %s add up to %d, the month's ledger total is %d", tenant, month, got, total)
			}
		}
		t.Logf("%s: %+v", tenant, d.Days)
	}
}

func sumMonth(d limiter.DailyUsage, month string) int64 {
	var n int64
	for _, day := range d.Days {
		if day.Date[:7] == month {
			n += day.Used
		}
	}
	return n
}

// TestDailyRange: Daily's bounds are checked and name the field at fault.
func TestDailyRange(t *testing.T) {
	s := storetest.Open(t)
	c := &clock{t: time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)}
	l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: 100}}}
	q := limiter.NewQuotas(limiter.QuotaOptions{Ledger: s.Ledger, Limits: l.get, Now: c.Now, ReplicaID: "a"})
	ctx := context.Background()
	d, err := q.Daily(ctx, "acme", "", "")
	if err != nil {
		t.Fatal(err)
	}
	// The default: from the first day of the previous period to today.
	if d.From != "2026-10-01" || d.To != "2026-11-10" || len(d.Days) != 41 {
		t.Errorf("default range %s..%s with %d days", d.From, d.To, len(d.Days))
	}
	for _, tc := range []struct{ from, to, field string }{
		{"2026-13-01", "2026-11-30", "from"},
		{"2026-11-01", "30.11.2026", "to"},
		{"2026-11-30", "2026-11-01", "to"},
		{"2025-01-01", "2026-11-30", "from"},
	} {
		_, err := q.Daily(ctx, "acme", tc.from, tc.to)
		var re *limiter.RangeError
		if !asRange(err, &re) || re.Field != tc.field {
			t.Errorf("Daily(%s, %s) = %v: want a RangeError naming %s", tc.from, tc.to, err, tc.field)
		}
	}
	if _, err := q.Daily(ctx, "nobody", "", ""); err != limiter.ErrUnknownTenant {
		t.Errorf("unknown tenant: %v", err)
	}
	var _ limiter.DayLedger = (*store.Ledger)(nil)
}

func asRange(err error, re **limiter.RangeError) bool {
	r, ok := err.(*limiter.RangeError)
	if ok {
		*re = r
	}
	return ok
}
