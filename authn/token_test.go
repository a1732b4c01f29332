package authn

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/access"
)

// tokenCheck re-derives the check of a token independently of putCheck:
// the CRC-32 (IEEE) of everything before it, as checkLen base62 digits,
// most significant first.
func tokenCheck(b []byte) string {
	v := uint64(crc32.ChecksumIEEE(b))
	out := make([]byte, checkLen)
	for i := checkLen - 1; i >= 0; i-- {
		out[i] = base62[v%62]
		v /= 62
	}
	return string(out)
}

// buildToken assembles a token from a prefix, an id and a secret with a
// correct check, whatever they hold.
func buildToken(prefix, id, secret string) []byte {
	b := []byte(prefix + id + "_" + secret)
	return append(b, tokenCheck(b)...)
}

// noLookup fails the test if the verifier asks the store.
func noLookup(t testing.TB) Lookup {
	return func(_ context.Context, id string) (*Credential, error) {
		t.Errorf("store lookup of %q", id)
		return nil, ErrInvalid
	}
}

func newTokenVerifier(t testing.TB, s *Set, o VerifierOptions) *Verifier {
	t.Helper()
	v, err := NewVerifier(s, o)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

// tokenCred is the credential the mirror builds of an issued token.
func tokenCred(id string, digest [32]byte, expires time.Time) *Credential {
	return &Credential{ID: id, Tenant: "acme", Method: MethodToken, Digest: digest,
		Scopes: access.ScopeRead, Expires: UnixNano(expires), Type: UserAPIOnly,
		X: &Extra{Client: "tgc_AAAAAAAAAAAAAAAA", User: "bob@example.com"}}
}

func TestTokenLen(t *testing.T) {
	// tgt_ + 16 id + _ + 32 secret + 6 check.
	if TokenLen != 59 {
		t.Errorf("TokenLen = %d, want 59", TokenLen)
	}
}

// TestNewTokenParses: NewToken's tokens have the documented form, parse
// back to their id, and their digest is SHA-256 of the whole token.
func TestNewTokenParses(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		tok, id, digest := NewToken()
		if len(tok) != TokenLen || !strings.HasPrefix(tok, TokenPrefix) || tok[tokenIDEnd] != '_' {
			t.Fatalf("NewToken = %q: not tgt_<16>_<38>", tok)
		}
		if !ValidTokenID(id) || id != tok[tokenIDStart:tokenIDEnd] {
			t.Fatalf("NewToken id %q of %q", id, tok)
		}
		if digest != sha256.Sum256([]byte(tok)) {
			t.Fatalf("NewToken digest of %q is not its SHA-256", tok)
		}
		if tok[tokenSecretEnd:] != tokenCheck([]byte(tok[:tokenSecretEnd])) {
			t.Fatalf("NewToken %q: check is not the CRC-32 in base62", tok)
		}
		b := []byte(tok)
		got, err := ParseToken(b)
		if err != nil || string(got) != id {
			t.Fatalf("ParseToken(%q) = %q, %v; want %q", tok, got, err, id)
		}
		if &got[0] != &b[tokenIDStart] {
			t.Fatalf("ParseToken's id is not a sub-slice of the token")
		}
		if seen[id] {
			t.Fatalf("NewToken repeated id %q", id)
		}
		seen[id] = true
	}
}

// TestParseTokenRejectsEverySubstitution: any one byte of a token changed
// to any other value is refused (CRC-32 catches every single-byte error,
// and its 6 base62 digits encode it one to one).
func TestParseTokenRejectsEverySubstitution(t *testing.T) {
	tok, _, _ := NewToken()
	b := []byte(tok)
	for i := range b {
		orig := b[i]
		for c := 0; c < 256; c++ {
			if byte(c) == orig {
				continue
			}
			b[i] = byte(c)
			if id, err := ParseToken(b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("byte %d %q→%q of %q: ParseToken = %q, %v; want ErrMalformed", i, orig, byte(c), tok, id, err)
			}
		}
		b[i] = orig
	}
	if _, err := ParseToken(b); err != nil {
		t.Fatalf("the restored token: %v", err)
	}
}

