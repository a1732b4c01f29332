package limiter

// rate.go owns the short-window rate limit: GCRA per key (credential or
// tenant), enforced locally on each replica.

import (
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/shardmap"
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

// State is the limit's state as the proxy shows it in headers.
func (d RateDecision) State() access.Rate {
	return access.Rate{Limit: d.Limit, Window: d.Window, Remaining: d.Remaining, Reset: d.Reset, RetryAfter: d.RetryAfter}
}

// Rates enforces rate limits with GCRA (the generic cell rate algorithm,
// a token bucket kept as one timestamp per key): each check is one
// compare-and-swap on the key's theoretical arrival time, with no lock
// and no allocation once the key is known.
type Rates struct {
	keys *shardmap.Map[*gcra]
	now  func() time.Time
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
	return &Rates{keys: shardmap.New[*gcra](0), now: now}
}

func (r *Rates) state(key string) *gcra {
	return r.keys.GetOrCreate(key, newGCRA)
}

func newGCRA() *gcra { return &gcra{} }

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
