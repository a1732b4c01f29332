package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/tollgate/tollgate/limiter"
	"github.com/tollgate/tollgate/limiter/ledgertest"
)

// TestLedgerContract runs the limiter's conformance suite of its Ledger
// (and BatchLedger) contract against the NATS ledger, on an embedded
// server: one ledger stream, and four with fsync on every write, as
// tollgate runs by default. The in-memory fake that the limiter's own
// tests use passes the same suite (limiter's TestLedgerContract).
func TestLedgerContract(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) limiter.Ledger
	}{
		{"one stream", func(t *testing.T) limiter.Ledger { return storetest.Open(t).Ledger }},
		{"four streams, sync_always", func(t *testing.T) limiter.Ledger {
			s, err := store.Open(context.Background(), store.Options{DataDir: t.TempDir(), LedgerShards: 4,
				SyncAlways: true, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Close)
			return s.Ledger
		}},
		{"another replica's connection", func(t *testing.T) limiter.Ledger {
			return storetest.Connect(t, storetest.Open(t)).Ledger
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { ledgertest.Run(t, tc.open) })
	}
}
