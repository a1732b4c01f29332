package authn

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/tollgate/tollgate/internal/shardmap"
)

// Method says how a credential authenticates. The zero Method matches
// nothing.
type Method uint8

// Authentication methods.
const (
	MethodAPIKey Method = 1 + iota
)

// String returns the method's name, as the backend sees it in
// X-Tollgate-Auth.
func (m Method) String() string {
	switch m {
	case MethodAPIKey:
		return "api_key"
	}
	return ""
}

// Credential is a verified identity. It is immutable once published in a
// Set: updates replace the pointer. A million of them are held on every
// replica, so it is kept to 96 bytes (BenchmarkCredentialMemory).
type Credential struct {
	ID     string
	Tenant string
	Name   string
	Digest [32]byte
	// Created is when the credential was made, in Unix nanoseconds (0:
	// unknown); see CreatedAt.
	Created int64
	Method  Method
}

// UnixNano returns t in Unix nanoseconds, 0 for the zero time (which
// UnixNano cannot represent), as Credential.Created holds it.
func UnixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// CreatedAt returns Created as a time in UTC (the zero time if unknown).
func (c *Credential) CreatedAt() time.Time {
	if c.Created == 0 {
		return time.Time{}
	}
	return time.Unix(0, c.Created).UTC()
}

// Set is the credential set held in memory on every replica, keyed by
// credential id. Reads take a per-shard read lock, never a global one;
// Replace swaps in a whole new snapshot atomically.
type Set struct {
	tab atomic.Pointer[table]
}

// table is one snapshot of the set's content.
type table = shardmap.Map[*Credential]

// NewSet returns an empty set.
func NewSet() *Set {
	s := &Set{}
	s.tab.Store(shardmap.New[*Credential](0))
	return s
}

// Get returns the credential with id, or nil.
func (s *Set) Get(id []byte) *Credential {
	c, _ := s.tab.Load().GetBytes(id)
	return c
}

// Put adds or replaces c.
func (s *Set) Put(c *Credential) { s.tab.Load().Store(c.ID, c) }

// Delete removes the credential with id.
func (s *Set) Delete(id string) { s.tab.Load().Delete(id) }

// Replace swaps the whole set for cs.
func (s *Set) Replace(cs []*Credential) {
	l := s.BeginLoad(len(cs))
	for _, c := range cs {
		l.Put(c)
	}
	l.Publish()
}

// Loading is a new content for a Set being built while the set still
// answers from its current one: a million credentials are put straight
// into the table that Publish then swaps in, with no staging copy. Its
// methods must be called from one goroutine.
type Loading struct {
	s *Set
	t *table
}

// BeginLoad starts a new content for s, sized for about hint credentials.
func (s *Set) BeginLoad(hint int) *Loading {
	return &Loading{s: s, t: shardmap.New[*Credential](hint)}
}

// Put adds or replaces c in the content being loaded.
func (l *Loading) Put(c *Credential) { l.t.Store(c.ID, c) }

// Delete removes the credential with id from the content being loaded.
func (l *Loading) Delete(id string) { l.t.Delete(id) }

// Publish makes the loaded content the set's. l must not be used after.
func (l *Loading) Publish() {
	l.s.tab.Store(l.t)
	l.t = nil
}

// Len returns the number of credentials.
func (s *Set) Len() int { return s.tab.Load().Len() }

// Range calls f for every credential until f returns false. f runs
// without any lock held, on a copy of the credentials taken first, so it
// may change the set.
func (s *Set) Range(f func(*Credential) bool) {
	t := s.tab.Load()
	cs := make([]*Credential, 0, t.Len())
	t.Range(func(_ string, c *Credential) bool {
		cs = append(cs, c)
		return true
	})
	for _, c := range cs {
		if !f(c) {
			return
		}
	}
}

// Lookup fetches a credential from the store when it is not in the set
// (the watcher may not have delivered it yet). It returns ErrInvalid for an
// id the store does not know and ErrUnavailable when the store cannot be
// asked.
type Lookup func(ctx context.Context, id string) (*Credential, error)

// VerifierOptions configure a Verifier. The zero value works with no
// store fallback.
type VerifierOptions struct {
	// Lookup is asked on a miss. If nil, a miss is ErrInvalid.
	Lookup Lookup
	// NegativeTTL is how long an id the store does not know is remembered.
	// Default 5s.
	NegativeTTL time.Duration
	// LookupTimeout bounds a store lookup. Default 2s.
	LookupTimeout time.Duration
}

// Verifier checks presented credentials against a Set.
type Verifier struct {
	Set  *Set
	opts VerifierOptions
	// neg memoises ids the store does not know, so a client retrying a bad
	// key does not cost a store round trip each time. Dropped entries only
	// cost a lookup: ristretto is never the source of truth.
	neg *ristretto.Cache[string, struct{}]
}

// NewVerifier returns a verifier over set.
func NewVerifier(set *Set, o VerifierOptions) (*Verifier, error) {
	if o.NegativeTTL == 0 {
		o.NegativeTTL = 5 * time.Second
	}
	if o.LookupTimeout == 0 {
		o.LookupTimeout = 2 * time.Second
	}
	neg, err := ristretto.NewCache(&ristretto.Config[string, struct{}]{
		// Cost is one per id; ristretto's own per-entry overhead must
		// not count, or the cache would hold a few hundred ids.
		NumCounters: 1 << 17, MaxCost: 1 << 14, BufferItems: 64, IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, err
	}
	return &Verifier{Set: set, opts: o, neg: neg}, nil
}

// Close releases the verifier's cache.
func (v *Verifier) Close() { v.neg.Close() }

// APIKey verifies a presented API key. For a key in the set it does no I/O
// and no allocation.
func (v *Verifier) APIKey(key []byte) (*Credential, error) {
	id, err := ParseAPIKey(key)
	if err != nil {
		return nil, err
	}
	c := v.Set.Get(id)
	if c == nil {
		if c, err = v.miss(id); err != nil {
			return nil, err
		}
	}
	sum := sha256.Sum256(key)
	if c.Method != MethodAPIKey || subtle.ConstantTimeCompare(sum[:], c.Digest[:]) != 1 {
		return nil, ErrInvalid
	}
	return c, nil
}

func (v *Verifier) miss(idb []byte) (*Credential, error) {
	id := string(idb)
	if _, ok := v.neg.Get(id); ok || v.opts.Lookup == nil {
		return nil, ErrInvalid
	}
	ctx, cancel := context.WithTimeout(context.Background(), v.opts.LookupTimeout)
	defer cancel()
	c, err := v.opts.Lookup(ctx, id)
	switch {
	case errors.Is(err, ErrInvalid):
		v.neg.SetWithTTL(id, struct{}{}, 1, v.opts.NegativeTTL)
		return nil, ErrInvalid
	case err != nil:
		return nil, ErrUnavailable
	case c == nil:
		return nil, ErrInvalid
	}
	return c, nil
}
