package store

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Mirror receives the contents of a bucket. Snapshot is called with every
// live key once the initial state has been read (and again whenever the
// watcher had to start over); Update with each later change, value nil for
// a deletion. Calls are made from one goroutine, in revision order.
type Mirror interface {
	Snapshot(entries map[string][]byte)
	Update(key string, value []byte)
}

// Loader is a Mirror that takes the initial state entry by entry instead
// of as one map of raw values, so that a large bucket (a million keys) is
// not held twice, raw and decoded, while it loads. Watch calls BeginLoad
// when a watcher starts over, Load for each entry of its initial state
// (value nil for a deletion, and a key may come again with a later
// value), and Loaded when the initial state is complete: the mirror keeps
// what it had until then. Snapshot is not called on a Loader.
type Loader interface {
	Mirror
	BeginLoad()
	Load(key string, value []byte)
	Loaded()
}

// Supervision of a watcher (see Watch). A watcher's ordered consumer is
// an R1 ephemeral on one node of the stream's peers, not necessarily the
// one the client is connected to: when that node dies the consumer is gone
// and nothing tells the client (nats.go only resets an ordered consumer
// after two missed 5 s heartbeats), so a revocation would reach this
// replica 10 s late. Watch asks the bucket instead: after watchIdle
// without an update it compares the stream's last sequence with the last
// revision it applied, and recreates the watcher from the next revision
// when that revision has not arrived within watchGrace. After it had to
// recreate one, or when the bucket did not answer (a leader election),
// it asks every watchGrace until the bucket says it is caught up. That
// bounds how late a change arrives through a failover at about watchIdle
// + watchGrace + one consumer creation (issue 14: ≤ 2 s p99), at the cost
// of one stream info request per watchIdle per idle watcher (none while
// updates arrive). A status request runs beside the watcher: while the
// bucket has no leader it waits watchStatusTimeout, and updates must not
// wait with it.
//
// A reconnect says more, and at once: the server restarted (it keeps no
// ordered consumer: they live in memory), or the client moved to another
// node of a cluster, with or without the node that held the consumer. On
// a bucket of a Store (Keys, Tenants, LimitRequests) Watch hears of each
// reconnect (Store.Reconnected) and replaces its watcher with one from the
// next revision, whether or not the bucket already has changes it missed:
// a change must not wait for the periodic check (a revocation after a
// NATS restart was admitted elsewhere for up to 5.6 s). The replacement is
// created beside the running watcher, which goes on delivering until it is
// ready: creating a consumer takes the cluster's meta leader, and when the
// reconnect is that leader's death the creation waits for the next one
// (seconds), while a consumer that lived on another node goes on working.
// Updates both deliver are applied once (by revision). A gap in the
// revisions delivered says nothing: a bucket keeps one revision of a key,
// so every overwrite or deletion removes the revision before it, and an
// ordered consumer skips what is gone.
//
// A watcher that is replaced is stopped beside the next one: Stop
// unsubscribes and deletes its consumer (none is left behind on a server
// that kept it), which waits up to JetStream's 5 s for an answer during
// an election. A watcher is created under watchCreateTimeout, and given up
// at a reconnect: the request that creates its consumer waits for an
// answer as long as the watcher lives, and one that was sent before the
// connection dropped, or to a cluster that lost its meta leader, gets
// none.
const (
	watchIdle          = time.Second
	watchGrace         = 250 * time.Millisecond
	watchTick          = 50 * time.Millisecond
	watchStatusTimeout = time.Second
	watchCreateTimeout = 2 * time.Second
	// watchBackoff is the first wait after a watcher could not be
	// created; it doubles up to watchIdle, and a reconnect cuts it short.
	watchBackoff = 100 * time.Millisecond
	// watchStopTimeout bounds how long a stopped watcher's last updates
	// are drained (see stopWatcher).
	watchStopTimeout = 10 * time.Second
)

// reconnectNotifier is a bucket that tells of its connection's
// reconnects: a Store's.
type reconnectNotifier interface {
	reconnected() <-chan struct{}
}

// replacement is the outcome of creating a watcher to replace the running
// one (see createWatcher).
type replacement struct {
	w      jetstream.KeyWatcher
	cancel context.CancelFunc
	err    error
}

