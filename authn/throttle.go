package authn

import (
	"hash/maphash"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// throttleShards is the number of shards of a Throttle: a power of two,
// so that the modulo is a mask.
const throttleShards = 64

// throttleStride is the size of a shard with its padding: 128 bytes, so
// that the locks of two shards never share a cache line (see
// internal/shardmap, whose layout this is).
const throttleStride = 128

// DefaultThrottleKeys is the bound on the keys of a Throttle made with
// maxKeys ≤ 0.
const DefaultThrottleKeys = 1 << 16

// Throttle counts failures per key (a client address, a user name) in a
// token bucket: Limit failures per Window; once they are spent, Blocked
// reports true until the bucket refills enough for one more. Only
// failures create entries, so a key that never failed costs one map
// lookup. It is split into 64 shards by a hash of the key, each with its
// own lock, and bounded: when a shard is full, entries whose bucket has
// refilled completely are dropped to make room, and if there are none the
// new key is not tracked: the throttle fails open rather than growing
// without bound. A nil *Throttle, or one with limit 0, never blocks. A
// Throttle must be created by NewThrottle and must not be copied.
type Throttle[K comparable] struct {
	shards [throttleShards]throttleShard[K]
	hash   func(K) uint64
	// A bucket is kept as the instant it is full again (GCRA): each
	// failure pushes it interval further, from now at the earliest and to
	// now + window at the latest, and a key is blocked while it is more
	// than tau = window - interval ahead, that is while less than one
	// failure is left in the bucket. Instants are nanoseconds since epoch
	// on the monotonic clock.
	interval, window, tau int64
	epoch                 time.Time
	now                   func() time.Time // time.Now; tests set a clock
}

type throttleShard[K comparable] struct {
	throttleBody[K]
	_ [throttleStride - unsafe.Sizeof(throttleBody[K]{})]byte
}

type throttleBody[K comparable] struct {
	// tracked is len(m), written under mu and read without it: Blocked
	// of a key in a shard that tracks none (every request while nothing
	// fails) takes no lock, so clients behind one address (a load
	// balancer, a benchmark) do not all queue on one shard's mutex.
	tracked atomic.Int32
	mu      sync.Mutex // protects the fields below
	// m holds each tracked key's full instant.
	m map[K]int64
	// max is the most keys m may hold: the shard's part of maxKeys.
	max int
	// sweep is a lower bound of the full instants in m: before it, a
	// full shard has nothing to drop and is not scanned.
	sweep int64
}

// NewThrottle returns a throttle that blocks a key after limit failures
// in window, tracking at most maxKeys keys (DefaultThrottleKeys if
// maxKeys ≤ 0; with fewer than 64, keys of some shards are never
// tracked). hash spreads keys over the shards (HashAddr, HashString); if
// nil, maphash.Comparable is used, which may allocate. A limit or window
// ≤ 0 makes a throttle that never blocks.
func NewThrottle[K comparable](limit int, window time.Duration, maxKeys int, hash func(K) uint64) *Throttle[K] {
	t := &Throttle[K]{hash: hash, epoch: time.Now(), now: time.Now}
	if limit <= 0 || window <= 0 {
		return t
	}
	if t.hash == nil {
		t.hash = func(k K) uint64 { return maphash.Comparable(throttleSeed, k) }
	}
	if maxKeys <= 0 {
		maxKeys = DefaultThrottleKeys
	}
	t.window = int64(window)
	t.interval = max(t.window/int64(limit), 1)
	t.tau = t.window - t.interval
	for i := range t.shards {
		sh := &t.shards[i]
		sh.max = maxKeys / throttleShards
		if i < maxKeys%throttleShards {
			sh.max++
		}
		sh.m = make(map[K]int64)
		sh.sweep = math.MinInt64
	}
	return t
}

func (t *Throttle[K]) shard(k K) *throttleShard[K] {
	return &t.shards[t.hash(k)%throttleShards]
}

// clock returns the time in nanoseconds since t.epoch.
func (t *Throttle[K]) clock() int64 { return int64(t.now().Sub(t.epoch)) }

// Blocked reports whether k has spent its failures, and when it may try
// again. It does not allocate, and it reads the clock only for a key that
// has failed.
func (t *Throttle[K]) Blocked(k K) (retryAfter time.Duration, blocked bool) {
	if t == nil || t.interval == 0 {
		return 0, false
	}
	sh := t.shard(k)
	if sh.tracked.Load() == 0 {
		return 0, false
	}
	sh.mu.Lock()
	full, ok := sh.m[k]
	if !ok {
		sh.mu.Unlock()
		return 0, false
	}
	now := t.clock()
	if full <= now { // refilled completely: nothing left to remember
		delete(sh.m, k)
		sh.tracked.Store(int32(len(sh.m)))
	}
	sh.mu.Unlock()
	if wait := full - now - t.tau; wait > 0 {
		return time.Duration(wait), true
	}
	return 0, false
}

// Fail counts one failure of k.
func (t *Throttle[K]) Fail(k K) {
	if t == nil || t.interval == 0 {
		return
	}
	sh := t.shard(k)
	sh.mu.Lock()
	now := t.clock()
	full, ok := sh.m[k]
	if !ok {
		if len(sh.m) >= sh.max && !sh.makeRoom(now) {
			sh.mu.Unlock()
			return
		}
		full = now
	}
	// Failures while blocked do not lengthen the block past a window: the
	// bucket holds no fewer than zero failures.
	full = min(max(full, now)+t.interval, now+t.window)
	sh.m[k] = full
	sh.tracked.Store(int32(len(sh.m)))
	sh.sweep = min(sh.sweep, full)
	sh.mu.Unlock()
}

// makeRoom drops the entries whose bucket is full at now, and reports
// whether the shard has room for one more. sh.mu must be held.
func (sh *throttleShard[K]) makeRoom(now int64) bool {
	if now < sh.sweep {
		return false
	}
	next := int64(math.MaxInt64)
	for k, full := range sh.m {
		if full <= now {
			delete(sh.m, k)
		} else {
			next = min(next, full)
		}
	}
	sh.sweep = next
	sh.tracked.Store(int32(len(sh.m)))
	return len(sh.m) < sh.max
}

// Len returns the number of keys tracked, including those whose bucket
// has refilled but that have not been dropped yet.
func (t *Throttle[K]) Len() int {
	if t == nil {
		return 0
	}
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// throttleSeed seeds the hashes of throttle keys, random per process so
// that a client cannot pick keys that all fall in one shard.
var throttleSeed = maphash.MakeSeed()

// HashAddr hashes a client address for a Throttle. It does not allocate.
func HashAddr(a netip.Addr) uint64 {
	b := a.As16()
	return maphash.Bytes(throttleSeed, b[:])
}

// HashString hashes a string key (a user name) for a Throttle.
func HashString(s string) uint64 { return maphash.String(throttleSeed, s) }
