package limiter

// concurrency.go owns the concurrency cap: requests in flight per key.

import (
	"sync/atomic"

	"github.com/tollgate/tollgate/internal/shardmap"
)

// Concurrency caps requests in flight per key.
type Concurrency struct {
	keys *shardmap.Map[*atomic.Int64]
}

// NewConcurrency returns an empty set of counters.
func NewConcurrency() *Concurrency {
	return &Concurrency{keys: shardmap.New[*atomic.Int64](0)}
}

func (c *Concurrency) counter(key string) *atomic.Int64 {
	return c.keys.GetOrCreate(key, newCounter)
}

func newCounter() *atomic.Int64 { return new(atomic.Int64) }

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
