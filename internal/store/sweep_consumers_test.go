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
