package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/tollgate/tollgate/limiter"
)

// closeTenants is the number of tenants of the Close tests;
// TOLLGATE_CLOSE_TENANTS overrides it for measurements.
func closeTenants(def int) int {
	if v, err := strconv.Atoi(os.Getenv("TOLLGATE_CLOSE_TENANTS")); err == nil && v > 0 {
		return v
	}
	return def
}

// parallel runs f(i) for i in [0, n) on 32 goroutines.
func parallel(n int, f func(i int)) { limiter.Workers(n, 32, f) }

// holdLeases makes n tenants each hold a lease with a record on q: tenant
// i is admitted 11 + i%3 times (a tenant's first lease, of 10 tokens, has
// no record). It returns what was admitted per tenant.
func holdLeases(t *testing.T, q *limiter.Quotas, n int) []int64 {
	t.Helper()
	admitted := make([]int64, n)
	var refused atomic.Int64
	parallel(n, func(i int) {
		for k := 0; k <= 10+i%3; k++ {
			if q.Admit(tenantName(i), 1).Allowed {
				admitted[i]++
			} else {
				refused.Add(1)
			}
		}
	})
	if r := refused.Load(); r > 0 {
		t.Fatalf("%d admissions refused while setting up", r)
	}
	return admitted
}

func tenantName(i int) string { return "t" + strconv.Itoa(i) }

func manyTenants(n int, monthly int64) *limits {
	l := &limits{m: make(map[string]limiter.Limit, n)}
	for i := 0; i < n; i++ {
		l.m[tenantName(i)] = limiter.Limit{Monthly: monthly}
	}
	return l
}

// ledgerTotals reads every tenant's ledger total.
func ledgerTotals(t *testing.T, s *store.Store, n int, period string) []int64 {
	t.Helper()
	totals := make([]int64, n)
	var failed atomic.Int64
	parallel(n, func(i int) {
		v, err := s.Ledger.Total(context.Background(), tenantName(i), period)
		if err != nil {
			failed.Add(1)
		}
		totals[i] = v
	})
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d ledger totals unreadable", f)
	}
	return totals
}

// records returns the lease records left in the book, by tenant.
func records(t *testing.T, s *store.Store) map[string]limiter.ExpiredLease {
	t.Helper()
	recs, err := s.Leases().Expired(context.Background(), time.Now().Add(1000*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]limiter.ExpiredLease, len(recs))
	for _, r := range recs {
		m[r.Tenant] = r
	}
	return m
}

// onlyLedger and onlyBook hide the batch methods of what they wrap, so
// that Close returns leases one tenant at a time.
type onlyLedger struct{ limiter.Ledger }
type onlyBook struct{ limiter.LeaseBook }

// TestCloseReturnsManyLeases: a replica holding leases (with records) for
// thousands of tenants returns every unused token and deletes every record
// on Close, well within the shutdown timeout; the ledger then holds
// exactly what was admitted. With atomic batches, and one tenant at a
// time (a store without them).
func TestCloseReturnsManyLeases(t *testing.T) {
	t.Run("batches", func(t *testing.T) { closeMany(t, closeTenants(5000), true) })
	t.Run("one by one", func(t *testing.T) { closeMany(t, closeTenants(5000)/10, false) })
}

