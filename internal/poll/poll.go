// Package poll owns the tests' one way to wait for a condition:
// CheckFor polls instead of sleeping a fixed time (nats-server's
// checkFor). It imports nothing of the module, so any package's tests may
// use it without pulling in NATS.
package poll

import (
	"testing"
	"time"
)

// CheckFor polls f every interval until it returns nil, and fails the test
// with f's last error if timeout passes first.
func CheckFor(t testing.TB, timeout, every time.Duration, f func() error) {
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
