// Package storetest starts real, embedded NATS servers for tests: no
// mocks of NATS anywhere in tollgate's tests.
package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// Open starts an embedded server with its store under a temporary
// directory, serving TCP clients on a random loopback port so that other
// "replicas" can Connect to it. It is closed when the test ends.
func Open(t testing.TB) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), store.Options{
		DataDir: t.TempDir(), Listen: "127.0.0.1:0", SyncAlways: false, Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Connect opens another client of the server behind s, as a second
// replica would.
func Connect(t testing.TB, s *store.Store) *store.Store {
	t.Helper()
	c, err := store.Open(context.Background(), store.Options{URL: s.ClientURL(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("storetest: connect: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// CheckFor polls f until it returns nil or timeout passes, then fails the
// test with f's last error (nats-server's checkFor).
func CheckFor(t testing.TB, timeout, every time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		time.Sleep(every)
	}
}
