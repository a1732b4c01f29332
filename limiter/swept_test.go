package limiter_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/tollgate/tollgate/limiter"
	"github.com/tollgate/tollgate/limiter/ledgertest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestSweptReplicaKeepsLedgerExact: a replica that was cut off long enough
// for another to sweep its lease record (returning the tokens above the
// record's spending bound) is alive after all. The next time it writes
// the record, on the request path or when Close returns its lease, it
// finds the record gone and drops the tokens returned for it: the ledger
// then holds exactly what was admitted, nothing returned twice.
func TestSweptReplicaKeepsLedgerExact(t *testing.T) {
	for _, tc := range []struct {
		name    string
		admit   bool // admit more before Close: the request path meets the sweep
		batches bool
	}{
		{name: "record write on the request path", admit: true, batches: true},
		{name: "close (batches)", batches: true},
		{name: "close (one by one)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := storetest.Open(t)
			c := &clock{t: time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)}
			l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: 1_000_000}}}
			const ttl = 10 * time.Second
			core, logs := observer.New(zap.WarnLevel)
			o := limiter.QuotaOptions{Ledger: s.Ledger, Leases: s.Leases(), Limits: l.get, Now: c.Now,
				MaxLease: 1000, ReplicaID: "cut-off", LeaseIdle: time.Hour, LeaseTTL: ttl, Log: zap.New(core),
				// A bound short of the lease, so that a sweep returns something.
				FailoverHorizon: time.Millisecond}
			if !tc.batches {
				o.Ledger, o.Leases = onlyLedger{s.Ledger}, onlyBook{s.Leases()}
			}
			// No Run: nothing refreshes the record while the clock moves.
			q := limiter.NewQuotas(o)
			admitted := int64(0)
			for i := 0; ; i++ {
				if i == 1000 {
					t.Fatal("no lease record with tokens above its spending bound: the test proves nothing")
				}
				if !q.Admit("acme", 1).Allowed {
					t.Fatalf("request %d refused", i)
				}
				admitted++
				if r, ok := records(t, s)["acme"]; ok && r.Record.SpentMax < r.Record.Reserved {
					break
				}
			}

			c.Set(c.Now().Add(ttl + time.Second))
			sweepAll(t, s, c, l.get, ttl, 60*time.Second)

			if tc.admit {
				for i := 0; i < 300; i++ {
					if !q.Admit("acme", 1).Allowed {
						t.Fatalf("request %d after the sweep refused", i)
					}
					admitted++
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := q.Close(ctx); err != nil {
				t.Fatalf("close: %v", err)
			}
			if n := logs.FilterMessage("our lease record was swept; dropping the tokens returned for us").Len(); n != 1 {
				t.Errorf("the sweep was noticed %d times, want once", n)
			}
			total, err := s.Ledger.Total(context.Background(), "acme", "2026-11")
			if err != nil {
				t.Fatal(err)
			}
			if total != admitted {
				t.Errorf("ledger total %d, admitted %d", total, admitted)
			}
			if recs := records(t, s); len(recs) != 0 {
				t.Errorf("lease records left after close: %+v", recs)
			}
		})
	}
}

// TestSweptAfterUnrecordedLease: issue 14's burned month. While the leases
// bucket has no leader, a replica spends its recorded lease, reserves the
// next one in the ledger and cannot record it; its record expires and a
// sweeper returns what the record held above its bound (nothing: the
// bound covered the whole of it). When the replica finds its record gone,
// it must drop what the sweeper returned, not the lease it reserved since:
// the ledger then holds exactly what was admitted once it closes.
func TestSweptAfterUnrecordedLease(t *testing.T) {
	s := storetest.Open(t)
	c := &clock{t: time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)}
	l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: 1_000_000}}}
	const ttl = 10 * time.Second
	var cut atomic.Bool
	book := ledgertest.WrapBook(s.Leases())
	put := book.PutFunc
	book.PutFunc = func(ctx context.Context, tenant, period, replica string, r limiter.LeaseRecord, rev uint64) (uint64, bool, error) {
		if cut.Load() {
			return 0, false, errors.New("nats: no response from stream")
		}
		return put(ctx, tenant, period, replica, r, rev)
	}
	core, logs := observer.New(zap.WarnLevel)
	q := limiter.NewQuotas(limiter.QuotaOptions{Ledger: onlyLedger{s.Ledger}, Leases: book, Limits: l.get, Now: c.Now,
		MaxLease: 1000, ReplicaID: "cut-off", LeaseIdle: time.Hour, LeaseTTL: ttl, Log: zap.New(core)})
	admitted := int64(0)
	admit := func(n int) (refused bool) {
		t.Helper()
		for i := 0; i < n; i++ {
			if !q.Admit("acme", 1).Allowed {
				return true
			}
			admitted++
		}
		return false
	}
	// A recorded lease whose bound covers all of it (the default horizon
	// at this rate): a sweep of it returns nothing.
	var rec limiter.LeaseRecord
	for i := 0; ; i++ {
		if i == 2000 {
			t.Fatal("no lease record whose bound covers its lease")
		}
		if admit(1) {
			t.Fatalf("request %d refused", i)
		}
		if r, ok := records(t, s)["acme"]; ok && r.Record.Reserved >= 40 && r.Record.SpentMax == r.Record.Reserved {
			rec = r.Record
			break
		}
	}
	cut.Store(true)
	if !admit(5000) {
		t.Fatal("5000 admitted with records cut off: want a refusal once the lease needs recording")
	}
	total := func() int64 {
		n, err := s.Ledger.Total(context.Background(), "acme", "2026-11")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if total() <= rec.Reserved {
		t.Fatalf("ledger %d, record %d: no lease was reserved without a record; the test proves nothing", total(), rec.Reserved)
	}
	cut.Store(false)
	c.Set(c.Now().Add(ttl + time.Second))
	sweepAll(t, s, c, l.get, ttl, 60*time.Second)
	if admit(300) {
		t.Fatal("refused after the sweep")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	if n := logs.FilterMessage("our lease record was swept; dropping the tokens returned for us").Len(); n != 1 {
		t.Errorf("the sweep was noticed %d times, want once", n)
	}
	if got := total(); got != admitted {
		t.Errorf("ledger total %d, admitted %d: %d burned", got, admitted, got-admitted)
	}
}