func TestParseTokenRejects(t *testing.T) {
	tok, _, _ := NewToken()
	key, _, _ := NewAPIKey()
	id, secret := tok[tokenIDStart:tokenIDEnd], tok[tokenIDEnd+1:tokenSecretEnd]
	tests := []struct {
		name  string
		token []byte
	}{
		{"empty", nil},
		{"prefix only", []byte(TokenPrefix)},
		{"one short", []byte(tok[:TokenLen-1])},
		{"one long", []byte(tok + "0")},
		{"doubled", []byte(tok + tok)},
		{"an API key", []byte(key)},
		{"an API key padded to the length", []byte(key + strings.Repeat("0", TokenLen-KeyLen))},
		{"tg_ prefix, good check", buildToken("tg_", id+"x", secret)},
		{"TGT_ prefix, good check", buildToken("TGT_", id, secret)},
		{"tgx_ prefix, good check", buildToken("tgx_", id, secret)},
		{"a client secret", []byte("tgs_" + strings.Repeat("A", TokenLen-4))},
		{"no separator, good check", func() []byte {
			b := []byte(TokenPrefix + id + "A" + secret)
			return append(b, tokenCheck(b)...)
		}()},
		{"separator moved, good check", buildToken(TokenPrefix, id[:15], secret+"A")},
		{"non-base62 in the id, good check", buildToken(TokenPrefix, id[:15]+"-", secret)},
		{"non-base62 in the secret, good check", buildToken(TokenPrefix, id, secret[:31]+"_")},
		{"high byte in the secret, good check", buildToken(TokenPrefix, id, secret[:31]+"\xff")},
		{"lower-case check", func() []byte {
			b := []byte(tok)
			copy(b[tokenSecretEnd:], strings.ToLower(tok[tokenSecretEnd:]))
			if string(b) == tok {
				copy(b[tokenSecretEnd:], strings.ToUpper(tok[tokenSecretEnd:]))
			}
			if string(b) == tok { // all digits: flip one
				b[TokenLen-1] = '0' + (b[TokenLen-1]-'0'+1)%10
			}
			return b
		}()},
		{"check of the wrong bytes", append([]byte(tok[:tokenSecretEnd]), tokenCheck([]byte(tok[:tokenSecretEnd-1]))...)},
		{"whitespace around", []byte(" " + tok[:TokenLen-1])},
	}
	for _, tt := range tests {
		if id, err := ParseToken(tt.token); !errors.Is(err, ErrMalformed) || id != nil {
			t.Errorf("%s: ParseToken(%q) = %q, %v; want ErrMalformed", tt.name, tt.token, id, err)
		}
	}
	// The positive control: the same construction with the right parts.
	if _, err := ParseToken(buildToken(TokenPrefix, id, secret)); err != nil {
		t.Errorf("buildToken of the token's own parts: %v", err)
	}
}

func TestParseTokenDoesNotAllocate(t *testing.T) {
	tok, _, _ := NewToken()
	b := []byte(tok)
	bad := []byte(tok[:TokenLen-1] + "!")
	if n := testing.AllocsPerRun(100, func() {
		_, _ = ParseToken(b)
		_, _ = ParseToken(bad)
	}); n != 0 {
		t.Errorf("ParseToken: %v allocations", n)
	}
}

func TestValidTokenID(t *testing.T) {
	_, id, _ := NewToken()
	if !ValidTokenID(id) {
		t.Errorf("ValidTokenID(%q) = false", id)
	}
	for _, bad := range []string{"", id[:15], id + "A", id[:15] + "_", id[:15] + "é"[:1], "tgt_" + id[:12]} {
		if ValidTokenID(bad) {
			t.Errorf("ValidTokenID(%q) = true", bad)
		}
	}
}

