package limiter_test

// The limiter's logic over ledgertest's in-memory ledger, without NATS:
// admission, lease sizing, exhaustion at the limit, refunds, period
// rollover and ledger faults. No background loop runs unless a test starts
// one, so every lease is reserved on the request path, in order, on an
// injected clock: what these tests see is deterministic.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/limiter"
	"github.com/tollgate/tollgate/limiter/ledgertest"
)

// The in-memory ledger keeps the contract the NATS ledger keeps
// (internal/store's TestLedgerContract), and so does the function-field
// fake wrapped around it.
func TestLedgerContract(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) limiter.Ledger
	}{
		{"memory", func(*testing.T) limiter.Ledger { return &ledgertest.Memory{} }},
		{"function fields over memory", func(*testing.T) limiter.Ledger { return ledgertest.Wrap(&ledgertest.Memory{}) }},
	} {
		t.Run(tc.name, func(t *testing.T) { ledgertest.Run(t, tc.open) })
	}
}

// The in-memory ledger forgets a message id when its duplicate window
// ends, as NATS does: why the limiter stops re-sending before then.
func TestMemoryLedgerForgetsIDsAfterWindow(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)}
	m := &ledgertest.Memory{Now: c.Now, Window: time.Minute}
	ctx := context.Background()
	start := c.Now()
	for _, tc := range []struct {
		after     time.Duration
		total     int64
		duplicate bool
	}{
		{0, 5, false},
		{time.Minute - time.Nanosecond, 5, true},
		{time.Minute, 10, false}, // forgotten: applied again
		{time.Minute + time.Second, 10, true},
	} {
		c.Set(start.Add(tc.after))
		total, dup, err := m.Add(ctx, "acme", "2026-11", 5, "a")
		if err != nil || total != tc.total || dup != tc.duplicate {
			t.Errorf("re-sent %v after the first: %d, dup %v, %v; want %d, dup %v", tc.after, total, dup, err, tc.total, tc.duplicate)
		}
	}
}

// fakeQuotas returns a Quotas over ledger with no background loop, closed
// (its unused tokens returned) when the test ends unless closeQuotas ran.
func fakeQuotas(t *testing.T, o limiter.QuotaOptions) *limiter.Quotas {
	t.Helper()
	if o.ReplicaID == "" {
		o.ReplicaID = "r"
	}
	if o.LeaseIdle == 0 {
		o.LeaseIdle = time.Hour
	}
	q := limiter.NewQuotas(o)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = q.Close(ctx) // a second Close finds nothing to return
	})
	return q
}

// closeQuotas returns q's unused tokens and sends what is queued.
func closeQuotas(t *testing.T, q *limiter.Quotas) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := q.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
}

