package authn

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/shardmap"
)

// Method is the kind of a credential: how it is presented and verified.
type Method = access.Kind

// The kinds of credential a Set holds.
const (
	MethodAPIKey = access.KindAPIKey
	// MethodUser is a user's name and password, presented with HTTP
	// Basic.
	MethodUser = access.KindBasic
	// MethodClient is an OAuth client's id and secret.
	MethodClient = access.KindClient
	// MethodToken is an access token the token endpoint issued,
	// presented as "Authorization: Bearer".
	MethodToken = access.KindBearer
)

// Grants is the set of OAuth2 grants a credential may use at the token
// endpoint (issue 16).
type Grants uint8

// Grants.
const (
	GrantPassword Grants = 1 << iota
	GrantClientCredentials
)

// UserType tells software from people (DESIGN.md scenario 3).
type UserType uint8

// User types.
const (
	UserStandard UserType = 1 + iota
	UserAPIOnly
)

// String is the type's name, as the backend sees it.
func (t UserType) String() string {
	switch t {
	case UserStandard:
		return "standard"
	case UserAPIOnly:
		return "api_only"
	}
	return ""
}

// Credential is a verifiable identity of any kind: an API key, an OAuth
// client or a user. It is immutable once published in a Set: updates
// replace the pointer. A million of them are held on every replica, so
// what most credentials need is kept inline (128 bytes, see
// BenchmarkCredentialMemory) and what few need (several tenants, a
// password hash, a previous secret in its grace period) behind X.
type Credential struct {
	// ID is the key id, the client id or the user name: what the set is
	// keyed by.
	ID string
	// Tenant is the one tenant the credential acts for; empty when it
	// may act for several (X.Tenants).
	Tenant string
	Name   string
	// Digest is SHA-256 of an API key or a client secret.
	Digest [32]byte
	// Created is when the credential was made, in Unix nanoseconds (0:
	// unknown); see CreatedAt.
	Created int64
	// Expires is when it stops working, in Unix nanoseconds; 0 never.
	Expires int64
	// Scopes and Modules limit the credential; 0 is no limit.
	Scopes  access.Scopes
	Modules access.Modules
	X       *Extra
	Method  Method
	Grants  Grants
	Type    UserType
}

// Extra is what few credentials carry.
type Extra struct {
	// Tenants lists the tenants a credential of several may act for.
	Tenants []string
	// Password is a user's argon2id hash (PHC string).
	Password string
	// PrevDigest is the digest of the secret a regeneration replaced; it
	// keeps working until PrevUntil (Unix nanoseconds).
	PrevDigest [32]byte
	PrevUntil  int64
	// Client and User are, for an access token, the client (or API
	// key) it was issued to and the user it acts for, if any.
	Client, User string
	// TokenLifetime, on a client or API key, is how long the tokens
	// issued to it live; 0: its tenant's plan's, or the default.
	TokenLifetime time.Duration
}

// Tenants returns the tenants c may act for when it may act for several,
// else nil.
func (c *Credential) Tenants() []string {
	if c.X == nil {
		return nil
	}
	return c.X.Tenants
}

// Expired reports whether c has expired at now (Unix nanoseconds).
func (c *Credential) Expired(now int64) bool { return c.Expires != 0 && now >= c.Expires }

// matchSecret compares sum with c's digest, and with the previous one
// while its grace period lasts, in constant time.
func (c *Credential) matchSecret(sum *[32]byte, now int64) bool {
	ok := subtle.ConstantTimeCompare(sum[:], c.Digest[:])
	if x := c.X; x != nil && x.PrevUntil != 0 {
		prev := subtle.ConstantTimeCompare(sum[:], x.PrevDigest[:])
		if now < x.PrevUntil {
			ok |= prev
		}
	}
	return ok == 1
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
	return v.find(id, key, MethodAPIKey)
}

// find verifies secret against the credential of kind with id: the
// set's, or the store's on a miss.
func (v *Verifier) find(id, secret []byte, kind Method) (*Credential, error) {
	c := v.Set.Get(id)
	if c == nil {
		var err error
		if c, err = v.miss(id); err != nil {
			return nil, err
		}
	}
	return v.check(c, secret, kind)
}

// check verifies secret against c, a credential of kind. An expired
// credential answers as an unknown one.
func (v *Verifier) check(c *Credential, secret []byte, kind Method) (*Credential, error) {
	sum := sha256.Sum256(secret)
	var now int64
	if c.Expires != 0 || c.X != nil {
		now = time.Now().UnixNano()
	}
	if c.Method != kind || !c.matchSecret(&sum, now) || c.Expired(now) {
		return nil, ErrInvalid
	}
	return c, nil
}

// Client verifies an OAuth client's id and secret. For a client in the
// set it does no I/O and no allocation.
func (v *Verifier) Client(id, secret []byte) (*Credential, error) {
	if !ValidClientID(id) || len(secret) == 0 || len(secret) > 128 {
		return nil, ErrMalformed
	}
	return v.find(id, secret, MethodClient)
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
