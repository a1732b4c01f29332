package e2e

import (
	"context"
	"testing"
	"time"
)

// checkFor polls f every interval until it returns nil, and fails the test
// with f's last error if timeout passes first (nats-server's checkFor).
func checkFor(t *testing.T, timeout, every time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		time.Sleep(every)
	}
}

// waitFor polls cond every interval until it holds or ctx ends, and
// reports whether it held: checkFor for a goroutine, which cannot fail the
// test.
func waitFor(ctx context.Context, every time.Duration, cond func() bool) bool {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}