func memTotal(t *testing.T, m *ledgertest.Memory, tenant, period string) int64 {
	t.Helper()
	v, err := m.Total(context.Background(), tenant, period)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestAdmitFake: admission spends exactly the limit, whatever the lease
// and the cost; Remaining is exact on one replica; once the replica
// closes, the ledger holds what was admitted.
func TestAdmitFake(t *testing.T) {
	for _, tc := range []struct {
		name         string
		tenant       string
		limit        limiter.Limit
		maxLease     int64
		cost         int64
		offered      int
		wantAdmitted int
		wantErr      error // of every refusal
	}{
		{name: "exact at the limit", limit: limiter.Limit{Monthly: 137}, maxLease: 10, cost: 1, offered: 300, wantAdmitted: 137},
		{name: "several tokens a request", limit: limiter.Limit{Monthly: 100}, maxLease: 10, cost: 7, offered: 30, wantAdmitted: 14},
		{name: "lease larger than the limit", limit: limiter.Limit{Monthly: 5}, maxLease: 100, cost: 1, offered: 20, wantAdmitted: 5},
		{name: "big lease near a big limit", limit: limiter.Limit{Monthly: 20_000}, maxLease: 10_000, cost: 1, offered: 25_000, wantAdmitted: 20_000},
		{name: "unlimited", limit: limiter.Limit{Monthly: 0}, maxLease: 10, cost: 1, offered: 50, wantAdmitted: 50},
		{name: "unknown tenant", tenant: "ghost", limit: limiter.Limit{Monthly: 10}, maxLease: 10, cost: 1, offered: 5, wantErr: limiter.ErrUnknownTenant},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &ledgertest.Memory{}
			l := &limits{m: map[string]limiter.Limit{"acme": tc.limit}}
			q := fakeQuotas(t, limiter.QuotaOptions{Ledger: m, Limits: l.get, MaxLease: tc.maxLease})
			tenant := tc.tenant
			if tenant == "" {
				tenant = "acme"
			}
			admitted := 0
			for i := 0; i < tc.offered; i++ {
				d := q.Admit(tenant, tc.cost)
				if !d.Allowed {
					if d.Err != tc.wantErr {
						t.Fatalf("request %d refused with %v, want %v", i, d.Err, tc.wantErr)
					}
					if tc.wantErr == nil && (d.Limit != tc.limit.Monthly || d.Remaining != tc.limit.Monthly-int64(admitted)*tc.cost) {
						t.Fatalf("refusal %d says limit %d remaining %d; want %d, %d", i, d.Limit, d.Remaining,
							tc.limit.Monthly, tc.limit.Monthly-int64(admitted)*tc.cost)
					}
					continue
				}
				admitted++
				switch {
				case tc.limit.Monthly == 0:
					if !d.Unlimited {
						t.Fatalf("request %d: %+v, want unlimited", i, d)
					}
				case d.Remaining != tc.limit.Monthly-int64(admitted)*tc.cost:
					t.Fatalf("after %d admitted, Remaining = %d, want %d", admitted, d.Remaining, tc.limit.Monthly-int64(admitted)*tc.cost)
				}
			}
			if admitted != tc.wantAdmitted {
				t.Errorf("admitted %d of %d, want %d", admitted, tc.offered, tc.wantAdmitted)
			}
			closeQuotas(t, q)
			period := limiter.PeriodAt(time.Now(), time.UTC, 0).Key
			if got, want := memTotal(t, m, tenant, period), int64(admitted)*tc.cost; got != want {
				t.Errorf("ledger %d after close, want the %d tokens admitted", got, want)
			}
			if tc.wantErr == limiter.ErrUnknownTenant && m.Adds() != 0 {
				t.Errorf("%d ledger additions for an unknown tenant, want none", m.Adds())
			}
		})
	}
}

// TestLeaseSizingFake: a tenant's first lease is 10 tokens (or max_lease);
// each next one is sized to LeaseHorizon of the rate over the last, at most
// four times the last and at most the lease cap (max_lease, and a
// thousandth of the limit unless that is under 1,000 tokens). The clock
// stands still unless a step moves it, and then the rate is what was
// spent over that time.
func TestLeaseSizingFake(t *testing.T) {
	type step struct {
		advance time.Duration // before admitting
		admit   int
	}
	for _, tc := range []struct {
		name     string
		monthly  int64
		maxLease int64
		horizon  time.Duration
		steps    []step
		want     []int64 // the reservations, in order
	}{
		{name: "first lease", monthly: 1_000_000, maxLease: 100, steps: []step{{0, 1}}, want: []int64{10}},
		{name: "first lease under max_lease", monthly: 1_000_000, maxLease: 4, steps: []step{{0, 1}}, want: []int64{4}},
		{name: "fourfold growth up to max_lease", monthly: 1_000_000_000, maxLease: 10_000, steps: []step{{0, 3411}},
			want: []int64{10, 40, 160, 640, 2560, 10_000}},
		{name: "a thousandth of the limit", monthly: 5_000_000, maxLease: 10_000, steps: []step{{0, 3411}},
			want: []int64{10, 40, 160, 640, 2560, 5000}},
		{name: "the floor of 1,000 tokens", monthly: 300_000, maxLease: 10_000, steps: []step{{0, 851}},
			want: []int64{10, 40, 160, 640, 1000}},
		{name: "horizon of a speeding tenant", monthly: 1_000_000_000, maxLease: 10_000, horizon: 2 * time.Second,
			// Each lease spent in a second: the next holds two seconds' worth.
			steps: []step{{0, 10}, {time.Second, 20}, {time.Second, 40}, {time.Second, 1}},
			want:  []int64{10, 20, 40, 80}},
		{name: "horizon of a slowing tenant", monthly: 1_000_000_000, maxLease: 10_000, horizon: 2 * time.Second,
			// Each lease spent in four seconds: the next holds half of it.
			steps: []step{{0, 10}, {4 * time.Second, 5}, {4 * time.Second, 2}, {4 * time.Second, 1}, {4 * time.Second, 1}},
			want:  []int64{10, 5, 2, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)}
			m := &ledgertest.Memory{Now: c.Now}
			var reservations []int64
			f := ledgertest.Wrap(m)
			f.AddFunc = func(ctx context.Context, tenant, period string, delta int64, id string) (int64, bool, error) {
				if delta > 0 {
					reservations = append(reservations, delta)
				}
				return m.Add(ctx, tenant, period, delta, id)
			}
			l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: tc.monthly}}}
			q := fakeQuotas(t, limiter.QuotaOptions{Ledger: f, Limits: l.get, Now: c.Now, MaxLease: tc.maxLease, LeaseHorizon: tc.horizon})
			for _, s := range tc.steps {
				c.Set(c.Now().Add(s.advance))
				for i := 0; i < s.admit; i++ {
					if !q.Admit("acme", 1).Allowed {
						t.Fatal("refused")
					}
				}
			}
			if !slices.Equal(reservations, tc.want) {
				t.Errorf("reservations %v, want %v", reservations, tc.want)
			}
		})
	}
}

