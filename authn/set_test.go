package authn

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

func cred(id string) *Credential {
	return &Credential{ID: id, Tenant: "t-" + id, Method: MethodAPIKey}
}

// newKeyCred returns a fresh API key and its credential.
func newKeyCred(tenant string) (key []byte, c *Credential) {
	k, id, digest := NewAPIKey()
	return []byte(k), &Credential{ID: id, Tenant: tenant, Method: MethodAPIKey, Digest: digest, Created: time.Unix(1, 0).UnixNano()}
}

func ids(s *Set) []string {
	var out []string
	s.Range(func(c *Credential) bool { out = append(out, c.ID); return true })
	sort.Strings(out)
	return out
}

func TestSetPutGetDelete(t *testing.T) {
	s := NewSet()
	if got := s.Get([]byte("a")); got != nil {
		t.Errorf("Get on empty set = %+v, want nil", got)
	}
	if got, want := s.Len(), 0; got != want {
		t.Errorf("Len = %d, want %d", got, want)
	}
	a, b := cred("a"), cred("b")
	s.Put(a)
	s.Put(b)
	if got, want := s.Get([]byte("a")), a; got != want {
		t.Errorf("Get(a) = %p, want %p", got, want)
	}
	if got, want := s.Get([]byte("b")), b; got != want {
		t.Errorf("Get(b) = %p, want %p", got, want)
	}
	if got, want := s.Len(), 2; got != want {
		t.Errorf("Len = %d, want %d", got, want)
	}
	a2 := cred("a")
	s.Put(a2)
	if got, want := s.Get([]byte("a")), a2; got != want {
		t.Errorf("Get(a) after replacing Put = %p, want %p", got, want)
	}
	if got, want := s.Len(), 2; got != want {
		t.Errorf("Len after replacing Put = %d, want %d", got, want)
	}
	s.Delete("a")
	if got := s.Get([]byte("a")); got != nil {
		t.Errorf("Get(a) after Delete = %+v, want nil", got)
	}
	s.Delete("never-there")
	if got, want := s.Len(), 1; got != want {
		t.Errorf("Len after Delete = %d, want %d", got, want)
	}
}

func TestSetReplace(t *testing.T) {
	s := NewSet()
	s.Put(cred("old1"))
	s.Put(cred("old2"))
	var next []*Credential
	for i := range 200 {
		next = append(next, cred(fmt.Sprintf("new%03d", i)))
	}
	s.Replace(next)
	if got, want := s.Len(), len(next); got != want {
		t.Errorf("Len after Replace = %d, want %d", got, want)
	}
	if got := s.Get([]byte("old1")); got != nil {
		t.Errorf("Get(old1) after Replace = %+v, want nil", got)
	}
	for _, c := range next {
		if got := s.Get([]byte(c.ID)); got != c {
			t.Fatalf("Get(%s) after Replace = %p, want %p", c.ID, got, c)
		}
	}
	s.Put(cred("later"))
	if got, want := s.Len(), len(next)+1; got != want {
		t.Errorf("Len after Replace and Put = %d, want %d", got, want)
	}
	s.Replace(nil)
	if got, want := s.Len(), 0; got != want {
		t.Errorf("Len after Replace(nil) = %d, want %d", got, want)
	}
}

func TestSetRange(t *testing.T) {
	s := NewSet()
	var want []string
	for i := range 100 {
		id := fmt.Sprintf("id%03d", i)
		s.Put(cred(id))
		want = append(want, id)
	}
	got := ids(s)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Range visited %v, want %v", got, want)
	}
	calls := 0
	s.Range(func(*Credential) bool { calls++; return false })
	if calls != 1 {
		t.Errorf("Range called f %d times after it returned false, want 1", calls)
	}
	// Range may call back into the set.
	s.Range(func(c *Credential) bool { s.Delete(c.ID); return true })
	if got := s.Len(); got != 0 {
		t.Errorf("Len after deleting from Range = %d, want 0", got)
	}
}