// Watch mirrors kv into m until ctx ends. It supervises the watcher: a
// NATS watcher can go silent after a server restart (nats.go #1777), or
// when the node its consumer lives on dies, so it replaces the watcher
// with one from the next revision when the connection to NATS is
// re-established (kv is a Store's bucket), and whenever nothing has
// arrived for watchIdle it compares the last revision it applied with the
// stream's last sequence and, if that revision does not arrive within
// watchGrace, recreates the watcher too. ready is closed after the first
// snapshot.
func Watch(ctx context.Context, kv jetstream.KeyValue, m Mirror, log *zap.Logger, ready chan<- struct{}) {
	reconnected := func() <-chan struct{} { return nil } // never
	if n, ok := kv.(reconnectNotifier); ok {
		reconnected = n.reconnected
	}
	ws := new(watchStats) // a bucket of no Store: counted nowhere
	if b, ok := kv.(*bucket); ok && b.store != nil {
		ws = b.store.watchStats(kv.Bucket())
	}
	ws.started.Store(time.Now().UnixNano())
	var (
		lastRev  uint64
		created  bool   // a watcher was created before: the next is a restart
		snapshot = true // the next watcher starts with a full snapshot
		backoff  = watchBackoff
		// suspect: the last watcher fell behind, or the bucket did not
		// answer; check every watchGrace until the bucket says this one
		// is caught up.
		suspect bool
		// stopping: replaced watchers being stopped.
		stopping sync.WaitGroup
	)
	defer stopping.Wait()
	stop := func(w jetstream.KeyWatcher, cancel context.CancelFunc) {
		stopping.Add(1)
		go func() {
			defer stopping.Done()
			stopWatcher(w, cancel)
		}()
	}
	for ctx.Err() == nil {
		// Taken before the watcher is created: a reconnect from now on
		// makes this one start over.
		rc := reconnected()
		var opts []jetstream.WatchOpt
		if !snapshot {
			opts = append(opts, jetstream.ResumeFromRevision(lastRev+1))
		}
		wctx, cancel := context.WithCancel(ctx)
		w, err := createWatcher(wctx, cancel, kv, opts, rc)
		if err != nil {
			if w != nil {
				stop(w, cancel)
			}
			log.Warn("watch failed, retrying", zap.String("bucket", kv.Bucket()), zap.Error(err), zap.Duration("backoff", backoff))
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
				backoff = min(backoff*2, watchIdle)
			case <-rc: // the connection is back: at once
				backoff = watchBackoff
			}
			suspect = true
			continue
		}
		if created {
			ws.restarts.Add(1)
		}
		created = true
		var initial map[string][]byte
		loader, _ := m.(Loader)
		loading := snapshot && loader != nil
		if loading {
			loader.BeginLoad()
		} else if snapshot {
			initial = map[string][]byte{}
		}
		// Status requests end with this loop, not with a watcher's stop.
		sctx, scancel := context.WithCancel(ctx)
		var (
			tick = time.NewTicker(watchTick)
			// lastUpdate is when the watcher last delivered something;
			// lastCheck when the last status request was sent.
			lastUpdate = time.Now()
			lastCheck  time.Time
			checking   bool // a status request is outstanding
			results    = make(chan lastSeqResult, 1)
			// behind is the stream's last sequence while this watcher has
			// not applied it yet, seen at behindSince; 0 when caught up.
			behind      uint64
			behindSince time.Time
			// next delivers the replacement being created after a
			// reconnect, nil when none is; nextRC is the reconnect
			// channel it was created under, nextCancel gives it up.
			next       chan replacement
			nextRC     <-chan struct{}
			nextCancel context.CancelFunc
			// nextAt is when to try again to replace the watcher, after
			// an attempt failed; zero when no attempt is due.
			nextAt time.Time
		)
		replace := func() {
			nctx, ncancel := context.WithCancel(ctx)
			ch, from, nrc := make(chan replacement, 1), lastRev+1, rc
			go func() {
				w, err := createWatcher(nctx, ncancel, kv, []jetstream.WatchOpt{jetstream.ResumeFromRevision(from)}, nrc)
				ch <- replacement{w, ncancel, err}
			}()
			next, nextRC, nextCancel, nextAt = ch, nrc, ncancel, time.Time{}
		}
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case <-rc:
				rc = reconnected()
				backoff = watchBackoff
				suspect = true
				if initial != nil || loading {
					log.Info("nats reconnected, loading again", zap.String("bucket", kv.Bucket()))
					break loop
				}
				log.Info("nats reconnected, replacing watcher", zap.String("bucket", kv.Bucket()),
					zap.Uint64("applied", lastRev))
				// One being created gives up at this reconnect, and is
				// started again when it says so.
				if next == nil {
					replace()
				}
			case r := <-next:
				next = nil
				if r.err != nil {
					if r.w != nil {
						stop(r.w, r.cancel)
					}
					select {
					case <-nextRC:
						// Given up at a reconnect: again, at once, unless
						// the reconnect is still to be seen (which does it).
						if nextRC != rc {
							replace()
						}
					default:
						log.Warn("replacing watcher failed, retrying", zap.String("bucket", kv.Bucket()),
							zap.Error(r.err), zap.Duration("backoff", backoff))
						nextAt = time.Now().Add(backoff)
						backoff = min(backoff*2, watchIdle)
					}
					continue
				}
				stop(w, cancel)
				w, cancel = r.w, r.cancel
				ws.restarts.Add(1)
				lastUpdate = time.Now()
			case e, ok := <-w.Updates():
				if !ok {
					break loop
				}
				lastUpdate = time.Now()
				backoff = watchBackoff
				if e == nil { // caught up with the initial state
					if initial != nil || loading {
						ws.caughtUp(0, lastUpdate)
						if loading {
							loader.Loaded()
							loading = false
						} else {
							m.Snapshot(initial)
							initial = nil
						}
						snapshot = false
						if ready != nil {
							close(ready)
							ready = nil
						}
					}
					continue
				}
				if e.Revision() <= lastRev && initial == nil && !loading {
					continue
				}
				lastRev = max(lastRev, e.Revision())
				ws.caughtUp(e.Delta(), lastUpdate)
				var v []byte
				if e.Operation() == jetstream.KeyValuePut {
					v = e.Value()
				}
				if loading {
					loader.Load(e.Key(), v)
					continue
				}
				if initial != nil {
					if v == nil {
						delete(initial, e.Key())
					} else {
						initial[e.Key()] = v
					}
					continue
				}
				m.Update(e.Key(), v)
			case r := <-results:
				checking = false
				switch {
				case initial != nil || loading:
				case !r.ok:
					suspect = true
				case r.last <= lastRev:
					suspect = false
					ws.caughtUp(0, time.Now())
				default:
					if behind == 0 {
						behindSince = time.Now()
					}
					behind = max(behind, r.last)
					ws.pending.Store(behind - lastRev)
				}
			case now := <-tick.C:
				if !nextAt.IsZero() && !now.Before(nextAt) && next == nil {
					replace()
				}
				if initial != nil || loading {
					continue // the initial state is still arriving
				}
				if behind != 0 && lastRev >= behind {
					behind = 0
				}
				if behind > lastRev {
					ws.pending.Store(behind - lastRev)
				}
				// Behind, and nothing has arrived for watchGrace since the
				// bucket said so: the consumer is gone.
				if behind != 0 && now.Sub(behindSince) >= watchGrace && now.Sub(lastUpdate) >= watchGrace {
					log.Info("watcher behind the bucket, recreating", zap.String("bucket", kv.Bucket()),
						zap.Uint64("applied", lastRev), zap.Uint64("last", behind))
					suspect = true
					break loop
				}
				every := watchIdle
				if suspect {
					every = watchGrace
				}
				if !checking && now.Sub(lastUpdate) >= every && now.Sub(lastCheck) >= every {
					checking, lastCheck = true, now
					go func() {
						results <- lastSeq(sctx, kv)
					}()
				}
			}
		}
		tick.Stop()
		scancel()
		if checking {
			<-results // ends with sctx
		}
		if next != nil {
			nextCancel()
			if r := <-next; r.w != nil {
				stop(r.w, r.cancel)
			}
		}
		stop(w, cancel)
	}
}

