package store_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// restartMirror records when each key left it, and checks that Watch
// makes one call at a time.
type restartMirror struct {
	t    *testing.T
	name string
	mu   sync.Mutex
	busy bool
	keys map[string]bool
	gone map[string]time.Time
}

func newRestartMirror(t *testing.T, name string) *restartMirror {
	return &restartMirror{t: t, name: name, keys: map[string]bool{}, gone: map[string]time.Time{}}
}

func (m *restartMirror) enter() {
	m.mu.Lock()
	if m.busy {
		m.t.Errorf("%s: concurrent Mirror calls", m.name)
	}
	m.busy = true
}

func (m *restartMirror) leave() {
	m.busy = false
	m.mu.Unlock()
}

func (m *restartMirror) Snapshot(entries map[string][]byte) {
	now := time.Now()
	m.enter()
	defer m.leave()
	for k := range m.keys {
		if _, ok := entries[k]; !ok {
			m.gone[k] = now
		}
	}
	m.keys = map[string]bool{}
	for k := range entries {
		m.keys[k] = true
	}
}

func (m *restartMirror) Update(k string, v []byte) {
	now := time.Now()
	m.enter()
	defer m.leave()
	if v == nil {
		if m.keys[k] {
			m.gone[k] = now
		}
		delete(m.keys, k)
		return
	}
	m.keys[k] = true
}

func (m *restartMirror) has(k string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.keys[k]
}

// goneAt is when k left the mirror; false while it is there.
func (m *restartMirror) goneAt(k string) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.keys[k] {
		return time.Time{}, false
	}
	at, ok := m.gone[k]
	return at, ok
}

// goroutinesIn counts the goroutines whose stack contains fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	c := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			c++
		}
	}
	return c
}