// Readers never see a credential vanish while Replace swaps in a snapshot
// that still holds it. Run with -race.
func TestSetConcurrentGetDuringReplace(t *testing.T) {
	s := NewSet()
	stable := cred("stable")
	s.Replace([]*Credential{stable})
	var done atomic.Bool
	var misses atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !done.Load() {
				if c := s.Get([]byte("stable")); c == nil || c.ID != "stable" {
					misses.Add(1)
				}
				s.Get([]byte("churn-3"))
				_ = s.Len()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !done.Load(); i++ {
			s.Put(cred(fmt.Sprintf("put-%d", i%10)))
			s.Delete(fmt.Sprintf("put-%d", (i+5)%10))
			s.Range(func(*Credential) bool { return true })
		}
	}()
	for i := range 300 {
		next := []*Credential{cred("stable")}
		for j := range i % 20 {
			next = append(next, cred(fmt.Sprintf("churn-%d", j)))
		}
		s.Replace(next)
	}
	done.Store(true)
	wg.Wait()
	if n := misses.Load(); n != 0 {
		t.Errorf("Get(stable) missed %d times during Replace", n)
	}
}

// lookupStub counts lookups and answers from a fixed table.
type lookupStub struct {
	calls atomic.Int64
	mu    sync.Mutex
	ids   []string
	fn    func(ctx context.Context, id string) (*Credential, error)
}

func (l *lookupStub) lookup(ctx context.Context, id string) (*Credential, error) {
	l.calls.Add(1)
	l.mu.Lock()
	l.ids = append(l.ids, id)
	l.mu.Unlock()
	return l.fn(ctx, id)
}

func newVerifier(t testing.TB, s *Set, o VerifierOptions) *Verifier {
	t.Helper()
	v, err := NewVerifier(s, o)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

func TestVerifierKeyInSet(t *testing.T) {
	s := NewSet()
	key, c := newKeyCred("acme")
	s.Put(c)
	stub := &lookupStub{fn: func(context.Context, string) (*Credential, error) { return nil, ErrUnavailable }}
	v := newVerifier(t, s, VerifierOptions{Lookup: stub.lookup})
	got, err := v.APIKey(key)
	if err != nil {
		t.Fatalf("APIKey: %v", err)
	}
	if got != c {
		t.Errorf("APIKey = %+v, want %+v", got, c)
	}
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := v.APIKey(key); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("APIKey for a key in the set allocates %v times, want 0", allocs)
	}
	if n := stub.calls.Load(); n != 0 {
		t.Errorf("Lookup called %d times for a key in the set, want 0", n)
	}
}

func TestVerifierRejects(t *testing.T) {
	key, c := newKeyCred("acme")
	wrongSecret, _ := WithID(c.ID)
	otherMethod := *c
	otherMethod.Method = MethodAPIKey + 1 // another method, as OAuth2 will be
	otherKey, otherCred := newKeyCred("acme")
	tests := []struct {
		name    string
		inSet   *Credential
		key     []byte
		wantErr error
	}{
		{"wrong secret with right id", c, []byte(wrongSecret), ErrInvalid},
		{"credential of another method", &otherMethod, key, ErrInvalid},
		{"digest of another key", &Credential{ID: c.ID, Method: MethodAPIKey, Digest: otherCred.Digest}, key, ErrInvalid},
		{"malformed: empty", c, nil, ErrMalformed},
		{"malformed: truncated", c, key[:KeyLen-1], ErrMalformed},
		{"malformed: bad check", c, append(append([]byte{}, key[:KeyLen-1]...), key[KeyLen-1]^1), ErrMalformed},
		{"malformed: not a key", c, []byte("Bearer something"), ErrMalformed},
		{"other key, miss, no lookup", c, otherKey, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSet()
			s.Put(tt.inSet)
			v := newVerifier(t, s, VerifierOptions{})
			got, err := v.APIKey(tt.key)
			if !errors.Is(err, tt.wantErr) || got != nil {
				t.Errorf("APIKey(%q) = %+v, %v; want nil, %v", tt.key, got, err, tt.wantErr)
			}
		})
	}
}