// TestExhaustionFake: near the limit each reservation takes at most a
// quarter of what the ledger has left (at least one token), so that
// replicas share the last tokens; the limit is reached exactly, and the
// one reservation past it is refunded at once.
func TestExhaustionFake(t *testing.T) {
	for _, tc := range []struct {
		name     string
		monthly  int64
		maxLease int64
		replicas int
	}{
		{"one replica", 100, 100, 1},
		{"three replicas in turn", 1000, 100, 3},
		{"max_lease above the limit", 50, 1000, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &ledgertest.Memory{}
			f := ledgertest.Wrap(m)
			var mu sync.Mutex // serialises the check and the addition
			f.AddFunc = func(ctx context.Context, tenant, period string, delta int64, id string) (int64, bool, error) {
				mu.Lock()
				defer mu.Unlock()
				if delta > 0 {
					before, _ := m.Total(ctx, tenant, period)
					// One replica's view of the ledger is the ledger; others'
					// reservations make a replica's view older.
					if left := tc.monthly - before; tc.replicas == 1 && left > 0 && delta > max(left/4, 1) {
						t.Errorf("reserved %d with %d left, more than a quarter", delta, left)
					}
				}
				return m.Add(ctx, tenant, period, delta, id)
			}
			l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: tc.monthly}}}
			var qs []*limiter.Quotas
			for i := 0; i < tc.replicas; i++ {
				qs = append(qs, fakeQuotas(t, limiter.QuotaOptions{Ledger: f, Limits: l.get, MaxLease: tc.maxLease, ReplicaID: fmt.Sprint("r", i)}))
			}
			admitted := int64(0)
			for i := 0; admitted < tc.monthly+10 && i < 10*int(tc.monthly); i++ {
				if qs[i%len(qs)].Admit("acme", 1).Allowed {
					admitted++
				}
			}
			for _, q := range qs {
				if q.Admit("acme", 1).Allowed {
					admitted++
				}
			}
			period := limiter.PeriodAt(time.Now(), time.UTC, 0).Key
			// Every lease is spent and nothing is queued: what went past
			// the limit was refunded at once.
			if total := memTotal(t, m, "acme", period); total != tc.monthly {
				t.Errorf("ledger %d once every replica refused, want the limit %d", total, tc.monthly)
			}
			for _, q := range qs {
				closeQuotas(t, q)
			}
			if total := memTotal(t, m, "acme", period); admitted > tc.monthly || total != admitted {
				t.Errorf("admitted %d of %d; ledger %d", admitted, tc.monthly, total)
			}
			// Every replica asks the ledger before refusing: once all have,
			// none holds a token the others could have spent.
			if admitted != tc.monthly {
				t.Errorf("admitted %d, want exactly %d", admitted, tc.monthly)
			}
		})
	}
}