// TestWatchRevocationAcrossRestarts: keys deleted right after the NATS
// server restarted (same port, same store) leave the mirror of a replica
// that was watching before the restart within 5 s (p99), and not when a
// periodic check happens to notice that the watcher went silent: the
// server lost the watcher's consumer with the restart, and the replica's
// reconnect says so at once. Neither restarts nor reconnects to a server
// that kept the consumers leave consumers, subscriptions or goroutines
// behind.
func TestWatchRevocationAcrossRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a NATS server")
	}
	const (
		rounds   = 5
		perRound = 40 // deletions right after each restart
		watchers = 2
		stream   = "KV_" + store.BucketKeys
	)
	// The bound, 5 s; with TOLLGATE_STRICT_TIMING=1 (a quiet
	// machine) 1 s, which a watcher that notices the restart only by its
	// periodic check fails (p99 1.3 s), and one that starts over at the
	// reconnect meets (tens of ms).
	target := 5 * time.Second
	if os.Getenv("TOLLGATE_STRICT_TIMING") == "1" {
		target = time.Second
	}
	srv := storetest.StartServer(t)
	writer := storetest.ConnectURL(t, srv.URL())
	mirrors := make([]*restartMirror, watchers)
	stores := make([]*store.Store, watchers)
	for i := range watchers {
		s := storetest.ConnectURL(t, srv.URL())
		m := newRestartMirror(t, fmt.Sprintf("watcher%d", i))
		stores[i], mirrors[i] = s, m
		log := zap.NewNop()
		if testing.Verbose() {
			log = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named(m.name)
		}
		ctx, cancel := context.WithCancel(context.Background())
		ready, done := make(chan struct{}), make(chan struct{})
		go func() { defer close(done); store.Watch(ctx, s.Keys, m, log, ready) }()
		t.Cleanup(func() { cancel(); <-done }) // before s.Close
		select {
		case <-ready:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no snapshot", m.name)
		}
	}

	consumers := func() (int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := writer.JS.Stream(ctx, stream)
		if err != nil {
			return 0, err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return 0, err
		}
		return info.State.Consumers, nil
	}
	subs := func() []int {
		n := make([]int, watchers)
		for i, s := range stores {
			n[i] = s.NC.NumSubscriptions()
		}
		return n
	}
	const subGoroutine = "nats.(*Conn).waitForMsgs"
	baseSubs, baseG := subs(), goroutinesIn(subGoroutine)
	// settled checks, with time for a recreated watcher to come up, that
	// each watcher has one consumer and that the watchers' connections
	// hold no more subscriptions, nor the process more subscription
	// goroutines, than before.
	settled := func(what string, within time.Duration) {
		t.Helper()
		storetest.CheckFor(t, within, 20*time.Millisecond, func() error {
			n, err := consumers()
			if err != nil {
				return err
			}
			if n != watchers {
				return fmt.Errorf("%s: %d consumers on %s, want %d (one per watcher)", what, n, stream, watchers)
			}
			if s := subs(); fmt.Sprint(s) != fmt.Sprint(baseSubs) {
				return fmt.Errorf("%s: watchers' connections hold %v subscriptions, %v before", what, s, baseSubs)
			}
			if g := goroutinesIn(subGoroutine); g != baseG {
				return fmt.Errorf("%s: %d subscription goroutines, %d before", what, g, baseG)
			}
			return nil
		})
	}
	settled("before the restarts", 10*time.Second)

	var (
		all   []time.Duration // per deletion and watcher
		lines []string
		start = time.Now()
	)
	for r := range rounds {
		keys := make([]string, perRound)
		for i := range keys {
			keys[i] = fmt.Sprintf("r%dk%d", r, i)
			ctx, cancel := writer.WriteCtx(context.Background())
			_, err := store.Create(ctx, writer.Keys, keys[i], i)
			cancel()
			if err != nil {
				t.Fatalf("create %s: %v", keys[i], err)
			}
		}
		storetest.CheckFor(t, 10*time.Second, 2*time.Millisecond, func() error {
			for _, m := range mirrors {
				for _, k := range keys {
					if !m.has(k) {
						return fmt.Errorf("%s lacks %s", m.name, k)
					}
				}
			}
			return nil
		})

		stopped := time.Now()
		srv.Stop()
		srv.Start()
		up := time.Now()
		// A burst of deletions as soon as the writer can make them.
		deleted := make(map[string]time.Time, len(keys))
		for _, k := range keys {
			ctx, cancel := writer.WriteCtx(context.Background())
			err := store.Delete(ctx, writer.Keys, k)
			cancel()
			if err != nil {
				t.Fatalf("round %d: delete %s: %v", r, k, err)
			}
			deleted[k] = time.Now()
		}
		var lat []time.Duration
		storetest.CheckFor(t, 30*time.Second, time.Millisecond, func() error {
			lat = lat[:0]
			for _, m := range mirrors {
				for _, k := range keys {
					at, ok := m.goneAt(k)
					if !ok {
						return fmt.Errorf("%s still has %s %v after its deletion", m.name, k, time.Since(deleted[k]))
					}
					lat = append(lat, max(at.Sub(deleted[k]), 0))
				}
			}
			return nil
		})
		all = append(all, lat...)
		lines = append(lines, fmt.Sprintf("round %d: restart took %v, the first deletion %v after it, the last %v; revocation %s",
			r, up.Sub(stopped).Round(time.Millisecond), deleted[keys[0]].Sub(up).Round(time.Millisecond),
			deleted[keys[len(keys)-1]].Sub(up).Round(time.Millisecond), distribution(lat)))
		settled(fmt.Sprintf("after restart %d", r+1), 10*time.Second)
	}
	t.Logf("%d restarts in %v", rounds, time.Since(start).Round(time.Millisecond))
	for _, l := range lines {
		t.Log(l)
	}
	t.Logf("revocation after a restart (per deletion and watcher): %s", distribution(all))
	if p := percentile(all, 99); p > target {
		t.Errorf("p99 of revocation after a restart %v, want ≤ %v", p, target)
	}

	// Reconnects to a server that kept the watchers' consumers: each
	// watcher starts over on its reconnect, and must delete the consumer
	// it leaves, not let it linger until the server drops it as inactive.
	for i := range 5 {
		for _, s := range stores {
			before := s.NC.Stats().Reconnects
			if err := s.NC.ForceReconnect(); err != nil {
				t.Fatal(err)
			}
			storetest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
				if s.NC.Stats().Reconnects == before || !s.Connected() {
					return fmt.Errorf("not reconnected")
				}
				return nil
			})
		}
		// The watchers still work: a key comes, and goes.
		key := fmt.Sprintf("reconnect%d", i)
		if _, err := writer.Keys.Put(context.Background(), key, []byte("v")); err != nil {
			t.Fatal(err)
		}
		storetest.CheckFor(t, 10*time.Second, 2*time.Millisecond, func() error {
			for _, m := range mirrors {
				if !m.has(key) {
					return fmt.Errorf("%s lacks %s", m.name, key)
				}
			}
			return nil
		})
		if err := writer.Keys.Delete(context.Background(), key); err != nil {
			t.Fatal(err)
		}
		storetest.CheckFor(t, 10*time.Second, 2*time.Millisecond, func() error {
			for _, m := range mirrors {
				if _, ok := m.goneAt(key); !ok {
					return fmt.Errorf("%s: %s not deleted", m.name, key)
				}
			}
			return nil
		})
		// Within 3 s: an ephemeral consumer left behind lives 5 s.
		settled(fmt.Sprintf("after forced reconnect %d", i+1), 3*time.Second)
	}
}
