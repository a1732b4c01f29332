package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/tollgate/tollgate/limiter"
	"go.uber.org/zap"
)

// The limiter stops re-sending a ledger operation under its message id
// shortly before the ledger forgets the id; if their defaults differed, a
// re-send could be applied twice (a longer limiter window) or be dropped
// needlessly (a shorter one).
func TestDuplicateWindowDefaultsAgree(t *testing.T) {
	if got, want := store.DefaultDuplicateWindow, limiter.DuplicateWindow; got != want {
		t.Errorf("store.DefaultDuplicateWindow = %v, want limiter.DuplicateWindow = %v", got, want)
	}
}

func TestLedgerCountersAreIndependentAndSurviveManySubjects(t *testing.T) {
	// NATS-NOTES: global stream limits silently reset counters. With one
	// message per subject and no global limit, writing many other
	// subjects must leave a counter alone.
	s := storetest.Open(t)
	ctx := context.Background()
	if _, _, err := s.Ledger.Add(ctx, "keep", "2026-11", 7, "k"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if _, _, err := s.Ledger.Add(ctx, fmt.Sprintf("t%d", i), "2026-11", 1, fmt.Sprintf("o%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := s.Ledger.Total(ctx, "keep", "2026-11"); got != 7 {
		t.Errorf("counter after 200 other subjects = %d, want 7", got)
	}
	if got, _ := s.Ledger.Total(ctx, "keep", "2026-12"); got != 0 {
		t.Errorf("next period = %d, want 0", got)
	}
}

func TestLedgerSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	open := func() *store.Store {
		s, err := store.Open(context.Background(), store.Options{DataDir: dir, SyncAlways: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	if _, _, err := s.Ledger.Add(context.Background(), "acme", "2026-11", 42, "a"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open()
	defer s.Close()
	if got, err := s.Ledger.Total(context.Background(), "acme", "2026-11"); err != nil || got != 42 {
		t.Errorf("after restart total = %d, %v; want 42", got, err)
	}
}

type recMirror struct {
	mu   sync.Mutex
	m    map[string]string
	snap int
}

func (r *recMirror) Snapshot(e map[string][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snap++
	r.m = map[string]string{}
	for k, v := range e {
		r.m[k] = string(v)
	}
}

func (r *recMirror) Update(k string, v []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v == nil {
		delete(r.m, k)
	} else {
		r.m[k] = string(v)
	}
}

func (r *recMirror) get(k string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.m[k]
	return v, ok
}

func TestWatchMirrorsSnapshotThenUpdates(t *testing.T) {
	s := storetest.Open(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; i < 100; i++ {
		if _, err := s.Keys.Put(ctx, fmt.Sprintf("k%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Keys.Delete(ctx, "k0"); err != nil {
		t.Fatal(err)
	}
	m := &recMirror{}
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() { store.Watch(ctx, s.Keys, m, zap.NewNop(), ready); close(done) }()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot")
	}
	m.mu.Lock()
	n := len(m.m)
	m.mu.Unlock()
	if n != 99 {
		t.Errorf("snapshot has %d keys, want 99 (k0 deleted)", n)
	}
	if _, ok := m.get("k0"); ok {
		t.Error("deleted key in snapshot")
	}
	if _, err := s.Keys.Put(ctx, "new", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Keys.Delete(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	storetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if v, ok := m.get("new"); !ok || v != "x" {
			return fmt.Errorf("update not applied")
		}
		if _, ok := m.get("k1"); ok {
			return fmt.Errorf("delete not applied")
		}
		return nil
	})
	cancel()
	<-done
}
