package ledgertest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/tollgate/tollgate/limiter"
)

// Run checks that the ledgers open returns keep the limiter.Ledger
// contract, and limiter.BatchLedger's when they implement it. Each case
// opens a ledger of its own, empty, with a duplicate window longer than
// the case runs.
//
// What the limiter relies on: Add returns the counter's total just after
// its own addition, so that concurrent additions see distinct totals (a
// reservation's grant is computed from it); additions are not clamped, a
// counter may go below zero; a message id is applied once while the
// ledger remembers it, and a duplicate is answered with the current total;
// counters of different tenants or periods are independent. Message ids
// are unique across the ledger (the limiter names its operations
// replica.sequence), so no case reuses one for another counter.
func Run(t *testing.T, open func(t *testing.T) limiter.Ledger) {
	t.Helper()
	cases := []struct {
		name string
		run  func(t *testing.T, l limiter.Ledger)
	}{
		{"AddReturnsNewTotal", addReturnsNewTotal},
		{"UnwrittenCounterIsZero", unwrittenCounterIsZero},
		{"NegativeDeltas", negativeDeltas},
		{"DuplicateAppliedOnce", duplicateAppliedOnce},
		{"DuplicateReportsCurrentTotal", duplicateReportsCurrentTotal},
		{"SeparateTenantsAndPeriods", separateTenantsAndPeriods},
		{"ConcurrentAddsSumExactly", concurrentAddsSumExactly},
		{"ConcurrentResendsApplyOnce", concurrentResendsApplyOnce},
		{"BatchAppliesEachOnce", batchAppliesEachOnce},
		{"BatchWithSeenIDThenOneByOne", batchWithSeenIDThenOneByOne},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, open(t)) })
	}
}

// add calls l.Add and fails the test on an error.
func add(t *testing.T, l limiter.Ledger, tenant, period string, delta int64, id string) (int64, bool) {
	t.Helper()
	total, dup, err := l.Add(t.Context(), tenant, period, delta, id)
	if err != nil {
		t.Fatalf("Add(%s, %s, %+d, %s): %v", tenant, period, delta, id, err)
	}
	return total, dup
}

// wantTotal checks Total of tenant and period.
func wantTotal(t *testing.T, l limiter.Ledger, tenant, period string, want int64) {
	t.Helper()
	got, err := l.Total(t.Context(), tenant, period)
	if err != nil {
		t.Fatalf("Total(%s, %s): %v", tenant, period, err)
	}
	if got != want {
		t.Errorf("Total(%s, %s) = %d, want %d", tenant, period, got, want)
	}
}

func addReturnsNewTotal(t *testing.T, l limiter.Ledger) {
	var want int64
	for i, delta := range []int64{10, 5, 1, 100, 7} {
		want += delta
		total, dup := add(t, l, "acme", "2026-11", delta, fmt.Sprintf("a%d", i))
		if total != want || dup {
			t.Errorf("add %d (%+d) = %d, dup %v; want %d, false", i, delta, total, dup, want)
		}
	}
	wantTotal(t, l, "acme", "2026-11", want)
}

func unwrittenCounterIsZero(t *testing.T, l limiter.Ledger) {
	wantTotal(t, l, "nobody", "2026-11", 0)
	add(t, l, "acme", "2026-11", 3, "a")
	wantTotal(t, l, "acme", "2026-12", 0)
	wantTotal(t, l, "acme2", "2026-11", 0)
}

func negativeDeltas(t *testing.T, l limiter.Ledger) {
	for _, step := range []struct {
		delta, want int64
	}{
		{10, 10},
		{-4, 6}, // a refund
		{-6, 0},
		{-3, -3}, // not clamped: an early refund may overtake its reservation
		{5, 2},
	} {
		total, dup := add(t, l, "acme", "2026-11", step.delta, fmt.Sprintf("n%+d.%d", step.delta, step.want))
		if total != step.want || dup {
			t.Errorf("add %+d = %d, dup %v; want %d, false", step.delta, total, dup, step.want)
		}
	}
	wantTotal(t, l, "acme", "2026-11", 2)
}

func duplicateAppliedOnce(t *testing.T, l limiter.Ledger) {
	for _, tc := range []struct {
		name  string
		delta int64
	}{
		{"reservation", 10},
		{"refund", -4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tenant := "t-" + tc.name
			first, dup := add(t, l, tenant, "2026-11", tc.delta, "same."+tc.name)
			if first != tc.delta || dup {
				t.Fatalf("first add = %d, dup %v; want %d, false", first, dup, tc.delta)
			}
			for i := 0; i < 3; i++ {
				if total, dup := add(t, l, tenant, "2026-11", tc.delta, "same."+tc.name); total != tc.delta || !dup {
					t.Errorf("re-send %d = %d, dup %v; want %d, true", i, total, dup, tc.delta)
				}
			}
			wantTotal(t, l, tenant, "2026-11", tc.delta)
		})
	}
}

// A duplicate's total is the counter's current total, which may include
// later additions: the limiter then takes its grant as a lower bound.
func duplicateReportsCurrentTotal(t *testing.T, l limiter.Ledger) {
	add(t, l, "acme", "2026-11", 10, "mine")
	add(t, l, "acme", "2026-11", 5, "theirs")
	if total, dup := add(t, l, "acme", "2026-11", 10, "mine"); total != 15 || !dup {
		t.Errorf("re-sent add after another's = %d, dup %v; want the current 15, true", total, dup)
	}
	wantTotal(t, l, "acme", "2026-11", 15)
}