func TestVerifierMalformedSkipsLookup(t *testing.T) {
	stub := &lookupStub{fn: func(context.Context, string) (*Credential, error) { return nil, ErrInvalid }}
	v := newVerifier(t, NewSet(), VerifierOptions{Lookup: stub.lookup})
	key, _ := newKeyCred("acme")
	for _, b := range [][]byte{nil, []byte("x"), key[:KeyLen-1], append(append([]byte{}, key[:KeyLen-1]...), '!')} {
		if _, err := v.APIKey(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("APIKey(%q) error = %v, want ErrMalformed", b, err)
		}
	}
	if n := stub.calls.Load(); n != 0 {
		t.Errorf("Lookup called %d times for malformed keys, want 0", n)
	}
}

func TestVerifierMissFound(t *testing.T) {
	key, c := newKeyCred("acme")
	const timeout = 3 * time.Second
	var deadlineOK atomic.Bool
	stub := &lookupStub{fn: func(ctx context.Context, id string) (*Credential, error) {
		d, ok := ctx.Deadline()
		deadlineOK.Store(ok && time.Until(d) <= timeout)
		if id == c.ID {
			return c, nil
		}
		return nil, ErrInvalid
	}}
	v := newVerifier(t, NewSet(), VerifierOptions{Lookup: stub.lookup, LookupTimeout: timeout})
	got, err := v.APIKey(key)
	if err != nil {
		t.Fatalf("APIKey after a lookup that found the credential: %v, want ok", err)
	}
	if got != c {
		t.Errorf("APIKey = %+v, want %+v", got, c)
	}
	if n := stub.calls.Load(); n != 1 {
		t.Errorf("Lookup called %d times, want 1", n)
	}
	if got, want := fmt.Sprint(stub.ids), fmt.Sprint([]string{c.ID}); got != want {
		t.Errorf("Lookup ids = %v, want %v", got, want)
	}
	if !deadlineOK.Load() {
		t.Errorf("Lookup context has no deadline within LookupTimeout %v", timeout)
	}

	// Found in the store but presented with the wrong secret.
	wrong, _ := WithID(c.ID)
	if got, err := v.APIKey([]byte(wrong)); !errors.Is(err, ErrInvalid) || got != nil {
		t.Errorf("APIKey(wrong secret, via lookup) = %+v, %v; want nil, ErrInvalid", got, err)
	}
}

func TestVerifierMissInvalidIsCached(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"ErrInvalid", ErrInvalid},
		{"wrapped ErrInvalid", fmt.Errorf("store: no key: %w", ErrInvalid)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stub := &lookupStub{fn: func(context.Context, string) (*Credential, error) { return nil, tt.err }}
			v := newVerifier(t, NewSet(), VerifierOptions{Lookup: stub.lookup, NegativeTTL: time.Hour})
			key, c := newKeyCred("acme")
			if _, err := v.APIKey(key); !errors.Is(err, ErrInvalid) {
				t.Fatalf("APIKey error = %v, want ErrInvalid", err)
			}
			if n := stub.calls.Load(); n != 1 {
				t.Fatalf("Lookup called %d times, want 1", n)
			}
			v.neg.Wait() // ristretto applies sets asynchronously
			for range 3 {
				if _, err := v.APIKey(key); !errors.Is(err, ErrInvalid) {
					t.Fatalf("APIKey (cached) error = %v, want ErrInvalid", err)
				}
			}
			if n := stub.calls.Load(); n != 1 {
				t.Errorf("Lookup called %d times after a cached negative, want 1", n)
			}
			// Another key with the same id is just as unknown.
			other, _ := WithID(c.ID)
			if _, err := v.APIKey([]byte(other)); !errors.Is(err, ErrInvalid) {
				t.Errorf("APIKey (same id) error = %v, want ErrInvalid", err)
			}
			if n := stub.calls.Load(); n != 1 {
				t.Errorf("Lookup called %d times for a cached id, want 1", n)
			}
		})
	}
}

