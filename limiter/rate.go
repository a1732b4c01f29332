package limiter

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// Rate is a short-window limit: Requests per Per on average, with bursts
// of up to Burst. It is enforced locally on each replica (a rule of good
// behaviour, not a bill: exactness across replicas is the monthly quota's
// job).
type Rate struct {
	Requests int64
	Per      time.Duration
	Burst    int64
}

// RateDecision is the outcome of a rate check, by value.
type RateDecision struct {
	Allowed bool
	// Limit is Burst: the most requests allowed at once.
	Limit int64
	// Window is the rate's period in whole seconds (at least 1), for the
	// RateLimit-Policy header.
	Window int64
	// Remaining is how many more requests would be allowed right now.
	Remaining int64
	// Reset is how long until the bucket is full again, rounded up to
	// seconds; RetryAfter how long until the next request is allowed.
	Reset, RetryAfter int64
}

// Rates enforces rate limits with GCRA (the generic cell rate algorithm,
// a token bucket kept as one timestamp per key): each check is one
// compare-and-swap on the key's theoretical arrival time, with no lock
// and no allocation once the key is known.
type Rates struct {
	seed   maphash.Seed
	shards [64]rateShard
	now    func() time.Time
}

type rateShard struct {
	mu sync.RWMutex // protects m
	m  map[string]*gcra
	_  [40]byte
}

type gcra struct {
	tat atomic.Int64 // theoretical arrival time, unix nanoseconds
}

// NewRates returns an empty set of rate limiters; now is the clock
// (default time.Now).
func NewRates(now func() time.Time) *Rates {
	if now == nil {
		now = time.Now
	}
	r := &Rates{seed: maphash.MakeSeed(), now: now}
	for i := range r.shards {
		r.shards[i].m = map[string]*gcra{}
	}
	return r
}

func (r *Rates) state(key string) *gcra {
	sh := &r.shards[maphash.String(r.seed, key)%uint64(len(r.shards))]
	sh.mu.RLock()
	g := sh.m[key]
	sh.mu.RUnlock()
	if g != nil {
		return g
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if g = sh.m[key]; g == nil {
		g = &gcra{}
		sh.m[key] = g
	}
	return g
}

// Allow spends cost requests of key's rate. A zero Rate allows everything.
func (r *Rates) Allow(key string, rate Rate, cost int64) RateDecision {
	if rate.Requests <= 0 || rate.Per <= 0 {
		return RateDecision{Allowed: true}
	}
	burst := max(rate.Burst, 1)
	emission := max(int64(rate.Per)/rate.Requests, 1) // nanoseconds per request
	tolerance := emission * (burst - 1)
	g := r.state(key)
	window := max(int64(rate.Per/time.Second), 1)
	now := r.now().UnixNano()
	for {
		tat := g.tat.Load()
		base := max(tat, now)
		next := base + emission*cost
		if ahead := next - now - emission; ahead > tolerance {
			// Refused: the bucket stays as it is.
			wait := ahead - tolerance
			return RateDecision{Limit: burst, Window: window, Remaining: 0,
				Reset: ceilSec(base - now), RetryAfter: max(ceilSec(wait), 1)}
		}
		if g.tat.CompareAndSwap(tat, next) {
			left := (tolerance - (next - now - emission)) / emission
			return RateDecision{Allowed: true, Limit: burst, Window: window, Remaining: max(left, 0), Reset: ceilSec(next - now)}
		}
	}
}

func ceilSec(ns int64) int64 {
	if ns <= 0 {
		return 0
	}
	return (ns + int64(time.Second) - 1) / int64(time.Second)
}

// Concurrency caps requests in flight per key.
type Concurrency struct {
	seed   maphash.Seed
	shards [64]concShard
}

type concShard struct {
	mu sync.RWMutex // protects m
	m  map[string]*atomic.Int64
	_  [40]byte
}

// NewConcurrency returns an empty set of counters.
func NewConcurrency() *Concurrency {
	c := &Concurrency{seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = map[string]*atomic.Int64{}
	}
	return c
}

func (c *Concurrency) counter(key string) *atomic.Int64 {
	sh := &c.shards[maphash.String(c.seed, key)%uint64(len(c.shards))]
	sh.mu.RLock()
	n := sh.m[key]
	sh.mu.RUnlock()
	if n != nil {
		return n
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if n = sh.m[key]; n == nil {
		n = new(atomic.Int64)
		sh.m[key] = n
	}
	return n
}

// Acquire takes one of key's max slots; it reports false, taking nothing,
// when all are in use. Every true must be paired with a Release.
func (c *Concurrency) Acquire(key string, max int64) (inFlight int64, ok bool) {
	n := c.counter(key)
	v := n.Add(1)
	if v > max {
		n.Add(-1)
		return v - 1, false
	}
	return v, true
}

// Release returns a slot taken by Acquire.
func (c *Concurrency) Release(key string) { c.counter(key).Add(-1) }

// InFlight returns key's requests in flight.
func (c *Concurrency) InFlight(key string) int64 { return c.counter(key).Load() }