func separateTenantsAndPeriods(t *testing.T, l limiter.Ledger) {
	counters := []struct {
		tenant, period string
		delta          int64
	}{
		{"acme", "2026-11", 1},
		{"acme", "2026-12", 20},
		{"acme", "2026-11-15", 300}, // a tenant billed from the 15th
		{"acme2", "2026-11", 4000},  // a name that extends another
		{"acm", "2026-11", 50000},
		{"beta", "2026-11", 600000},
	}
	for round := 0; round < 2; round++ {
		for i, c := range counters {
			total, _ := add(t, l, c.tenant, c.period, c.delta, fmt.Sprintf("s%d.%d", round, i))
			if want := int64(round+1) * c.delta; total != want {
				t.Errorf("round %d: add to %s %s = %d, want %d", round, c.tenant, c.period, total, want)
			}
		}
	}
	for _, c := range counters {
		wantTotal(t, l, c.tenant, c.period, 2*c.delta)
	}
}

// Concurrent additions of 1 sum exactly, and each is answered with the
// total just after it: the answers are 1 to n, each once.
func concurrentAddsSumExactly(t *testing.T, l limiter.Ledger) {
	const workers, each = 8, 40
	totals := make([][]int64, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				total, dup, err := l.Add(t.Context(), "acme", "2026-11", 1, fmt.Sprintf("w%d.%d", w, i))
				if err != nil || dup {
					t.Errorf("add w%d.%d: dup %v, %v", w, i, dup, err)
					return
				}
				totals[w] = append(totals[w], total)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	wantTotal(t, l, "acme", "2026-11", workers*each)
	all := slices.Concat(totals...)
	slices.Sort(all)
	for i, v := range all {
		if v != int64(i+1) {
			t.Fatalf("answers of %d concurrent additions of 1, sorted: %v; want 1 to %d, each once", workers*each, all, workers*each)
		}
	}
}

// The same addition re-sent by many at once (a retry racing the original)
// is applied once.
func concurrentResendsApplyOnce(t *testing.T, l limiter.Ledger) {
	const senders = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	applied := 0
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, dup, err := l.Add(t.Context(), "acme", "2026-11", 7, "retried")
			if err != nil {
				t.Errorf("add: %v", err)
				return
			}
			if !dup {
				mu.Lock()
				applied++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	wantTotal(t, l, "acme", "2026-11", 7)
	if applied != 1 {
		t.Errorf("%d of %d sends reported applied, want 1 (the others duplicates)", applied, senders)
	}
}

// batchLedger skips the test unless l is a limiter.BatchLedger.
func batchLedger(t *testing.T, l limiter.Ledger) limiter.BatchLedger {
	t.Helper()
	bl, ok := l.(limiter.BatchLedger)
	if !ok {
		t.Skipf("%T is not a limiter.BatchLedger", l)
	}
	return bl
}

// AddAll applies every addition (more than fit in one of the store's
// batches); re-sending them, as a batch or one by one, adds nothing. A
// re-sent batch may be refused whole (limiter.ErrRejected: nothing
// applied), or applied as the duplicates it is.
func batchAppliesEachOnce(t *testing.T, l limiter.Ledger) {
	bl := batchLedger(t, l)
	const tenants = 300
	var adds []limiter.Addition
	for i := range 3 * tenants {
		adds = append(adds, limiter.Addition{Tenant: fmt.Sprintf("t%d", i%tenants), Period: "2026-11", Delta: -1, MsgID: fmt.Sprintf("b%d", i)})
	}
	adds = append(adds, limiter.Addition{Tenant: "t0", Period: "2026-12", Delta: 9, MsgID: "b-dec"})
	check := func(when string) {
		t.Helper()
		for _, c := range []struct {
			tenant, period string
			want           int64
		}{{"t0", "2026-11", -3}, {"t1", "2026-11", -3}, {fmt.Sprintf("t%d", tenants-1), "2026-11", -3}, {"t0", "2026-12", 9}} {
			got, err := l.Total(t.Context(), c.tenant, c.period)
			if err != nil || got != c.want {
				t.Errorf("%s: Total(%s, %s) = %d, %v; want %d", when, c.tenant, c.period, got, err, c.want)
			}
		}
	}
	if err := bl.AddAll(t.Context(), adds); err != nil {
		t.Fatalf("AddAll: %v", err)
	}
	check("after AddAll")
	if err := bl.AddAll(t.Context(), adds[:10]); err != nil && !errors.Is(err, limiter.ErrRejected) {
		t.Errorf("re-sent batch: %v, want nil or limiter.ErrRejected", err)
	}
	for _, a := range adds[:3] {
		if _, dup := add(t, l, a.Tenant, a.Period, a.Delta, a.MsgID); !dup {
			t.Errorf("addition %s re-sent alone: not reported a duplicate", a.MsgID)
		}
	}
	check("after re-sending")
}

// A batch that holds an addition the ledger has seen, whatever the batch's
// outcome, followed by each of its additions re-sent alone (as Close does
// after a failed batch), applies every addition exactly once.
func batchWithSeenIDThenOneByOne(t *testing.T, l limiter.Ledger) {
	bl := batchLedger(t, l)
	add(t, l, "t3", "2026-11", 5, "c3")
	var adds []limiter.Addition
	for i := range 20 {
		adds = append(adds, limiter.Addition{Tenant: fmt.Sprintf("t%d", i), Period: "2026-11", Delta: 5, MsgID: fmt.Sprintf("c%d", i)})
	}
	if err := bl.AddAll(t.Context(), adds); err != nil {
		t.Logf("batch holding a seen id: %v; re-sending one by one", err)
	}
	for _, a := range adds {
		add(t, l, a.Tenant, a.Period, a.Delta, a.MsgID)
	}
	for i := range 20 {
		wantTotal(t, l, fmt.Sprintf("t%d", i), "2026-11", 5)
	}
}
