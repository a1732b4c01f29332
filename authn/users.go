package authn

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/tollgate/tollgate/internal/access"
)

// User names are 1–128 of letters, digits and ._@+- (an e-mail address
// fits); passwords 1–128 bytes. A Basic token outside these bounds is
// refused without a lookup.
const (
	MaxUsername = 128
	MaxPassword = 128
)

var isUserChar = func() (t [256]bool) {
	for i := 0; i < len(base62); i++ {
		t[base62[i]] = true
	}
	for _, c := range "._@+-" {
		t[c] = true
	}
	return
}()

// ValidUsername reports whether name may name a user.
func ValidUsername[T string | []byte](name T) bool {
	if len(name) == 0 || len(name) > MaxUsername {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !isUserChar[name[i]] {
			return false
		}
	}
	return true
}

// UserOptions configure a UserVerifier.
type UserOptions struct {
	// Hasher checks passwords. Required.
	Hasher *Hasher
	// Lookup is asked when a user is not in the set. If nil, a miss is
	// an unknown user.
	Lookup Lookup
	// LookupTimeout bounds a store lookup and a wait for a hashing slot.
	// Default 2s.
	LookupTimeout time.Duration
	// MemoTTL is how long a successful check is remembered. Default 5m.
	MemoTTL time.Duration
	// MemoSize bounds the remembered checks; 0 remembers none.
	MemoSize int
	// Failures, when set, counts wrong passwords per user name and
	// refuses further checks of a name that has spent its allowance.
	Failures *Throttle[string]
}

// UserVerifier checks a user's name and password (HTTP Basic) against a
// Set of users. argon2id costs tens of milliseconds and tens of
// megabytes, so a successful check is memoised: under a keyed SHA-256 of
// the name and password, with the credential it matched. A memo is used
// only while that very credential is still the user's in the set, so a
// changed password, a deleted user or any other change (each publishes a
// new credential) forgets it on every replica as soon as the change
// arrives there.
type UserVerifier struct {
	Set  *Set
	o    UserOptions
	key  [32]byte // the memo's key, random per process
	memo *ristretto.Cache[uint64, *memo]
	// neg remembers names the store does not know (never the only copy:
	// a dropped entry costs a lookup).
	neg *ristretto.Cache[string, struct{}]
}

// negativeTTL is how long a name the store does not know is remembered,
// so that guessing at names does not cost a store round trip each.
const negativeTTL = 5 * time.Second

type memo struct {
	sum [32]byte
	c   *Credential
}

