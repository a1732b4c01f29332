package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// failoverMirror records when each key left it, and checks Watch's
// contract: one call at a time, and updates in revision order, none twice.
// The test writes k0, deletes k0, writes k1, ...: event 2r is the write
// of kr and 2r+1 its deletion, so each Update must have a higher event
// number than the one before.
type failoverMirror struct {
	t       *testing.T
	name    string
	mu      sync.Mutex
	busy    bool
	keys    map[string]bool
	deleted map[string]time.Time
	last    int // event number of the last Update
	snaps   int
}

func newFailoverMirror(t *testing.T, name string) *failoverMirror {
	return &failoverMirror{t: t, name: name, keys: map[string]bool{}, deleted: map[string]time.Time{}, last: -1}
}

func (m *failoverMirror) enter() {
	m.mu.Lock()
	if m.busy {
		m.t.Errorf("%s: concurrent Mirror calls", m.name)
	}
	m.busy = true
}

func (m *failoverMirror) leave() {
	m.busy = false
	m.mu.Unlock()
}

func (m *failoverMirror) Snapshot(entries map[string][]byte) {
	now := time.Now()
	m.enter()
	defer m.leave()
	m.snaps++
	for k := range m.keys {
		if _, ok := entries[k]; !ok {
			m.deleted[k] = now
		}
	}
	m.keys = map[string]bool{}
	for k := range entries {
		m.keys[k] = true
	}
}

func (m *failoverMirror) Update(k string, v []byte) {
	now := time.Now()
	m.enter()
	defer m.leave()
	var r int
	if _, err := fmt.Sscanf(k, "k%d", &r); err != nil {
		m.t.Errorf("%s: unexpected key %q", m.name, k)
		return
	}
	ev := 2 * r
	if v == nil {
		ev++
	}
	if ev <= m.last {
		m.t.Errorf("%s: update %d (%s, deleted %v) after update %d: out of order or duplicated", m.name, ev, k, v == nil, m.last)
	}
	m.last = ev
	if v == nil {
		if m.keys[k] {
			m.deleted[k] = now
		}
		delete(m.keys, k)
		return
	}
	m.keys[k] = true
}

func (m *failoverMirror) has(k string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.keys[k]
}

// deletedAt is when k left the mirror; false while it is there.
func (m *failoverMirror) deletedAt(k string) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.keys[k] {
		return time.Time{}, false
	}
	at, ok := m.deleted[k]
	return at, ok
}

