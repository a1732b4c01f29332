package authn

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/access"
)

// tiny are argon2id parameters cheap enough for tests that hash thousands
// of passwords.
var tiny = Argon2Params{Time: 1, Memory: 64, Threads: 1}

func newUser(t testing.TB, h *Hasher, name, password string, tenants ...string) *Credential {
	t.Helper()
	phc, err := h.Hash(context.Background(), []byte(password))
	if err != nil {
		t.Fatal(err)
	}
	c := &Credential{ID: name, Method: MethodUser, Type: UserAPIOnly, X: &Extra{Password: phc}}
	if len(tenants) == 1 {
		c.Tenant = tenants[0]
	} else {
		c.X.Tenants = tenants
	}
	return c
}

func basicToken(user, password string) []byte {
	return []byte(base64.StdEncoding.EncodeToString([]byte(user + ":" + password)))
}

func newUserVerifier(t testing.TB, set *Set, o UserOptions) *UserVerifier {
	t.Helper()
	v, err := NewUserVerifier(set, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

// waitMemo lets ristretto apply its buffered sets.
func waitMemo(v *UserVerifier) {
	if v.memo != nil {
		v.memo.Wait()
	}
}

// TestUserVerifier: the right password of a known user and nothing else;
// a changed or deleted user forgets the memoised check at once.
func TestUserVerifier(t *testing.T) {
	h := NewHasher(tiny, 0)
	set := NewSet()
	bob := newUser(t, h, "bob@example.com", "correct horse", "acme", "beta")
	set.Put(bob)
	expired := newUser(t, h, "old", "correct horse", "acme")
	expired.Expires = time.Now().Add(-time.Minute).UnixNano()
	set.Put(expired)
	v := newUserVerifier(t, set, UserOptions{Hasher: h, MemoSize: 100})
	verify := func(user, pw string) (access.Principal, error) {
		return v.Verify(access.Presented{Kind: access.KindBasic, Secret: basicToken(user, pw)})
	}
	p, err := verify("bob@example.com", "correct horse")
	if err != nil || p.Subject != "bob@example.com" || p.SubjectType != "api_only" || len(p.Tenants) != 2 || p.Kind != access.KindBasic {
		t.Fatalf("Verify = %+v, %v", p, err)
	}
	for _, tt := range []struct {
		user, pw string
		want     error
	}{
		{"bob@example.com", "wrong horse", ErrInvalid},
		{"alice", "correct horse", ErrInvalid},
		{"old", "correct horse", ErrInvalid},
		{"bad:name", "x", ErrInvalid}, // splits at the first colon: user "bad", unknown
		{"", "x", ErrMalformed},
		{"sp ace", "x", ErrMalformed},
		{"bob@example.com", "", ErrMalformed},
		{"bob@example.com", string(make([]byte, MaxPassword+1)), ErrMalformed},
	} {
		if _, err := verify(tt.user, tt.pw); !errors.Is(err, tt.want) {
			t.Errorf("Verify(%q, %q) = %v, want %v", tt.user, tt.pw, err, tt.want)
		}
	}
	if _, err := v.Verify(access.Presented{Kind: access.KindBasic, Secret: []byte("not base64!")}); !errors.Is(err, ErrMalformed) {
		t.Errorf("not base64: %v", err)
	}

	// Memoised, then the password changes: the memo is not used.
	waitMemo(v)
	if _, err := verify("bob@example.com", "correct horse"); err != nil {
		t.Fatal(err)
	}
	set.Put(newUser(t, h, "bob@example.com", "battery staple", "acme"))
	if _, err := verify("bob@example.com", "correct horse"); !errors.Is(err, ErrInvalid) {
		t.Errorf("the old password after a change: %v", err)
	}
	if _, err := verify("bob@example.com", "battery staple"); err != nil {
		t.Errorf("the new password: %v", err)
	}
	waitMemo(v)
	set.Delete("bob@example.com")
	if _, err := verify("bob@example.com", "battery staple"); !errors.Is(err, ErrInvalid) {
		t.Errorf("a deleted user: %v", err)
	}
}

// TestUserFailuresThrottled: a user name that failed too often is refused
// without a check, except for a password verified before (memoised).
func TestUserFailuresThrottled(t *testing.T) {
	h := NewHasher(tiny, 0)
	set := NewSet()
	set.Put(newUser(t, h, "bob", "correct horse", "acme"))
	v := newUserVerifier(t, set, UserOptions{Hasher: h, MemoSize: 100, Failures: NewThrottle(3, time.Minute, 100, HashString)})
	verify := func(pw string) (access.Principal, error) {
		return v.Verify(access.Presented{Kind: access.KindBasic, Secret: basicToken("bob", pw)})
	}
	if _, err := verify("correct horse"); err != nil {
		t.Fatal(err)
	}
	waitMemo(v)
	for i := 0; i < 3; i++ {
		if _, err := verify(fmt.Sprint("guess", i)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	p, err := verify("guess 4")
	if !errors.Is(err, access.ErrThrottled) || p.RetryAfter < 1 {
		t.Errorf("after 3 failures: %+v, %v; want ErrThrottled with a Retry-After", p, err)
	}
	if _, err := verify("correct horse"); err != nil {
		t.Errorf("a memoised password while the name is throttled: %v", err)
	}
}

// TestLargeSetSmallMemo: with ten times more users than the memo holds,
// and users revoked while they are looked up at random from several
// goroutines, a valid password is never refused and a revoked user or a
// wrong password never accepted: the memo remembers, the set decides.
func TestLargeSetSmallMemo(t *testing.T) {
	const users, memo = 2000, 200
	h := NewHasher(tiny, 0)
	set := NewSet()
	keys := NewSet()
	// API keys beside them, as a deployment has: 100,000 in the set.
	verifier, err := NewVerifier(keys, VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer verifier.Close()
	apiKeys := make([][]byte, 100_000)
	for i := range apiKeys {
		k, id, d := NewAPIKey()
		keys.Put(&Credential{ID: id, Tenant: "acme", Method: MethodAPIKey, Digest: d})
		apiKeys[i] = []byte(k)
	}
	for i := 0; i < users; i++ {
		set.Put(newUser(t, h, fmt.Sprint("user", i), fmt.Sprint("password-", i), "acme"))
	}
	v := newUserVerifier(t, set, UserOptions{Hasher: h, MemoSize: memo})
	var mu sync.Mutex
	revoked := map[int]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for n := 0; n < 5000; n++ {
				i := r.IntN(users)
				if g == 0 && n%50 == 0 {
					mu.Lock()
					revoked[i] = true
					set.Delete(fmt.Sprint("user", i))
					mu.Unlock()
					continue
				}
				pw := fmt.Sprint("password-", i)
				wrong := r.IntN(10) == 0
				if wrong {
					pw += "x"
				}
				mu.Lock()
				gone := revoked[i]
				mu.Unlock()
				_, err := v.Verify(access.Presented{Kind: access.KindBasic, Secret: basicToken(fmt.Sprint("user", i), pw)})
				switch {
				case (wrong || gone) && err == nil:
					errs <- fmt.Errorf("user%d accepted (wrong %v, revoked %v)", i, wrong, gone)
					return
				case !wrong && !gone && err != nil:
					// Revoked meanwhile by goroutine 0?
					mu.Lock()
					gone = revoked[i]
					mu.Unlock()
					if !gone {
						errs <- fmt.Errorf("user%d refused: %v", i, err)
						return
					}
				}
				if k := apiKeys[r.IntN(len(apiKeys))]; n%7 == 0 {
					if _, err := verifier.APIKey(k); err != nil {
						errs <- fmt.Errorf("API key refused: %v", err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// FuzzBasic: whatever the Authorization: Basic token, Verify neither
// panics nor accepts anything but the one user's password.
func FuzzBasic(f *testing.F) {
	h := NewHasher(tiny, 0)
	set := NewSet()
	set.Put(newUser(f, h, "bob", "correct horse", "acme"))
	v := newUserVerifier(f, set, UserOptions{Hasher: h, MemoSize: 10})
	f.Add(basicToken("bob", "correct horse"))
	f.Add(basicToken("bob", "wrong"))
	f.Add([]byte("Ym9i"))
	f.Add([]byte("=="))
	f.Fuzz(func(t *testing.T, token []byte) {
		p, err := v.Verify(access.Presented{Kind: access.KindBasic, Secret: token})
		if err != nil {
			return
		}
		dec, derr := base64.StdEncoding.DecodeString(string(token))
		if derr != nil || string(dec) != "bob:correct horse" || p.Subject != "bob" {
			t.Fatalf("accepted %q (%q) as %+v", token, dec, p)
		}
	})
}

// BenchmarkBasicMemoised is the cost of a Basic user whose password was
// checked before: the goal is under 1 µs and no allocation.
func BenchmarkBasicMemoised(b *testing.B) {
	h := NewHasher(tiny, 0)
	set := NewSet()
	set.Put(newUser(b, h, "erp-bot@acme.example", "correct horse battery", "acme", "beta"))
	v := newUserVerifier(b, set, UserOptions{Hasher: h, MemoSize: 1000})
	pc := access.Presented{Kind: access.KindBasic, Secret: basicToken("erp-bot@acme.example", "correct horse battery")}
	if _, err := v.Verify(pc); err != nil {
		b.Fatal(err)
	}
	waitMemo(v)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(pc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBasicNotMemoised is the cost of checking a password with the
// default argon2id parameters (RFC 9106's second option): what the memo
// saves, and what each wrong password costs the server.
func BenchmarkBasicNotMemoised(b *testing.B) {
	h := NewHasher(DefaultArgon2, 0)
	set := NewSet()
	set.Put(newUser(b, h, "bob", "correct horse", "acme"))
	v := newUserVerifier(b, set, UserOptions{Hasher: h})
	pc := access.Presented{Kind: access.KindBasic, Secret: basicToken("bob", "correct horse")}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(pc); err != nil {
			b.Fatal(err)
		}
	}
}

// TestUnknownUserLookedUpOnce: a name neither in the set nor in the store
// is asked of the store once, then remembered; a user created meanwhile
// is found as soon as the set has it.
func TestUnknownUserLookedUpOnce(t *testing.T) {
	h := NewHasher(tiny, 0)
	set := NewSet()
	var lookups int
	v := newUserVerifier(t, set, UserOptions{Hasher: h, Lookup: func(ctx context.Context, id string) (*Credential, error) {
		lookups++
		return nil, ErrInvalid
	}})
	for i := 0; i < 10; i++ {
		if _, err := v.Verify(access.Presented{Kind: access.KindBasic, Secret: basicToken("ghost", "pw")}); !errors.Is(err, ErrInvalid) {
			t.Fatal(err)
		}
		v.neg.Wait()
	}
	if lookups != 1 {
		t.Errorf("%d store lookups for one unknown name, want 1", lookups)
	}
	set.Put(newUser(t, h, "ghost", "pw", "acme"))
	if _, err := v.Verify(access.Presented{Kind: access.KindBasic, Secret: basicToken("ghost", "pw")}); err != nil {
		t.Errorf("a user in the set after a miss was remembered: %v", err)
	}
}

// TestClientSecret: a client's id and secret, the previous secret while
// its grace lasts, nothing once the client expires; malformed ids are
// refused without a lookup.
func TestClientSecret(t *testing.T) {
	set := NewSet()
	v, err := NewVerifier(set, VerifierOptions{Lookup: func(ctx context.Context, id string) (*Credential, error) {
		t.Errorf("lookup of %q", id)
		return nil, ErrInvalid
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	id := NewClient()
	old, oldDigest := NewClientSecret()
	cur, digest := NewClientSecret()
	c := &Credential{ID: id, Tenant: "acme", Method: MethodClient, Digest: digest,
		X: &Extra{PrevDigest: oldDigest, PrevUntil: time.Now().Add(time.Hour).UnixNano()}}
	set.Put(c)
	for _, s := range []string{cur, old} {
		if got, err := v.Client([]byte(id), []byte(s)); err != nil || got != c {
			t.Errorf("secret %q: %v, %v", s[:8], got, err)
		}
	}
	if _, err := v.Client([]byte(id), []byte(cur+"x")); !errors.Is(err, ErrInvalid) {
		t.Errorf("a wrong secret: %v", err)
	}
	ended := *c
	ended.X = &Extra{PrevDigest: oldDigest, PrevUntil: time.Now().Add(-time.Second).UnixNano()}
	set.Put(&ended)
	if _, err := v.Client([]byte(id), []byte(old)); !errors.Is(err, ErrInvalid) {
		t.Errorf("the previous secret after its grace: %v", err)
	}
	expired := ended
	expired.Expires = time.Now().Add(-time.Second).UnixNano()
	set.Put(&expired)
	if _, err := v.Client([]byte(id), []byte(cur)); !errors.Is(err, ErrInvalid) {
		t.Errorf("an expired client: %v", err)
	}
	key := &Credential{ID: "tgc_AAAAAAAAAAAAAAAA", Tenant: "acme", Method: MethodAPIKey, Digest: digest}
	set.Put(key)
	if _, err := v.Client([]byte(key.ID), []byte(cur)); !errors.Is(err, ErrInvalid) {
		t.Errorf("a credential of another kind: %v", err)
	}
	for _, bad := range []string{"", "tgc_", "tgc_short", "xyz_AAAAAAAAAAAAAAAA", "tgc_AAAAAAAAAAAAAAA!"} {
		if _, err := v.Client([]byte(bad), []byte(cur)); !errors.Is(err, ErrMalformed) {
			t.Errorf("client id %q: %v, want ErrMalformed", bad, err)
		}
	}
}
