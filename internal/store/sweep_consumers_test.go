package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/tollgate/tollgate/limiter"
)

// TestSweepsLeaveNoConsumers: a sweep's consumer is gone when the sweep
// is. Each used to live five minutes, and a replica sweeping every few
// seconds reached nats-server's 1,000 consumers a stream, after which
// every sweep failed.
func TestSweepsLeaveNoConsumers(t *testing.T) {
	s := storetest.Open(t)
	ctx := context.Background()
	b := s.Leases()
	if _, _, err := b.Put(ctx, "dead", "p", "r", limiter.LeaseRecord{Reserved: 3, Expires: time.Now().Add(-time.Hour)}, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		recs, err := b.Expired(ctx, time.Now())
		if err != nil || len(recs) != 1 {
			t.Fatalf("sweep %d: %+v, %v", i, recs, err)
		}
	}
	stream, err := s.JS.Stream(ctx, "KV_"+store.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Consumers; n != 0 {
		t.Errorf("%d consumers left on the leases stream after 50 sweeps, want 0", n)
	}
}

// TestLeaseBookResolvesLostAnswers: a write whose answer was lost (so the
// limiter still holds the revision before it) is resolved by reading:
// the record is still there and ours, so the next write goes over it; only
// a record a sweeper removed is reported gone.
func TestLeaseBookResolvesLostAnswers(t *testing.T) {
	s := storetest.Open(t)
	ctx := context.Background()
	b := s.Leases()
	rec := limiter.LeaseRecord{Reserved: 10, SpentMax: 5, Expires: time.Now().Add(time.Hour)}
	rev1, gone, err := b.Put(ctx, "acme", "p", "r", rec, 0)
	if err != nil || gone {
		t.Fatal(rev1, gone, err)
	}
	// The create's answer was lost: the limiter creates again.
	rev2, gone, err := b.Put(ctx, "acme", "p", "r", rec, 0)
	if err != nil || gone || rev2 <= rev1 {
		t.Fatalf("create over a created record: rev %d (after %d), gone %v, %v; want a new revision", rev2, rev1, gone, err)
	}
	// An update's answer was lost: the limiter still holds rev1.
	rev3, gone, err := b.Put(ctx, "acme", "p", "r", rec, rev1)
	if err != nil || gone || rev3 <= rev2 {
		t.Fatalf("update at a stale revision: rev %d, gone %v, %v; want it written over", rev3, gone, err)
	}
	// A delete at a stale revision deletes the record that is still ours.
	if err := b.Delete(ctx, "acme", "p", "r", rev2); err != nil {
		t.Fatalf("delete at a stale revision: %v", err)
	}
	recs, _ := b.Expired(ctx, time.Now().Add(2*time.Hour))
	if len(recs) != 0 {
		t.Fatalf("after delete: %+v", recs)
	}
	// A swept record is gone, whatever revision the limiter holds.
	rev4, _, err := b.Put(ctx, "acme", "p", "r", rec, 0)
	if err != nil {
		t.Fatal(err)
	}
	won, err := b.Sweep(ctx, limiter.ExpiredLease{Tenant: "acme", Period: "p", Replica: "r", Rev: rev4, Record: rec})
	if err != nil || !won {
		t.Fatal(won, err)
	}
	if _, gone, err := b.Put(ctx, "acme", "p", "r", rec, rev4); err != nil || !gone {
		t.Errorf("update of a swept record: gone %v, %v; want gone", gone, err)
	}
}
