// Package shardmap owns the sharded, padded map that the hot-path packages
// keep their per-key state in: credentials by id, tenants' quota state,
// rate and concurrency counters by key. A lookup takes the read lock of
// one of 64 shards, never a global lock, and does not allocate.
package shardmap

import (
	"hash/maphash"
	"sync"
	"unsafe"
)

// shards is the number of shards of a Map: a power of two, so that the
// modulo below is a mask.
const shards = 64

// stride is the size of a shard with its padding. Every request takes the
// read lock of its key's shard, which writes the lock's reader count, so
// two shards on one cache line would make requests for unrelated keys on
// different cores invalidate each other's line (false sharing). 128 bytes
// rather than one 64-byte line: Go cannot align a struct to a cache line,
// so a shard may start anywhere in one; with a 128-byte stride the hot
// fields (the lock and the map pointer, 32 bytes) of two shards are 96
// bytes apart and never share a line, wherever the array starts. It also
// keeps them out of the pair of lines that Intel's adjacent-line prefetcher
// fetches together, for an array that starts on a 128-byte boundary (as
// the allocator places a Map: its size class is a multiple of 128). A Map
// costs 8 KiB.
const stride = 128

// Map is a map from string keys to values of type V, split into 64 shards
// by a hash of the key, each with its own read-write lock. V is usually a
// pointer: values are copied in and out. A Map must be created by New
// and must not be copied.
type Map[V any] struct {
	shards [shards]shard[V]
	seed   maphash.Seed
}

type shard[V any] struct {
	body[V]
	_ [stride - unsafe.Sizeof(body[V]{})]byte
}

type body[V any] struct {
	mu sync.RWMutex // protects m
	m  map[string]V
}

// New returns an empty map sized for about hint keys.
func New[V any](hint int) *Map[V] {
	m := &Map[V]{seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].m = make(map[string]V, max(hint, 0)/shards+1)
	}
	return m
}

func (m *Map[V]) shard(key string) *shard[V] {
	return &m.shards[maphash.String(m.seed, key)%shards]
}

// Get returns the value of key, and whether there is one.
func (m *Map[V]) Get(key string) (V, bool) {
	sh := m.shard(key)
	sh.mu.RLock()
	v, ok := sh.m[key]
	sh.mu.RUnlock()
	return v, ok
}

// GetBytes is Get for a key held in a byte slice, without allocating a
// string for it.
func (m *Map[V]) GetBytes(key []byte) (V, bool) {
	// maphash.Bytes(seed, b) == maphash.String(seed, string(b)): same shard.
	sh := &m.shards[maphash.Bytes(m.seed, key)%shards]
	sh.mu.RLock()
	v, ok := sh.m[string(key)]
	sh.mu.RUnlock()
	return v, ok
}

// GetOrCreate returns the value of key, storing mk() first if there is
// none. mk runs under the write lock of key's shard, at most once per key
// stored: it must not use m. When key is present GetOrCreate takes only
// the read lock and does not allocate.
func (m *Map[V]) GetOrCreate(key string, mk func() V) V {
	sh := m.shard(key)
	sh.mu.RLock()
	v, ok := sh.m[key]
	sh.mu.RUnlock()
	if ok {
		return v
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if v, ok = sh.m[key]; !ok {
		v = mk()
		sh.m[key] = v
	}
	return v
}

// Store sets the value of key.
func (m *Map[V]) Store(key string, v V) {
	sh := m.shard(key)
	sh.mu.Lock()
	sh.m[key] = v
	sh.mu.Unlock()
}

// Delete removes key.
func (m *Map[V]) Delete(key string) {
	sh := m.shard(key)
	sh.mu.Lock()
	delete(sh.m, key)
	sh.mu.Unlock()
}

// Range calls f for every key and value, shard after shard, until f
// returns false. f runs under the read lock of the shard it is given a
// key of: it must not store or delete in m (that would deadlock), and
// keys of that shard cannot be added until it returns. Keys added or
// removed meanwhile in other shards may or may not be seen.
func (m *Map[V]) Range(f func(key string, v V) bool) {
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.RLock()
		for k, v := range sh.m {
			if !f(k, v) {
				sh.mu.RUnlock()
				return
			}
		}
		sh.mu.RUnlock()
	}
}

// Len returns the number of keys, counted shard after shard.
func (m *Map[V]) Len() int {
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}