func closeMany(t *testing.T, n int, batches bool) {
	s := storetest.OpenSync(t)
	l := manyTenants(n, 1_000_000)
	o := limiter.QuotaOptions{Ledger: s.Ledger, Leases: s.Leases(), Limits: l.get,
		MaxLease: 1000, ReplicaID: "r", LeaseIdle: time.Hour}
	if !batches {
		o.Ledger, o.Leases = onlyLedger{s.Ledger}, onlyBook{s.Leases()}
	}
	q := limiter.NewQuotas(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = q.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	start := time.Now()
	admitted := holdLeases(t, q, n)
	setup := time.Since(start)
	period := limiter.PeriodAt(time.Now(), time.UTC, 0).Key
	before := ledgerTotals(t, s, n, period)
	var held int64
	for i := range before {
		held += before[i] - admitted[i]
	}
	if held == 0 {
		t.Fatal("no tokens held: the test proves nothing")
	}
	ops, recs := q.LedgerOps(), q.RecordOps()

	cctx, ccancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer ccancel()
	start = time.Now()
	err := q.Close(cctx)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("close: %v", err)
	}
	after := ledgerTotals(t, s, n, period)
	var wrong int
	for i := range after {
		if after[i] != admitted[i] {
			if wrong++; wrong <= 5 {
				t.Errorf("tenant %d: ledger %d after close, admitted %d", i, after[i], admitted[i])
			}
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d tenants: ledger ≠ admitted after close", wrong, n)
	}
	if left := records(t, s); len(left) != 0 {
		t.Errorf("%d lease records left after close", len(left))
	}
	t.Logf("%d tenants held %d unused tokens (setup %v); Close returned them in %v with %d ledger operations and %d record writes",
		n, held, setup.Round(time.Millisecond), took.Round(time.Millisecond), q.LedgerOps()-ops, q.RecordOps()-recs)
}

// TestCloseStopsAtDeadline: when Close runs out of time it returns at
// once, starts no more work, and every token it did not return is still
// covered by a lease record: once the records expire, another replica
// returns them, and then the ledger holds what was admitted plus at most
// the part of each untouched lease that its record allowed to be spent
// (the crash bound), never less than what was admitted.
//
// The deadline passes at a fixed point of Close's work, not after a fixed
// time: when the first batch of record deletes is sent (which lands
// anyway, as a write in the air at the deadline may). A wall-clock budget
// raced the machine: on a fast one Close returned all 5,000 tenants within
// 150 ms, or started every chunk before the deadline, and the test failed
// for proving nothing; on a slow one it could overrun the budget's margin.
// Now, however fast the machine, the chunks under way at the deadline are
// the only ones touched: every worker is inside its first chunk, since
// none can finish one before sending its deletes.
func TestCloseStopsAtDeadline(t *testing.T) {
	n := closeTenants(5000)
	if busy := limiter.CloseBatchWorkers * limiter.CloseChunk; n <= busy {
		t.Skipf("%d tenants: Close may be under way on all of them at once (%d); the test needs more", n, busy)
	}
	s := storetest.OpenSync(t)
	c := &clock{t: time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)}
	l := manyTenants(n, 1_000_000)
	const ttl = 10 * time.Second
	cctx, ccancel := context.WithCancel(context.Background())
	defer ccancel()
	book := &deadlineBook{LeaseBook: s.Leases(), cancel: ccancel}
	q := limiter.NewQuotas(limiter.QuotaOptions{Ledger: s.Ledger, Leases: book, Limits: l.get, Now: c.Now,
		MaxLease: 1000, ReplicaID: "victim", LeaseIdle: time.Hour, LeaseTTL: ttl})
	admitted := holdLeases(t, q, n)
	period := "2026-11"
	before := ledgerTotals(t, s, n, period)
	recsBefore := records(t, s)
	if len(recsBefore) != n {
		t.Fatalf("%d lease records for %d tenants", len(recsBefore), n)
	}

	err := q.Close(cctx)
	returnedAt := time.Now()
	if err == nil {
		t.Fatalf("close of %d tenants past its deadline reported no error", n)
	}
	if !book.fired.Load() {
		t.Fatal("Close sent no batch of deletes: the deadline never passed")
	}
	// Nothing is left to wait for at the deadline but the writes in the
	// air, which end with it: a generous bound, against a hang.
	if late := returnedAt.Sub(book.at); late > 2*time.Second {
		t.Errorf("close returned %v after its deadline", late)
	}

	after := ledgerTotals(t, s, n, period)
	left := records(t, s)
	var returned, untouched, inFlight int
	var stranded int64
	for i := 0; i < n; i++ {
		rec, ok := left[tenantName(i)]
		switch {
		case after[i] < admitted[i]:
			t.Fatalf("tenant %d: ledger %d below admitted %d: over-admission", i, after[i], admitted[i])
		case !ok:
			// Retired: everything returned, record deleted.
			if after[i] != admitted[i] {
				t.Fatalf("tenant %d: record deleted but ledger %d ≠ admitted %d", i, after[i], admitted[i])
			}
			returned++
		case rec.Record == recsBefore[tenantName(i)].Record && after[i] == before[i]:
			untouched++
			stranded += rec.Record.SpentMax - admitted[i]
		default:
			// Caught in the middle: the record must still cover every
			// token not returned.
			if rec.Record.SpentMax != admitted[i] || rec.Record.Reserved != before[i] || rec.Record.ReturnID == "" {
				t.Fatalf("tenant %d: record %+v left mid-return (ledger %d → %d, admitted %d)",
					i, rec.Record, before[i], after[i], admitted[i])
			}
			inFlight++
		}
	}
	t.Logf("close stopped %v after its deadline: %d tenants returned, %d in flight, %d untouched",
		returnedAt.Sub(book.at).Round(time.Millisecond), returned, inFlight, untouched)
	if returned == 0 {
		t.Error("no tenant returned: the batch of deletes under way at the deadline was lost")
	}
	if busy := limiter.CloseBatchWorkers * limiter.CloseChunk; untouched < n-busy {
		t.Errorf("%d tenants untouched, want at least %d: Close started chunks after its deadline", untouched, n-busy)
	}

	// The victim is gone. Past the records' expiry a survivor sweeps them.
	c.Set(c.Now().Add(ttl + time.Second))
	sweepAll(t, s, c, l.get, ttl, 120*time.Second)
	final := ledgerTotals(t, s, n, period)
	var over int64
	for i := 0; i < n; i++ {
		if final[i] < admitted[i] {
			t.Fatalf("tenant %d: ledger %d below admitted %d after the sweep: returned twice", i, final[i], admitted[i])
		}
		over += final[i] - admitted[i]
	}
	if over != stranded {
		t.Errorf("after the sweep the ledger holds %d more than admitted; the untouched records' bounds strand %d", over, stranded)
	}
	t.Logf("after the sweep: %d tokens stranded over %d untouched tenants (their records' spending bounds), none lost, none twice", over, untouched)
}