// FuzzParseToken: ParseToken never panics and accepts exactly the
// strings of the token form whose check is right, re-derived here.
func FuzzParseToken(f *testing.F) {
	tok, _, _ := NewToken()
	key, _, _ := NewAPIKey()
	f.Add([]byte(tok))
	f.Add([]byte(tok[:TokenLen-1]))
	f.Add([]byte(key))
	f.Add([]byte(""))
	f.Add(buildToken(TokenPrefix, strings.Repeat("A", tokenIDLen), strings.Repeat("z", secretLen)))
	f.Add(buildToken(TokenPrefix, strings.Repeat("_", tokenIDLen), strings.Repeat("z", secretLen)))
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		id, err := ParseToken(b)
		if !bytes.Equal(in, b) {
			t.Fatalf("ParseToken changed its input")
		}
		want := len(b) == TokenLen && string(b[:4]) == "tgt_" && b[20] == '_'
		for i := 4; want && i < TokenLen; i++ {
			if i != 20 && !strings.Contains(base62, string(b[i:i+1])) {
				want = false
			}
		}
		want = want && string(b[TokenLen-checkLen:]) == tokenCheck(b[:TokenLen-checkLen])
		switch {
		case want && err != nil:
			t.Fatalf("ParseToken(%q) = %v; the token is well formed", b, err)
		case !want && err == nil:
			t.Fatalf("ParseToken(%q) accepted a string that is not a token", b)
		case err != nil && (!errors.Is(err, ErrMalformed) || id != nil):
			t.Fatalf("ParseToken(%q) = %q, %v; want nil, ErrMalformed", b, id, err)
		case err == nil && (string(id) != string(b[4:20]) || !ValidTokenID(string(id))):
			t.Fatalf("ParseToken(%q) = id %q", b, id)
		}
	})
}

// TestVerifierToken: a token in the set verifies with no lookup; an
// expired one, a wrong secret under its id, and a credential of another
// kind under the same id are ErrInvalid; a malformed token is refused
// before the set is asked.
func TestVerifierToken(t *testing.T) {
	s := NewSet()
	v := newTokenVerifier(t, s, VerifierOptions{Lookup: noLookup(t)})

	tok, id, digest := NewToken()
	c := tokenCred(id, digest, time.Now().Add(5*time.Minute))
	s.Put(c)
	got, err := v.Token([]byte(tok))
	if err != nil || got != c {
		t.Fatalf("Token(a token in the set) = %p, %v; want %p", got, err, c)
	}
	p, err := TokenVerifier{v}.Verify(access.Presented{Kind: access.KindBearer, Secret: []byte(tok)})
	if err != nil {
		t.Fatalf("TokenVerifier.Verify: %v", err)
	}
	if p.Kind != access.KindBearer || p.Tenant != "acme" || p.Credential != c.X.Client || p.Subject != "bob@example.com" ||
		p.SubjectType != "api_only" || p.Scopes != access.ScopeRead || p.Modules != access.AllModules || p.Expires != c.Expires {
		t.Errorf("TokenVerifier.Verify = %+v", p)
	}
	if p.Credential == id || strings.Contains(fmt.Sprint(p), id) {
		t.Errorf("the principal shows the token id %q: %+v", id, p)
	}

	// Another token with the same id and another secret (a forgery with
	// a good check).
	forged := buildToken(TokenPrefix, id, strings.Repeat("A", secretLen))
	if _, err := v.Token(forged); !errors.Is(err, ErrInvalid) {
		t.Errorf("a forged secret under a known id: %v, want ErrInvalid", err)
	}

	// Expired, and at its very expiry.
	tok2, id2, digest2 := NewToken()
	s.Put(tokenCred(id2, digest2, time.Now().Add(-time.Second)))
	if _, err := v.Token([]byte(tok2)); !errors.Is(err, ErrInvalid) {
		t.Errorf("an expired token: %v, want ErrInvalid", err)
	}
	if _, err := (TokenVerifier{v}).Verify(access.Presented{Kind: access.KindBearer, Secret: []byte(tok2)}); !errors.Is(err, ErrInvalid) {
		t.Errorf("TokenVerifier.Verify of an expired token: %v, want ErrInvalid", err)
	}

	// The digest of the token under its id, but of another method: an
	// API key, a client or a user must never verify as a token.
	for _, m := range []Method{MethodAPIKey, MethodClient, MethodUser} {
		tok3, id3, digest3 := NewToken()
		other := tokenCred(id3, digest3, time.Now().Add(time.Minute))
		other.Method = m
		s.Put(other)
		if _, err := v.Token([]byte(tok3)); !errors.Is(err, ErrInvalid) {
			t.Errorf("a credential of method %v under the token's id: %v, want ErrInvalid", m, err)
		}
	}
	// Nor does a token verify as an API key or a client.
	if _, err := v.APIKey([]byte(tok)); !errors.Is(err, ErrMalformed) {
		t.Errorf("APIKey(a token): %v, want ErrMalformed", err)
	}
	if _, err := v.Client([]byte(id), []byte(tok)); !errors.Is(err, ErrMalformed) {
		t.Errorf("Client(a token's id, the token): %v, want ErrMalformed", err)
	}

	// Malformed: refused with no lookup (noLookup fails the test).
	for _, bad := range [][]byte{nil, []byte(tok[:TokenLen-1]), []byte(tok[:TokenLen-1] + "!")} {
		if _, err := v.Token(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("Token(%q) = %v, want ErrMalformed", bad, err)
		}
	}
	// Deleted: a miss (without a Lookup configured, ErrInvalid).
	s.Delete(id)
	v2 := newTokenVerifier(t, s, VerifierOptions{})
	if _, err := v2.Token([]byte(tok)); !errors.Is(err, ErrInvalid) {
		t.Errorf("a deleted token: %v, want ErrInvalid", err)
	}
}

