package limiter_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/tollgate/tollgate/limiter"
	"github.com/tollgate/tollgate/limiter/ledgertest"
)

// TestLeaseStatsFake: each kind of lease work is counted where it is
// done: reservations, refunds, the excess of a reservation, the unused
// tokens of a period that ended, and those returned on Close.
func TestLeaseStatsFake(t *testing.T) {
	c := &clock{t: time.Date(2027, 1, 20, 12, 0, 0, 0, time.UTC)}
	m := &ledgertest.Memory{Now: c.Now}
	l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: 20}, "big": {Monthly: 1_000_000}}}
	q := fakeQuotas(t, limiter.QuotaOptions{Ledger: m, Limits: l.get, Now: c.Now, MaxLease: 10})
	want := limiter.LeaseStats{}
	check := func(step string) {
		t.Helper()
		if got := q.LeaseStats(); got != want {
			t.Fatalf("after %s: LeaseStats\n got %+v\nwant %+v", step, got, want)
		}
	}
	check("nothing")

	// acme's first lease: a quarter of its limit.
	d := q.Admit("acme", 1)
	if !d.Allowed {
		t.Fatal("refused")
	}
	want.Reservations, want.ReservedTokens = 1, 5
	check("the first reservation")

	q.Refund("acme", 1, d)
	want.Refunds, want.RefundedTokens = 1, 1
	check("a refund")

	// Another replica reserves 14 meanwhile: acme's next lease, of 3
	// (a quarter of what it believes is left), finds 1 left under the
	// limit and gives back the other 2 at once.
	if _, _, err := m.Add(context.Background(), "acme", "2027-01", 14, "other.1"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if !q.Admit("acme", 1).Allowed {
			t.Fatalf("request %d of the first lease refused", i)
		}
	}
	if !q.Admit("acme", 1).Allowed {
		t.Fatal("the last token refused")
	}
	want.Reservations, want.ReservedTokens = 2, 6
	want.Returns[limiter.ReturnExcess], want.ReturnedTokens[limiter.ReturnExcess] = 1, 2
	check("a reservation over the limit")

	// big spends 1 of a lease of 10; the period ends; its first request
	// of February returns the other 9 to January.
	if !q.Admit("big", 1).Allowed {
		t.Fatal("big refused")
	}
	c.Set(time.Date(2027, 2, 1, 0, 0, 1, 0, time.UTC))
	if !q.Admit("big", 1).Allowed {
		t.Fatal("big refused in February")
	}
	want.Reservations, want.ReservedTokens = 4, 26
	want.Returns[limiter.ReturnUnused], want.ReturnedTokens[limiter.ReturnUnused] = 1, 9
	check("a new period")

	// Close returns the 9 tokens big holds of February.
	closeQuotas(t, q)
	want.Returns[limiter.ReturnShutdown], want.ReturnedTokens[limiter.ReturnShutdown] = 1, 9
	check("Close")
	if got := memTotal(t, m, "big", "2027-01") + memTotal(t, m, "big", "2027-02"); got != 2 {
		t.Errorf("big's ledger holds %d, want the 2 admitted", got)
	}
}

// TestLeaseStatsSweeps: a replica that sweeps another's expired lease
// record counts the sweep and the tokens it returned; the replica whose
// record was swept counts it as lost when it finds out.
func TestLeaseStatsSweeps(t *testing.T) {
	s := storetest.Open(t)
	c := &clock{t: time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)}
	l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: 1_000_000}}}
	const ttl = 10 * time.Second
	q := limiter.NewQuotas(limiter.QuotaOptions{Ledger: s.Ledger, Leases: s.Leases(), Limits: l.get, Now: c.Now,
		MaxLease: 1000, ReplicaID: "cut-off", LeaseIdle: time.Hour, LeaseTTL: ttl, FailoverHorizon: time.Millisecond})
	var above int64
	for i := 0; above == 0; i++ {
		if i == 1000 {
			t.Fatal("no lease record with tokens above its spending bound: the test proves nothing")
		}
		if !q.Admit("acme", 1).Allowed {
			t.Fatalf("request %d refused", i)
		}
		if r, ok := records(t, s)["acme"]; ok {
			above = r.Record.Reserved - r.Record.SpentMax
		}
	}
	c.Set(c.Now().Add(ttl + time.Second))
	survivor := limiter.NewQuotas(limiter.QuotaOptions{Ledger: s.Ledger, Leases: storetest.Connect(t, s).Leases(), Limits: l.get,
		Now: c.Now, MaxLease: 1000, ReplicaID: "survivor", LeaseIdle: time.Hour, LeaseTTL: ttl, Timeout: 30 * time.Second})
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan struct{})
	go func() { _ = survivor.Run(rctx); close(rdone) }()
	defer func() { rcancel(); <-rdone }()
	storetest.CheckFor(t, time.Minute, 250*time.Millisecond, func() error {
		if st := survivor.LeaseStats(); st.Sweeps == 0 {
			c.Set(c.Now().Add(time.Second))
			return fmt.Errorf("no sweep counted yet")
		}
		return nil
	})
	if st := survivor.LeaseStats(); st.Sweeps != 1 || st.SweptTokens != above {
		t.Errorf("survivor counted %d sweeps of %d tokens, want 1 of %d", st.Sweeps, st.SweptTokens, above)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if st := q.LeaseStats(); st.LostRecords != 1 || st.LostTokens != above {
		t.Errorf("the swept replica counted %d lost records of %d tokens, want 1 of %d", st.LostRecords, st.LostTokens, above)
	}
}