func TestVerifierNegativeTTLExpires(t *testing.T) {
	stub := &lookupStub{fn: func(context.Context, string) (*Credential, error) { return nil, ErrInvalid }}
	v := newVerifier(t, NewSet(), VerifierOptions{Lookup: stub.lookup, NegativeTTL: 20 * time.Millisecond})
	key, _ := newKeyCred("acme")
	start := time.Now()
	if _, err := v.APIKey(key); !errors.Is(err, ErrInvalid) {
		t.Fatalf("APIKey error = %v, want ErrInvalid", err)
	}
	v.neg.Wait()
	// Poll: once the entry expires the next call asks the store again.
	deadline := start.Add(5 * time.Second)
	for stub.calls.Load() < 2 && time.Now().Before(deadline) {
		if _, err := v.APIKey(key); !errors.Is(err, ErrInvalid) {
			t.Fatalf("APIKey error = %v, want ErrInvalid", err)
		}
	}
	if n := stub.calls.Load(); n < 2 {
		t.Fatalf("Lookup called %d times within 5s, want the negative entry to expire after 20ms", n)
	}
	if el := time.Since(start); el < 20*time.Millisecond {
		t.Errorf("negative entry expired after %v, want at least 20ms", el)
	}
}

func TestVerifierMissUnavailableNotCached(t *testing.T) {
	storeErr := errors.New("nats: timeout")
	stub := &lookupStub{fn: func(context.Context, string) (*Credential, error) { return nil, storeErr }}
	v := newVerifier(t, NewSet(), VerifierOptions{Lookup: stub.lookup})
	key, _ := newKeyCred("acme")
	for i := 1; i <= 3; i++ {
		got, err := v.APIKey(key)
		if !errors.Is(err, ErrUnavailable) || got != nil {
			t.Fatalf("APIKey = %+v, %v; want nil, ErrUnavailable", got, err)
		}
		v.neg.Wait()
		if n := stub.calls.Load(); n != int64(i) {
			t.Fatalf("after %d calls Lookup was called %d times, want %d (not cached)", i, n, i)
		}
	}
}

func TestVerifierLookupTimeout(t *testing.T) {
	stub := &lookupStub{fn: func(ctx context.Context, _ string) (*Credential, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	v := newVerifier(t, NewSet(), VerifierOptions{Lookup: stub.lookup, LookupTimeout: 10 * time.Millisecond})
	key, _ := newKeyCred("acme")
	if _, err := v.APIKey(key); !errors.Is(err, ErrUnavailable) {
		t.Errorf("APIKey with a hung store error = %v, want ErrUnavailable", err)
	}
}

func TestVerifierNoLookup(t *testing.T) {
	v := newVerifier(t, NewSet(), VerifierOptions{})
	key, _ := newKeyCred("acme")
	if _, err := v.APIKey(key); !errors.Is(err, ErrInvalid) {
		t.Errorf("APIKey miss without Lookup error = %v, want ErrInvalid", err)
	}
}

var bench struct {
	once sync.Once
	set  *Set
	keys [][]byte
}

func BenchmarkVerifyAPIKey(b *testing.B) {
	bench.once.Do(func() {
		const n = 100_000
		bench.set = NewSet()
		cs := make([]*Credential, 0, n)
		for i := range n {
			key, c := newKeyCred(fmt.Sprintf("tenant-%d", i%1000))
			cs = append(cs, c)
			bench.keys = append(bench.keys, key)
		}
		bench.set.Replace(cs)
	})
	v := newVerifier(b, bench.set, VerifierOptions{})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := v.APIKey(bench.keys[i%len(bench.keys)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// TestCredentialSize: a credential of any kind fits the 128-byte size
// class, so a million cost 128 MB of structs (BenchmarkCredentialMemory
// has the rest); what only some carry is behind Credential.X.
func TestCredentialSize(t *testing.T) {
	if n := unsafe.Sizeof(Credential{}); n > 128 {
		t.Errorf("Credential is %d bytes, over the 128-byte size class", n)
	}
}