// deadlineBook is the real lease book whose first batch of deletes ends
// Close's context (its deadline passes) and is then stored all the same,
// as a write already sent would be.
type deadlineBook struct {
	*store.LeaseBook
	cancel context.CancelFunc
	once   sync.Once
	fired  atomic.Bool
	at     time.Time // when the deadline passed
}

func (b *deadlineBook) DeleteAll(ctx context.Context, w []limiter.LeaseWrite) error {
	first := false
	b.once.Do(func() {
		b.at = time.Now()
		b.cancel()
		b.fired.Store(true)
		first = true
	})
	if first {
		ctx = context.WithoutCancel(ctx)
	}
	return b.LeaseBook.DeleteAll(ctx, w)
}

var errLost = errors.New("test: no answer")

// faultyLedger is the real ledger whose returns (negative additions) fail
// on demand: dropped before they reach NATS, or applied and their answer
// lost.
type faultyLedger struct {
	*store.Ledger
	fail, apply atomic.Bool
}

func (f *faultyLedger) Add(ctx context.Context, tenant, period string, delta int64, id string) (int64, bool, error) {
	if delta < 0 && f.fail.Load() {
		if f.apply.Load() {
			_, _, _ = f.Ledger.Add(ctx, tenant, period, delta, id)
		}
		return 0, false, errLost
	}
	return f.Ledger.Add(ctx, tenant, period, delta, id)
}

func (f *faultyLedger) AddAll(ctx context.Context, adds []limiter.Addition) error {
	if f.fail.Load() {
		if f.apply.Load() {
			_ = f.Ledger.AddAll(ctx, adds)
		}
		return errLost
	}
	return f.Ledger.AddAll(ctx, adds)
}

// faultyBook is the real lease book whose deletes fail on demand.
type faultyBook struct {
	*store.LeaseBook
	failDeletes atomic.Bool
}

func (f *faultyBook) Delete(ctx context.Context, tenant, period, replica string, rev uint64) error {
	if f.failDeletes.Load() {
		return errLost
	}
	return f.LeaseBook.Delete(ctx, tenant, period, replica, rev)
}

func (f *faultyBook) DeleteAll(ctx context.Context, w []limiter.LeaseWrite) error {
	if f.failDeletes.Load() {
		return errLost
	}
	return f.LeaseBook.DeleteAll(ctx, w)
}