// NewUserVerifier returns a verifier over set.
func NewUserVerifier(set *Set, o UserOptions) (*UserVerifier, error) {
	if o.Hasher == nil {
		return nil, errors.New("authn: NewUserVerifier: a Hasher is required")
	}
	if o.LookupTimeout == 0 {
		o.LookupTimeout = 2 * time.Second
	}
	if o.MemoTTL == 0 {
		o.MemoTTL = 5 * time.Minute
	}
	v := &UserVerifier{Set: set, o: o}
	if _, err := rand.Read(v.key[:]); err != nil {
		return nil, err
	}
	neg, err := ristretto.NewCache(&ristretto.Config[string, struct{}]{
		NumCounters: 1 << 17, MaxCost: 1 << 14, BufferItems: 64, IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, err
	}
	v.neg = neg
	if o.MemoSize > 0 {
		m, err := ristretto.NewCache(&ristretto.Config[uint64, *memo]{
			NumCounters: int64(o.MemoSize) * 10, MaxCost: int64(o.MemoSize), BufferItems: 64, IgnoreInternalCost: true,
		})
		if err != nil {
			return nil, err
		}
		v.memo = m
	}
	return v, nil
}

// Close releases the memo.
func (v *UserVerifier) Close() {
	v.neg.Close()
	if v.memo != nil {
		v.memo.Close()
	}
}

// Verify checks a presented Basic token (access.KindBasic). A memoised
// check does no I/O and no allocation.
func (v *UserVerifier) Verify(c access.Presented) (access.Principal, error) {
	var buf [2 * (MaxUsername + MaxPassword)]byte
	user, password, ok := access.DecodeBasic(c.Secret, buf[:])
	if !ok || !ValidUsername(user) || len(password) == 0 || len(password) > MaxPassword {
		return access.Principal{}, ErrMalformed
	}
	cr, err := v.check(user, password)
	if err != nil {
		var p access.Principal
		if errors.Is(err, access.ErrThrottled) {
			p.RetryAfter = v.retryAfter(user)
		}
		return p, err
	}
	return cr.Principal(), nil
}

// CheckPassword checks a user's name and password given apart (the
// OAuth2 password grant), as Verify checks them in a Basic token. With
// ErrThrottled it also returns the seconds to wait.
func (v *UserVerifier) CheckPassword(user, password []byte) (*Credential, int64, error) {
	if !ValidUsername(user) || len(password) == 0 || len(password) > MaxPassword {
		return nil, 0, ErrInvalid
	}
	c, err := v.check(user, password)
	if errors.Is(err, access.ErrThrottled) {
		return nil, v.retryAfter(user), err
	}
	return c, 0, err
}

func (v *UserVerifier) retryAfter(user []byte) int64 {
	d, _ := v.o.Failures.Blocked(string(user))
	return max(int64((d+time.Second-1)/time.Second), 1)
}

// memoSum is the memo key of a name and password: SHA-256 over the
// verifier's random key, the name, ':' and the password (a name holds no
// ':', so the split is unambiguous). It does not allocate.
func (v *UserVerifier) memoSum(user, password []byte) [32]byte {
	var buf [32 + MaxUsername + 1 + MaxPassword]byte
	n := copy(buf[:], v.key[:])
	n += copy(buf[n:], user)
	buf[n] = ':'
	n++
	n += copy(buf[n:], password)
	return sha256.Sum256(buf[:n])
}

func (v *UserVerifier) check(user, password []byte) (*Credential, error) {
	var sum [32]byte
	if v.memo != nil {
		sum = v.memoSum(user, password)
		if m, ok := v.memo.Get(binary.LittleEndian.Uint64(sum[:8])); ok &&
			subtle.ConstantTimeCompare(m.sum[:], sum[:]) == 1 && v.Set.Get(user) == m.c {
			if m.c.Expires != 0 && m.c.Expired(time.Now().UnixNano()) {
				return nil, ErrInvalid
			}
			return m.c, nil
		}
	}
	return v.slow(string(user), bytes.Clone(password), &sum)
}

// slow checks a password that is not memoised: a hash of tens of
// milliseconds. It takes copies of the name and password, so that the
// memoised path keeps them on its stack.
func (v *UserVerifier) slow(user string, password []byte, sum *[32]byte) (*Credential, error) {
	if _, blocked := v.o.Failures.Blocked(user); blocked {
		return nil, access.ErrThrottled
	}
	ctx, cancel := context.WithTimeout(context.Background(), v.o.LookupTimeout)
	defer cancel()
	c := v.Set.Get([]byte(user))
	if _, unknown := v.neg.Get(user); c == nil && !unknown && v.o.Lookup != nil {
		var err error
		c, err = v.o.Lookup(ctx, user)
		switch {
		case errors.Is(err, ErrInvalid):
			c = nil
			v.neg.SetWithTTL(user, struct{}{}, 1, negativeTTL)
		case err != nil:
			return nil, ErrUnavailable
		}
	}
	if c == nil || c.Method != MethodUser || c.X == nil || c.X.Password == "" {
		// The same cost as a wrong password: no answer tells an unknown
		// user from a known one.
		v.o.Hasher.CheckAbsent(ctx, password)
		v.o.Failures.Fail(user)
		return nil, ErrInvalid
	}
	ok, err := v.o.Hasher.Check(ctx, c.X.Password, password)
	if err != nil && ctx.Err() != nil {
		return nil, ErrUnavailable
	}
	if !ok {
		v.o.Failures.Fail(user)
		return nil, ErrInvalid
	}
	if c.Expired(time.Now().UnixNano()) {
		return nil, ErrInvalid
	}
	if v.memo != nil {
		v.memo.SetWithTTL(binary.LittleEndian.Uint64(sum[:8]), &memo{sum: *sum, c: c}, 1, v.o.MemoTTL)
	}
	return c, nil
}