// TestRefundFake: Quotas.Refund puts an admitted request's tokens back in
// the lease, in the period it was admitted in; a refusal, an unlimited
// admission or a decision of a period that has ended gives nothing back.
func TestRefundFake(t *testing.T) {
	jan := time.Date(2027, 1, 31, 23, 59, 0, 0, time.UTC)
	feb := time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)
	const cost = 3
	for _, tc := range []struct {
		name    string
		monthly int64
		of      string // the decision refunded: "admitted", "refused", "last period", "unlimited"
		// wantMore is how many more requests are admitted after the
		// refund; wantJan and wantFeb the ledger totals after Close.
		wantMore         int64
		wantJan, wantFeb int64
	}{
		{name: "admitted request", monthly: 12, of: "admitted", wantMore: 1, wantJan: 12},
		{name: "refused request", monthly: 12, of: "refused", wantMore: 0, wantJan: 12},
		{name: "request of the last period", monthly: 12, of: "last period", wantMore: 3, wantJan: 12, wantFeb: 12},
		{name: "unlimited request", monthly: 0, of: "unlimited", wantJan: 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: jan}
			m := &ledgertest.Memory{Now: c.Now}
			l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: tc.monthly}}}
			q := fakeQuotas(t, limiter.QuotaOptions{Ledger: m, Limits: l.get, Now: c.Now, MaxLease: 4})
			var last limiter.Decision
			for i := 0; i < 4; i++ {
				if last = q.Admit("acme", cost); !last.Allowed {
					t.Fatalf("request %d refused", i)
				}
			}
			switch tc.of {
			case "refused":
				if last = q.Admit("acme", cost); last.Allowed {
					t.Fatal("admitted past the limit")
				}
			case "last period":
				c.Set(feb)
				if !q.Admit("acme", cost).Allowed { // the first of february
					t.Fatal("refused in a new period")
				}
			}
			q.Refund("acme", cost, last)
			more := int64(0)
			for tc.monthly > 0 && q.Admit("acme", cost).Allowed {
				more++
			}
			if more != tc.wantMore {
				t.Errorf("%d more admitted after the refund, want %d", more, tc.wantMore)
			}
			closeQuotas(t, q)
			if got := memTotal(t, m, "acme", "2027-01"); got != tc.wantJan {
				t.Errorf("january ledger %d, want %d", got, tc.wantJan)
			}
			if got := memTotal(t, m, "acme", "2027-02"); got != tc.wantFeb {
				t.Errorf("february ledger %d, want %d", got, tc.wantFeb)
			}
		})
	}
}

// TestRolloverFake: when the clock passes the end of a tenant's period,
// the next request starts a fresh one (calendar month, the tenant's own
// anchor day, its time zone) with a Reset counting to its end, and the
// unused tokens of the old period's lease are returned to it.
func TestRolloverFake(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	const day = 24 * 3600
	for _, tc := range []struct {
		name           string
		limit          limiter.Limit
		before, after  time.Time // a minute before the period ends, and its end
		oldKey, newKey string
		resetAfter     int64 // seconds from the new period's start to its end
	}{
		{name: "calendar month", limit: limiter.Limit{Monthly: 10},
			before: time.Date(2027, 1, 31, 23, 59, 0, 0, time.UTC), after: time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC),
			oldKey: "2027-01", newKey: "2027-02", resetAfter: 28 * day},
		{name: "anchored on the 15th", limit: limiter.Limit{Monthly: 10, Anchor: 15},
			before: time.Date(2026, 11, 14, 23, 59, 0, 0, time.UTC), after: time.Date(2026, 11, 15, 0, 0, 0, 0, time.UTC),
			oldKey: "2026-10-15", newKey: "2026-11-15", resetAfter: 30 * day},
		{name: "the tenant's time zone", limit: limiter.Limit{Monthly: 10, Location: berlin},
			before: time.Date(2027, 1, 31, 22, 59, 0, 0, time.UTC), after: time.Date(2027, 1, 31, 23, 0, 0, 0, time.UTC),
			oldKey: "2027-01", newKey: "2027-02", resetAfter: 28 * day},
		{name: "anchor past the month's end", limit: limiter.Limit{Monthly: 10, Anchor: 31},
			before: time.Date(2027, 2, 27, 23, 59, 0, 0, time.UTC), after: time.Date(2027, 2, 28, 0, 0, 0, 0, time.UTC),
			oldKey: "2027-01-31", newKey: "2027-02-28", resetAfter: 31 * day},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: tc.before}
			m := &ledgertest.Memory{Now: c.Now}
			l := &limits{m: map[string]limiter.Limit{"acme": tc.limit}}
			q := fakeQuotas(t, limiter.QuotaOptions{Ledger: m, Limits: l.get, Now: c.Now, MaxLease: 4})
			for i := 0; i < 3; i++ {
				if d := q.Admit("acme", 1); !d.Allowed || d.Reset != 60 {
					t.Fatalf("request %d before the end: %+v, want allowed with reset 60", i, d)
				}
			}
			c.Set(tc.after)
			n := int64(0)
			var d limiter.Decision
			for d = q.Admit("acme", 1); d.Allowed; d = q.Admit("acme", 1) {
				n++
			}
			if n != tc.limit.Monthly || d.Reset != tc.resetAfter {
				t.Errorf("new period: %d admitted, reset %d; want %d, %d", n, d.Reset, tc.limit.Monthly, tc.resetAfter)
			}
			closeQuotas(t, q)
			if got := memTotal(t, m, "acme", tc.oldKey); got != 3 {
				t.Errorf("ledger of %s: %d, want the 3 admitted (the unused lease returned)", tc.oldKey, got)
			}
			if got := memTotal(t, m, "acme", tc.newKey); got != tc.limit.Monthly {
				t.Errorf("ledger of %s: %d, want %d", tc.newKey, got, tc.limit.Monthly)
			}
		})
	}
}

