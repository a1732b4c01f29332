package store

import (
	"context"
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
const (
	watchIdle          = time.Second
	watchGrace         = 250 * time.Millisecond
	watchTick          = 50 * time.Millisecond
	watchStatusTimeout = time.Second
)

// Watch mirrors kv into m until ctx ends. It supervises the watcher: a
// NATS watcher can go silent after a server restart (nats.go #1777), or
// when the node its consumer lives on dies, so whenever nothing has
// arrived for watchIdle Watch compares the last revision it applied with
// the stream's last sequence and, if that revision does not arrive within
// watchGrace, recreates the watcher from the next revision. ready is
// closed after the first snapshot.
func Watch(ctx context.Context, kv jetstream.KeyValue, m Mirror, log *zap.Logger, ready chan<- struct{}) {
	var (
		lastRev  uint64
		snapshot = true // the next watcher starts with a full snapshot
		backoff  = 100 * time.Millisecond
		// suspect: the last watcher fell behind, or the bucket did not
		// answer; check every watchGrace until the bucket says this one
		// is caught up.
		suspect bool
	)
	for ctx.Err() == nil {
		var opts []jetstream.WatchOpt
		if !snapshot {
			opts = append(opts, jetstream.ResumeFromRevision(lastRev+1))
		}
		wctx, cancel := context.WithCancel(ctx)
		w, err := kv.WatchAll(wctx, opts...)
		if err != nil {
			cancel()
			log.Warn("watch failed, retrying", zap.String("bucket", kv.Bucket()), zap.Error(err), zap.Duration("backoff", backoff))
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			suspect = true
			continue
		}
		var initial map[string][]byte
		loader, _ := m.(Loader)
		loading := snapshot && loader != nil
		if loading {
			loader.BeginLoad()
		} else if snapshot {
			initial = map[string][]byte{}
		}
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
		)
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case e, ok := <-w.Updates():
				if !ok {
					break loop
				}
				lastUpdate = time.Now()
				backoff = 100 * time.Millisecond
				if e == nil { // caught up with the initial state
					if initial != nil || loading {
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
				default:
					if behind == 0 {
						behindSince = time.Now()
					}
					behind = max(behind, r.last)
				}
			case now := <-tick.C:
				if initial != nil || loading {
					continue // the initial state is still arriving
				}
				if behind != 0 && lastRev >= behind {
					behind = 0
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
						results <- lastSeq(wctx, kv)
					}()
				}
			}
		}
		tick.Stop()
		_ = w.Stop()
		cancel()
		if checking {
			<-results // ends with wctx
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