// TestVerifierTokenMiss: a token the set does not hold yet (issued on
// another replica) is looked up once under its id; an unknown one is
// remembered.
func TestVerifierTokenMiss(t *testing.T) {
	s := NewSet()
	tok, id, digest := NewToken()
	c := tokenCred(id, digest, time.Now().Add(time.Minute))
	var asked []string
	v := newTokenVerifier(t, s, VerifierOptions{Lookup: func(_ context.Context, got string) (*Credential, error) {
		asked = append(asked, got)
		if got == id {
			return c, nil
		}
		return nil, ErrInvalid
	}})
	if got, err := v.Token([]byte(tok)); err != nil || got != c {
		t.Fatalf("Token(a token only the store has) = %v, %v", got, err)
	}
	unknown, _, _ := NewToken()
	for range 3 {
		if _, err := v.Token([]byte(unknown)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("an unknown token: %v", err)
		}
		v.neg.Wait()
	}
	if len(asked) != 2 || asked[0] != id || asked[1] != unknown[tokenIDStart:tokenIDEnd] {
		t.Errorf("lookups %q, want the token's id then the unknown one's, once", asked)
	}
}

// bearerFixture is a set of tokens like a busy replica's, and one of
// them to verify.
func bearerFixture(t testing.TB) (*Verifier, []byte) {
	const n = 10_000
	s := NewSet()
	var tok string
	for i := range n {
		tk, id, digest := NewToken()
		s.Put(tokenCred(id, digest, time.Now().Add(time.Hour)))
		if i == n/2 {
			tok = tk
		}
	}
	v := newTokenVerifier(t, s, VerifierOptions{Lookup: noLookup(t)})
	return v, []byte(tok)
}

// TestBearerDoesNotAllocate: verifying a token in the set allocates
// nothing (the route's hot path).
func TestBearerDoesNotAllocate(t *testing.T) {
	v, tok := bearerFixture(t)
	tv := TokenVerifier{v}
	pc := access.Presented{Kind: access.KindBearer, Secret: tok}
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := v.Token(tok); err != nil {
			t.Fatal(err)
		}
		if _, err := tv.Verify(pc); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("verifying a bearer token: %v allocations, want 0", n)
	}
}

// BenchmarkBearer is the cost of verifying a bearer token held in the set
// (10,000 tokens): parse, lookup, SHA-256, expiry. Goal: 0 allocs/op.
func BenchmarkBearer(b *testing.B) {
	v, tok := bearerFixture(b)
	tv := TokenVerifier{v}
	pc := access.Presented{Kind: access.KindBearer, Secret: tok}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tv.Verify(pc); err != nil {
			b.Fatal(err)
		}
	}
}

// Where the parts of a token lie, as the format writes them.
const (
	tokenIDStart   = len(TokenPrefix)
	tokenIDEnd     = tokenIDStart + tokenIDLen
	tokenSecretEnd = TokenLen - checkLen
)