var errDown = errors.New("test: ledger down")

// TestLedgerFaultsFake: while the ledger fails, a request that needs a
// lease is refused as unavailable (or admitted on the open policy's
// allowance); a reservation whose outcome is unknown is settled once the
// ledger is back (re-sent under its id, then refunded), so the ledger
// holds exactly what was admitted, whether the failed additions were
// applied (answers lost) or not.
func TestLedgerFaultsFake(t *testing.T) {
	for _, tc := range []struct {
		name      string
		applied   bool // failed additions were applied, their answers lost
		policy    limiter.Policy
		allowance int64
		wantOpen  int // admitted during the outage
	}{
		{name: "dropped, lease policy", policy: limiter.PolicyLease},
		{name: "answers lost, lease policy", applied: true, policy: limiter.PolicyLease},
		{name: "dropped, open policy", policy: limiter.PolicyOpen, allowance: 5, wantOpen: 5},
		{name: "answers lost, open policy", applied: true, policy: limiter.PolicyOpen, allowance: 5, wantOpen: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &ledgertest.Memory{}
			var down atomic.Bool
			f := ledgertest.Wrap(m)
			f.AddFunc = func(ctx context.Context, tenant, period string, delta int64, id string) (int64, bool, error) {
				if down.Load() {
					if tc.applied {
						_, _, _ = m.Add(ctx, tenant, period, delta, id)
					}
					return 0, false, errDown
				}
				return m.Add(ctx, tenant, period, delta, id)
			}
			l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: 1000, Policy: tc.policy, OpenAllowance: tc.allowance}}}
			q := fakeQuotas(t, limiter.QuotaOptions{Ledger: f, Limits: l.get, MaxLease: 10, Timeout: 20 * time.Millisecond})
			admitted := 0
			for i := 0; i < 10; i++ { // the first lease, spent
				if q.Admit("acme", 1).Allowed {
					admitted++
				}
			}
			down.Store(true)
			open := 0
			for i := 0; i < 10; i++ {
				d := q.Admit("acme", 1)
				switch {
				case d.Allowed && d.Open:
					open++
				case d.Allowed:
					t.Fatalf("request %d admitted during the outage without a lease", i)
				case d.Err != limiter.ErrUnavailable:
					t.Fatalf("request %d refused with %v, want ErrUnavailable", i, d.Err)
				}
			}
			if open != tc.wantOpen {
				t.Errorf("%d admitted on the open allowance, want %d", open, tc.wantOpen)
			}
			if q.Pending() == 0 {
				t.Error("nothing queued to settle the failed reservation")
			}
			down.Store(false)
			for i := 0; i < 20; i++ {
				if q.Admit("acme", 1).Allowed {
					admitted++
				}
			}
			closeQuotas(t, q)
			period := limiter.PeriodAt(time.Now(), time.UTC, 0).Key
			if got, want := memTotal(t, m, "acme", period), int64(admitted+open); got != want || admitted != 30 {
				t.Errorf("ledger %d with %d admitted (%d on the open allowance), want %d and 30 admitted outside the outage",
					got, admitted+open, open, want)
			}
		})
	}
}

