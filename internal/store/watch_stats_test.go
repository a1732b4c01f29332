package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// gateLoader is a Loader whose first Load waits until open is closed.
type gateLoader struct {
	open   chan struct{}
	waited bool
}

func (g *gateLoader) Snapshot(map[string][]byte) {}
func (g *gateLoader) Update(string, []byte)      {}
func (g *gateLoader) BeginLoad()                 {}
func (g *gateLoader) Loaded()                    {}
func (g *gateLoader) Load(string, []byte) {
	if !g.waited {
		g.waited = true
		<-g.open
	}
}

// watchState returns the state of bucket's watcher in s.
func watchState(s *store.Store, bucket string) (store.WatchState, error) {
	for _, w := range s.Watches() {
		if w.Bucket == bucket {
			return w, nil
		}
	}
	return store.WatchState{}, fmt.Errorf("no watcher of %s in %+v", bucket, s.Watches())
}

// TestWatchStats: a watcher says how many changes it has yet to apply
// and when it was last known to be current; that time stands still while
// NATS is away, and a reconnect counts, as does the watcher it replaces.
func TestWatchStats(t *testing.T) {
	srv := storetest.StartServer(t)
	writer := storetest.ConnectURL(t, srv.URL())
	const keys = 20
	for i := range keys {
		ctx, cancel := writer.WriteCtx(context.Background())
		_, err := store.Create(ctx, writer.Tenants, fmt.Sprintf("t%d", i), i)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	s := storetest.ConnectURL(t, srv.URL())
	g := &gateLoader{open: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan struct{})
	go func() { defer close(done); store.Watch(ctx, s.Tenants, g, zap.NewNop(), ready) }()
	t.Cleanup(func() { cancel(); <-done })

	// The first entry of the initial state is held up: the rest wait.
	storetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		w, err := watchState(s, store.BucketTenants)
		if err != nil {
			return err
		}
		if w.Pending != keys-1 || !w.Current.IsZero() {
			return fmt.Errorf("loading: %+v, want %d pending and never current", w, keys-1)
		}
		return nil
	})
	close(g.open)
	<-ready
	w, err := watchState(s, store.BucketTenants)
	if err != nil {
		t.Fatal(err)
	}
	if w.Pending != 0 || w.Current.IsZero() || w.Restarts != 0 {
		t.Fatalf("loaded: %+v, want none pending, current, no restart", w)
	}
	// An idle bucket is found current about every second.
	time.Sleep(1500 * time.Millisecond)
	if w, _ := watchState(s, store.BucketTenants); w.Staleness(time.Now()) > 1300*time.Millisecond {
		t.Errorf("idle watcher stale for %v, want about a second at most", w.Staleness(time.Now()))
	}

	srv.Stop()
	storetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s.Connected() {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	time.Sleep(2500 * time.Millisecond)
	if w, _ := watchState(s, store.BucketTenants); w.Staleness(time.Now()) < 2*time.Second {
		t.Errorf("stale for %v with NATS away 2.5s: the watcher cannot have been found current", w.Staleness(time.Now()))
	}
	if n := s.Reconnects(); n != 0 {
		t.Errorf("%d reconnects before NATS is back", n)
	}
	srv.Start()
	storetest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		w, err := watchState(s, store.BucketTenants)
		if err != nil {
			return err
		}
		if n := s.Reconnects(); n != 1 || !s.Connected() {
			return fmt.Errorf("%d reconnects, connected %v; want 1, true", n, s.Connected())
		}
		if w.Restarts < 1 || w.Staleness(time.Now()) > 1300*time.Millisecond || w.Pending != 0 {
			return fmt.Errorf("after the reconnect: %+v, stale %v; want a restart, current again", w, w.Staleness(time.Now()))
		}
		return nil
	})
}