// createWatcher starts a watcher of kv under wctx; cancel, wctx's, ends
// it. It gives up, cancelling wctx, when the watcher's consumer is not
// created within watchCreateTimeout or the connection is re-established
// meanwhile (rc closed). With an error it may still return a watcher,
// made just as it gave up: the caller stops it (stopWatcher), which can
// take a while.
func createWatcher(wctx context.Context, cancel context.CancelFunc, kv jetstream.KeyValue, opts []jetstream.WatchOpt,
	rc <-chan struct{}) (jetstream.KeyWatcher, error) {
	created := make(chan struct{})
	var guard sync.WaitGroup
	guard.Add(1)
	go func() {
		defer guard.Done()
		t := time.NewTimer(watchCreateTimeout)
		defer t.Stop()
		select {
		case <-created:
		case <-wctx.Done():
		case <-t.C:
			cancel()
		case <-rc:
			cancel()
		}
	}()
	w, err := kv.WatchAll(wctx, opts...)
	close(created)
	guard.Wait()
	if err == nil && wctx.Err() != nil {
		return w, fmt.Errorf("create watcher: %w", wctx.Err()) // given up just as it was made
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("create watcher: %w", err)
	}
	return w, nil
}

// stopWatcher stops w, deleting its consumer, ends its context, and
// drains what it still delivers: its message handler may be blocked on a
// full updates channel, and closes the channel once it returns.
func stopWatcher(w jetstream.KeyWatcher, cancel context.CancelFunc) {
	_ = w.Stop()
	cancel()
	t := time.NewTimer(watchStopTimeout)
	defer t.Stop()
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
		case <-t.C:
			return
		}
	}
}

