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

// Watch mirrors kv into m until ctx ends. It supervises the watcher: a
// NATS watcher can go silent after a server restart (nats.go #1777), so
// every few seconds Watch compares the last revision it applied with the
// stream's last sequence and, if they differ and nothing arrived meanwhile,
// recreates the watcher from the next revision. ready is closed after the
// first snapshot.
func Watch(ctx context.Context, kv jetstream.KeyValue, m Mirror, log *zap.Logger, ready chan<- struct{}) {
	var (
		lastRev  uint64
		snapshot = true // the next watcher starts with a full snapshot
		backoff  = 100 * time.Millisecond
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
		check := time.NewTicker(3 * time.Second)
		progressed := false
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case e, ok := <-w.Updates():
				if !ok {
					break loop
				}
				progressed = true
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
			case <-check.C:
				if progressed {
					progressed = false
					continue
				}
				sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
				st, err := kv.Status(sctx)
				scancel()
				if err != nil {
					continue
				}
				if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo().State.LastSeq > lastRev && initial == nil && !loading {
					log.Info("watcher behind the bucket, recreating", zap.String("bucket", kv.Bucket()),
						zap.Uint64("applied", lastRev), zap.Uint64("last", bs.StreamInfo().State.LastSeq))
					break loop
				}
			}
		}
		check.Stop()
		_ = w.Stop()
		cancel()
	}
}
