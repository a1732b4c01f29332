package limiter

import (
	"context"
	"errors"
	"testing"
	"time"
)

// addFunc is a Ledger whose Add is the function; Total is always 0.
type addFunc func(ctx context.Context, tenant, period string, delta int64, msgID string) (int64, bool, error)

func (f addFunc) Add(ctx context.Context, tenant, period string, delta int64, msgID string) (int64, bool, error) {
	return f(ctx, tenant, period, delta, msgID)
}

func (addFunc) Total(context.Context, string, string) (int64, error) { return 0, nil }

// A queued ledger operation is re-sent under its id until 30s before the
// ledger's duplicate window (QuotaOptions.DuplicateWindow) ends, and is
// dropped after that, unsent.
func TestOutboxDropsAtEndOfDuplicateWindow(t *testing.T) {
	for _, tc := range []struct {
		name   string
		window time.Duration
		last   time.Duration // after the operation was queued
	}{
		{name: "default", window: 0, last: DuplicateWindow - 30*time.Second},
		{name: "configured", window: 2 * time.Minute, last: 90 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
			now := start
			var sends int
			ledger := addFunc(func(context.Context, string, string, int64, string) (int64, bool, error) {
				sends++
				return 0, false, errors.New("ledger down")
			})
			q := NewQuotas(QuotaOptions{Ledger: ledger, Limits: func(string) (Limit, bool) { return Limit{}, true },
				Now: func() time.Time { return now }, Timeout: time.Millisecond, DuplicateWindow: tc.window})
			q.refund("acme", "2026-11", "", 5, nil)

			now = start.Add(tc.last)
			if q.flushPending(context.Background()) {
				t.Fatal("flushPending reported nothing left while the ledger is down")
			}
			if sends == 0 {
				t.Errorf("not sent at the deadline (%v after it was queued)", tc.last)
			}
			if got := q.Pending(); got != 1 {
				t.Fatalf("Pending = %d at the deadline, want 1", got)
			}

			sends = 0
			now = start.Add(tc.last + time.Nanosecond)
			if !q.flushPending(context.Background()) {
				t.Error("flushPending kept the operation past its deadline")
			}
			if sends != 0 {
				t.Errorf("sent %d times past the deadline, want 0", sends)
			}
			if got := q.Pending(); got != 0 {
				t.Errorf("Pending = %d past the deadline, want 0", got)
			}
		})
	}
}