type lastSeqResult struct {
	last uint64
	ok   bool // false: the bucket did not answer
}

// lastSeq asks for the bucket stream's last sequence. It waits at most
// watchStatusTimeout: during a leader election nobody answers.
func lastSeq(ctx context.Context, kv jetstream.KeyValue) lastSeqResult {
	ctx, cancel := context.WithTimeout(ctx, watchStatusTimeout)
	defer cancel()
	st, err := kv.Status(ctx)
	if err != nil {
		return lastSeqResult{}
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return lastSeqResult{}
	}
	return lastSeqResult{last: bs.StreamInfo().State.LastSeq, ok: true}
}

// WatchState is how a bucket's mirror (Watch) stands against the bucket.
type WatchState struct {
	Bucket string
	// Pending is how many changes of the bucket the mirror had not yet
	// applied, as last known: the count pending behind the last change
	// delivered (from its consumer's metadata, so 0 once caught up), or,
	// when the periodic check found the watcher behind (gone silent), the
	// stream's last revision less the last one applied.
	Pending uint64
	// Restarts counts the watchers created to replace another: after a
	// reconnect, or when one was found behind or ended.
	Restarts int64
	// Current is when the mirror was last known to hold all the bucket
	// held: a change arrived with none pending behind it, or the periodic
	// check found it caught up (every second or so on an idle bucket).
	// Zero: not yet; Started is when Watch started.
	Current, Started time.Time
}

// Staleness is how long ago the mirror was last known to be current
// (since Watch started, if never): about a second at most while the
// watcher works, growing while it is cut off or silent.
func (w WatchState) Staleness(now time.Time) time.Duration {
	if w.Current.IsZero() {
		return now.Sub(w.Started)
	}
	return now.Sub(w.Current)
}

// watchStats are the counters behind a WatchState.
type watchStats struct {
	pending  atomic.Uint64
	restarts atomic.Int64
	// current and started are Unix nanoseconds (WatchState).
	current, started atomic.Int64
}

// caughtUp notes that, at now, pending changes of the bucket were left
// to apply.
func (ws *watchStats) caughtUp(pending uint64, now time.Time) {
	ws.pending.Store(pending)
	if pending == 0 {
		ws.current.Store(now.UnixNano())
	}
}

// watchStats returns bucket's counters, made on first use.
func (s *Store) watchStats(bucket string) *watchStats {
	v, _ := s.watches.LoadOrStore(bucket, new(watchStats))
	return v.(*watchStats)
}

// Watches returns the state of each bucket of s being mirrored by Watch,
// by bucket name.
func (s *Store) Watches() []WatchState {
	var out []WatchState
	s.watches.Range(func(k, v any) bool {
		ws := v.(*watchStats)
		st := WatchState{Bucket: k.(string), Pending: ws.pending.Load(), Restarts: ws.restarts.Load(),
			Started: time.Unix(0, ws.started.Load())}
		if c := ws.current.Load(); c != 0 {
			st.Current = time.Unix(0, c)
		}
		out = append(out, st)
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Bucket < out[j].Bucket })
	return out
}

// Reconnects returns how many times the connection to NATS was
// re-established.
func (s *Store) Reconnects() int64 { return s.reconnects.Load() }