// TestExactAcrossReplicasFake is TestQuotaExactAcrossReplicas over the
// in-memory ledger: three replicas with their background loops and 64
// clients between them never admit more than the limit, and exactly the
// limit once leases are returned.
func TestExactAcrossReplicasFake(t *testing.T) {
	const limit, offered, clients = 10000, 30000, 64
	m := &ledgertest.Memory{}
	l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: limit}}}
	var qs []*limiter.Quotas
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); wg.Wait() }()
	for i := 0; i < 3; i++ {
		q := fakeQuotas(t, limiter.QuotaOptions{Ledger: m, Limits: l.get, MaxLease: 100, ReplicaID: fmt.Sprint("r", i)})
		qs = append(qs, q)
		wg.Add(1)
		go func() { defer wg.Done(); _ = q.Run(ctx) }()
	}
	var admitted, sent atomic.Int64
	var cwg sync.WaitGroup
	for c := 0; c < clients; c++ {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			q := qs[c%len(qs)]
			for sent.Add(1) <= offered {
				if d := q.Admit("acme", 1); d.Err != nil {
					t.Errorf("admit: %v", d.Err)
					return
				} else if d.Allowed && admitted.Add(1) > limit {
					t.Errorf("admitted past the limit of %d", limit)
				}
			}
		}()
	}
	cwg.Wait()
	during := admitted.Load()
	for _, q := range qs {
		closeQuotas(t, q)
	}
	period := limiter.PeriodAt(time.Now(), time.UTC, 0).Key
	if total := memTotal(t, m, "acme", period); total != during {
		t.Errorf("ledger %d after the leases were returned, admitted %d", total, during)
	}
	late := fakeQuotas(t, limiter.QuotaOptions{Ledger: m, Limits: l.get, MaxLease: 100, ReplicaID: "late"})
	for late.Admit("acme", 1).Allowed {
		admitted.Add(1)
	}
	if got := admitted.Load(); got != limit {
		t.Errorf("admitted %d in all (%d under load), want exactly %d", got, during, limit)
	}
}

// ledgerNeverCalled is a Ledger that fails the test when used.
func ledgerNeverCalled(t *testing.T) *ledgertest.Ledger {
	return &ledgertest.Ledger{
		AddFunc: func(context.Context, string, string, int64, string) (int64, bool, error) {
			t.Error("ledger Add called")
			return 0, false, errDown
		},
		TotalFunc: func(context.Context, string, string) (int64, error) { return 0, nil },
	}
}

// Rate and concurrency refusals come before the quota and cost it
// nothing: AdmitRequest never asks the ledger for them.
func TestRefusalsBeforeQuotaFake(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limit  limiter.Limit
		reason limiter.Reason
	}{
		{"rate", limiter.Limit{Monthly: 100, Rate: limiter.Rate{Requests: 1, Per: time.Hour, Burst: 1}}, limiter.ReasonRate},
		{"concurrency", limiter.Limit{Monthly: 100, Concurrency: 1}, limiter.ReasonConcurrency},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &ledgertest.Memory{}
			f := ledgertest.Wrap(m)
			l := &limits{m: map[string]limiter.Limit{"acme": tc.limit}}
			q := fakeQuotas(t, limiter.QuotaOptions{Ledger: f, Limits: l.get, MaxLease: 10})
			if d := q.AdmitRequest("acme", "key", 1, limiter.ModePlan); !d.Allowed {
				t.Fatalf("first request refused: %+v", d)
			}
			f.AddFunc = ledgerNeverCalled(t).AddFunc
			for i := 0; i < 20; i++ {
				if d := q.AdmitRequest("acme", "key", 1, limiter.ModePlan); d.Allowed || d.Reason != tc.reason {
					t.Fatalf("request %d: %+v, want refused for reason %v", i, d, tc.reason)
				}
			}
			f.AddFunc = m.Add
			if d := q.Admit("acme", 1); !d.Allowed || d.Remaining != 98 {
				t.Errorf("quota after the refusals: %+v, want 98 remaining (none spent by them)", d)
			}
		})
	}
}