// TestRevocationThroughFailover (issue 14, item 4): a key deleted while a
// node of the cluster is down must be gone from every replica's mirror
// within 2 s (p99) of the delete's success. Each watcher starts connected
// to a different single node, so that stopping the node it is on makes
// its client reconnect elsewhere. The node stopped is the one a watcher is
// connected to (rotating over the watchers), and every third round the
// keys stream's leader. A watcher's consumer lives on any of the stream's
// nodes, so stopping a node can also take the consumer of a watcher that
// is connected elsewhere.
func TestRevocationThroughFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster failover test")
	}
	// The target, p99 ≤ 2 s, is asserted when
	// TOLLGATE_STRICT_TIMING=1 (a quiet machine); by default 3 s, which
	// the watchers this test was written for (p99 3.3-5.9 s) still fail,
	// with room for a busy CI machine under -race.
	target := 3 * time.Second
	if os.Getenv("TOLLGATE_STRICT_TIMING") == "1" {
		target = 2 * time.Second
	}
	const (
		nodes  = 3
		rounds = 10
		stream = "KV_" + store.BucketKeys
		// globalAccount is the account of a server without accounts.
		globalAccount = "$G"
	)
	c := storetest.StartCluster(t, nodes)
	open := c.Open
	writer := open(c.URL(), "writer")
	mirrors := make([]*failoverMirror, nodes)
	watchers := make([]*store.Store, nodes)
	for i := range nodes {
		s := open(c.NodeURL(i), fmt.Sprintf("watcher%d", i))
		m := newFailoverMirror(t, fmt.Sprintf("watcher%d", i))
		watchers[i], mirrors[i] = s, m
		log := zap.NewNop()
		if testing.Verbose() {
			log = zaptest.NewLogger(t).Named(m.name)
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

	// retry runs op until it succeeds: during a failover the bucket has
	// no leader for a few seconds.
	retry := func(what string, op func(context.Context) error) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := op(ctx)
			cancel()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", what, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// settled returns the keys stream's leader once every node is running
	// and healthy: its streams and consumers are current.
	settled := func() int {
		t.Helper()
		leader := -1
		storetest.CheckFor(t, 20*time.Second, 5*time.Millisecond, func() error {
			leader = -1
			for i := range nodes {
				ns := c.Server(i)
				if h := ns.Healthz(nil); h.Status != "ok" {
					return fmt.Errorf("n%d: %s", i, h.Error)
				}
				if ns.JetStreamIsStreamLeader(globalAccount, stream) {
					leader = i
				}
			}
			if leader < 0 {
				return fmt.Errorf("stream has no leader")
			}
			return nil
		})
		return leader
	}
	node := func(s *store.Store) int {
		var i int
		if _, err := fmt.Sscanf(s.NC.ConnectedServerName(), "n%d", &i); err != nil {
			return -1
		}
		return i
	}

	var (
		worst = make([]time.Duration, 0, rounds) // per round, of the last replica
		all   []time.Duration                    // per round and replica
		lines []string
		start = time.Now()
	)
	for r := range rounds {
		key := fmt.Sprintf("k%d", r)
		var rev uint64
		retry("create "+key, func(ctx context.Context) error {
			var err error
			if rev, err = writer.Keys.Create(ctx, key, []byte("v")); errors.Is(err, jetstream.ErrKeyExists) {
				// An earlier attempt that timed out was applied.
				e, gerr := writer.Keys.Get(ctx, key)
				if gerr != nil {
					return gerr
				}
				rev, err = e.Revision(), nil
			}
			return err
		})
		storetest.CheckFor(t, 15*time.Second, 2*time.Millisecond, func() error {
			for _, m := range mirrors {
				if !m.has(key) {
					return fmt.Errorf("%s lacks %s", m.name, key)
				}
			}
			return nil
		})
		leader := settled()
		victim, why := leader, "leader"
		if r%3 != 2 {
			// A follower, one that a watcher is connected to if there is
			// one, rotating.
			var on, off []int
			for n := range nodes {
				if n == leader {
					continue
				}
				if slices.ContainsFunc(watchers, func(s *store.Store) bool { return node(s) == n }) {
					on = append(on, n)
				} else {
					off = append(off, n)
				}
			}
			why = "follower, watchers on it"
			if len(on) == 0 {
				on, why = off, "follower"
			}
			victim = on[r%len(on)]
		}
		if c.Server(victim).JetStreamIsLeader() {
			why += ", meta leader"
		}
		stopped := time.Now()
		c.Stop(victim)
		retry("delete "+key, func(ctx context.Context) error {
			err := writer.Keys.Delete(ctx, key, jetstream.LastRevision(rev))
			if apiErr := (*jetstream.APIError)(nil); errors.As(err, &apiErr) &&
				(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
					apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
				return nil // an earlier attempt that timed out was applied
			}
			return err
		})
		deleted := time.Now()
		lat := make([]time.Duration, nodes)
		storetest.CheckFor(t, 20*time.Second, time.Millisecond, func() error {
			for i, m := range mirrors {
				at, ok := m.deletedAt(key)
				if !ok {
					return fmt.Errorf("%s still has %s %v after its deletion", m.name, key, time.Since(deleted))
				}
				lat[i] = max(at.Sub(deleted), 0)
			}
			return nil
		})
		worst = append(worst, slices.Max(lat))
		all = append(all, lat...)
		lines = append(lines, fmt.Sprintf("round %2d: stopped n%d (%s), delete took %v: %s", r, victim, why,
			deleted.Sub(stopped).Round(time.Millisecond), roundAll(lat)))
		if r < rounds-1 {
			// Not after the last round: a node shut down while it still
			// recovers its streams leaks their goroutines.
			c.Start(victim)
		}
	}
	t.Logf("%d rounds in %v", rounds, time.Since(start).Round(time.Millisecond))
	for _, l := range lines {
		t.Log(l)
	}
	t.Logf("revocation on every replica: %s", distribution(worst))
	t.Logf("revocation per replica:      %s", distribution(all))
	if p := percentile(worst, 99); p > target {
		t.Errorf("p99 of revocation on every replica %v, want ≤ %v", p, target)
	}
}

func roundAll(d []time.Duration) string {
	s := make([]string, len(d))
	for i, x := range d {
		s[i] = x.Round(time.Millisecond).String()
	}
	return strings.Join(s, " ")
}

// percentile is the nearest-rank p-th percentile of d.
func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(i, 0)]
}

func distribution(d []time.Duration) string {
	return fmt.Sprintf("n=%d p50=%v p90=%v p99=%v max=%v", len(d), percentile(d, 50).Round(time.Millisecond),
		percentile(d, 90).Round(time.Millisecond), percentile(d, 99).Round(time.Millisecond),
		slices.Max(d).Round(time.Millisecond))
}
