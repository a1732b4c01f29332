package proxy_test

import (
	"testing"
	"time"
)

// checkFor polls f every interval until it returns nil, and fails the test
// with f's last error if timeout passes first (nats-server's checkFor).
func checkFor(t testing.TB, timeout, every time.Duration, f func() error) {
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