// TestCloseInterruptedReturnsAreExact: Close is cut off between its steps
// (the returns dropped, or applied with their answers lost, or the records
// not deleted), with batches and one tenant at a time. Whatever happened,
// once a survivor has swept the records every tenant's ledger total is
// exactly what was admitted: the lowered records name their returns, so a
// return is sent again under the same id and applied once. A sweep after
// the ledger's duplicate window no longer re-sends a return that may have
// been applied: tokens may stay counted then, never be returned twice.
func TestCloseInterruptedReturnsAreExact(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		fail, apply, failDeletes bool
		late                     bool
	}{
		{name: "returns dropped", fail: true},
		{name: "answers lost", fail: true, apply: true},
		{name: "records not deleted", failDeletes: true},
		{name: "answers lost, swept late", fail: true, apply: true, late: true},
		{name: "returns dropped, swept late", fail: true, late: true},
	} {
		for _, batches := range []bool{true, false} {
			if tc.late && !batches {
				continue // the sweep is the same either way
			}
			name := tc.name + map[bool]string{true: " (batches)", false: " (one by one)"}[batches]
			t.Run(name, func(t *testing.T) {
				const n = 100
				s := storetest.Open(t)
				c := &clock{t: time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)}
				l := manyTenants(n, 1_000_000)
				const ttl = 10 * time.Second
				fl := &faultyLedger{Ledger: s.Ledger}
				fb := &faultyBook{LeaseBook: s.Leases()}
				o := limiter.QuotaOptions{Ledger: fl, Leases: fb, Limits: l.get, Now: c.Now,
					MaxLease: 1000, ReplicaID: "victim", LeaseIdle: time.Hour, LeaseTTL: ttl}
				if !batches {
					o.Ledger, o.Leases = onlyLedger{fl}, onlyBook{fb}
				}
				q := limiter.NewQuotas(o)
				admitted := holdLeases(t, q, n)
				period := "2026-11"
				before := ledgerTotals(t, s, n, period)
				fl.fail.Store(tc.fail)
				fl.apply.Store(tc.apply)
				fb.failDeletes.Store(tc.failDeletes)
				cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer ccancel()
				err := q.Close(cctx)
				if tc.fail != (err != nil) {
					t.Errorf("close: %v", err)
				}
				if k := len(records(t, s)); k != n {
					t.Fatalf("%d records left after close, want all %d (none may go before its tokens are back)", k, n)
				}

				later := ttl + time.Second
				if tc.late {
					later = limiter.DuplicateWindow + time.Second
				}
				c.Set(c.Now().Add(later))
				sweepAll(t, s, c, l.get, ttl, 60*time.Second)
				final := ledgerTotals(t, s, n, period)
				var stranded int64
				for i := 0; i < n; i++ {
					if final[i] < admitted[i] {
						t.Fatalf("tenant %d: ledger %d below admitted %d: returned twice", i, final[i], admitted[i])
					}
					stranded += final[i] - admitted[i]
				}
				var held int64
				for i := range before {
					held += before[i] - admitted[i]
				}
				want := int64(0)
				if tc.late && !tc.apply {
					// Never returned, and too late to send again.
					want = held
				}
				if stranded != want {
					t.Errorf("%d tokens stranded of %d held, want %d", stranded, held, want)
				}
			})
		}
	}
}

// sweepAll runs a survivor replica on c's clock until it has swept every
// lease record of s and sent the returns, moving the clock a second at a
// time (sweeps run every lease_ttl/3 of its clock).
func sweepAll(t *testing.T, s *store.Store, c *clock, limits func(string) (limiter.Limit, bool), ttl, within time.Duration) {
	t.Helper()
	survivor := limiter.NewQuotas(limiter.QuotaOptions{Ledger: s.Ledger, Leases: storetest.Connect(t, s).Leases(), Limits: limits,
		Now: c.Now, MaxLease: 1000, ReplicaID: "survivor", LeaseIdle: time.Hour, LeaseTTL: ttl, Timeout: 30 * time.Second})
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan struct{})
	go func() { _ = survivor.Run(rctx); close(rdone) }()
	defer func() { rcancel(); <-rdone }()
	storetest.CheckFor(t, within, 250*time.Millisecond, func() error {
		if k := len(records(t, s)); k > 0 {
			c.Set(c.Now().Add(time.Second))
			return fmt.Errorf("%d records not swept yet", k)
		}
		if p := survivor.Pending(); p > 0 {
			return fmt.Errorf("%d returns not sent yet", p)
		}
		return nil
	})
}
