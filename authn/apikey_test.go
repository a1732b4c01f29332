package authn

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/access"
)

const idStart, idEnd = len(KeyPrefix), len(KeyPrefix) + idLen

// buildKey assembles a key from its parts with a correct check, whatever
// characters the parts hold, so that tests can reach the checks that come
// after the checksum's.
func buildKey(t testing.TB, id, secret string) []byte {
	t.Helper()
	if len(id) != idLen || len(secret) != secretLen {
		t.Fatalf("buildKey: id %q and secret %q have the wrong lengths", id, secret)
	}
	b := []byte(KeyPrefix + id + "_" + secret + strings.Repeat("0", checkLen))
	putCheck(b[KeyLen-checkLen:], crc32.ChecksumIEEE(b[:KeyLen-checkLen]))
	return b
}

func checkKeyForm(t *testing.T, key string) {
	t.Helper()
	if got, want := len(key), KeyLen; got != want {
		t.Fatalf("len(%q) = %d, want %d", key, got, want)
	}
	if !strings.HasPrefix(key, KeyPrefix) {
		t.Errorf("key %q does not start with %q", key, KeyPrefix)
	}
	if got, want := key[idEnd], byte('_'); got != want {
		t.Errorf("key %q: byte %d = %q, want %q", key, idEnd, got, want)
	}
	for i := idStart; i < KeyLen; i++ {
		if i != idEnd && !strings.ContainsRune(base62, rune(key[i])) {
			t.Errorf("key %q: byte %d = %q is not base62", key, i, key[i])
		}
	}
}

func TestKeyLen(t *testing.T) {
	// tg_ + 12 id + _ + 32 secret + 6 check. Keys are stored and scanned
	// for: the length is part of the format.
	if got, want := KeyLen, 54; got != want {
		t.Errorf("KeyLen = %d, want %d", got, want)
	}
}

func TestNewAPIKey(t *testing.T) {
	key, id, digest := NewAPIKey()
	checkKeyForm(t, key)
	if got, want := id, key[idStart:idEnd]; got != want {
		t.Errorf("id = %q, want %q (key %q)", got, want, key)
	}
	if !ValidID(id) {
		t.Errorf("ValidID(%q) = false, want true", id)
	}
	if got, want := digest, sha256.Sum256([]byte(key)); got != want {
		t.Errorf("digest = %x, want sha256(key) = %x", got, want)
	}
	gotID, err := ParseAPIKey([]byte(key))
	if err != nil {
		t.Fatalf("ParseAPIKey(%q): %v", key, err)
	}
	if got, want := string(gotID), id; got != want {
		t.Errorf("ParseAPIKey(%q) id = %q, want %q", key, got, want)
	}
}

func TestNewAPIKeyUnique(t *testing.T) {
	const n = 1000
	ids := make(map[string]bool, n)
	keys := make(map[string]bool, n)
	for range n {
		key, id, _ := NewAPIKey()
		if ids[id] {
			t.Fatalf("id %q generated twice", id)
		}
		if keys[key] {
			t.Fatalf("key %q generated twice", key)
		}
		ids[id], keys[key] = true, true
		if _, err := ParseAPIKey([]byte(key)); err != nil {
			t.Fatalf("ParseAPIKey(%q): %v", key, err)
		}
	}
}

func TestParseAPIKeyRejects(t *testing.T) {
	key, id, _ := NewAPIKey()
	secret := key[idEnd+1 : KeyLen-checkLen]
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"empty non-nil", []byte{}},
		{"prefix only", []byte(KeyPrefix)},
		{"one short", []byte(key[:KeyLen-1])},
		{"one long", []byte(key + "0")},
		{"display form", []byte(Display(key))},
		{"with whitespace", []byte(" " + key[:KeyLen-1])},
		{"upper-case prefix", append([]byte("TG_"), key[3:]...)},
		{"other prefix", append([]byte("sk_"), key[3:]...)},
		{"prefix with correct check", buildKeyWithPrefix(t, "xx_", id, secret)},
		{"separator replaced", append(append([]byte(key[:idEnd]), 'x'), key[idEnd+1:]...)},
		{"bad charset in id, correct check", buildKey(t, "abc-def+ghij", secret)},
		{"bad charset in secret, correct check", buildKey(t, id, strings.Repeat("a", secretLen-1)+"/")},
		{"NUL in secret, correct check", buildKey(t, id, strings.Repeat("a", secretLen-1)+"\x00")},
		{"non-ASCII in secret, correct check", buildKey(t, id, strings.Repeat("a", secretLen-2)+"é")},
		{"bad charset in check", append([]byte(key[:KeyLen-1]), '!')},
		{"all zeros", make([]byte, KeyLen)},
		{"underscores", bytes.Repeat([]byte{'_'}, KeyLen)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAPIKey(tt.in)
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseAPIKey(%q) = %q, %v; want ErrMalformed", tt.in, got, err)
			}
			if got != nil {
				t.Errorf("ParseAPIKey(%q) id = %q, want nil", tt.in, got)
			}
		})
	}
}

func buildKeyWithPrefix(t *testing.T, prefix, id, secret string) []byte {
	t.Helper()
	b := buildKey(t, id, secret)
	copy(b, prefix)
	putCheck(b[KeyLen-checkLen:], crc32.ChecksumIEEE(b[:KeyLen-checkLen]))
	return b
}

// Every single-character substitution anywhere in a valid key is
// rejected: in the prefix, the separator and the charset by their own
// checks, anywhere else by the checksum.
func TestParseAPIKeyRejectsEverySubstitution(t *testing.T) {
	alphabet := base62 + "_-+/=.: \x00\xff"
	for range 3 {
		key, _, _ := NewAPIKey()
		if _, err := ParseAPIKey([]byte(key)); err != nil {
			t.Fatalf("ParseAPIKey(%q): %v", key, err)
		}
		for i := 0; i < KeyLen; i++ {
			tried := 0
			for j := 0; j < len(alphabet); j++ {
				c := alphabet[j]
				if c == key[i] {
					continue
				}
				b := []byte(key)
				b[i] = c
				tried++
				if id, err := ParseAPIKey(b); !errors.Is(err, ErrMalformed) {
					t.Errorf("ParseAPIKey(%q) (byte %d %q→%q) = %q, %v; want ErrMalformed", b, i, key[i], c, id, err)
				}
			}
			if tried == 0 {
				t.Fatalf("position %d: no substitution tried", i)
			}
		}
	}
}

func TestParseAPIKeyDoesNotAllocate(t *testing.T) {
	key, _, _ := NewAPIKey()
	b := []byte(key)
	bad := []byte(key[:KeyLen-1] + "!")
	allocs := testing.AllocsPerRun(100, func() {
		_, _ = ParseAPIKey(b)
		_, _ = ParseAPIKey(bad)
	})
	if allocs != 0 {
		t.Errorf("ParseAPIKey allocates %v times per call pair, want 0", allocs)
	}
}

func TestWithID(t *testing.T) {
	key, id, digest := NewAPIKey()
	key2, digest2 := WithID(id)
	checkKeyForm(t, key2)
	gotID, err := ParseAPIKey([]byte(key2))
	if err != nil {
		t.Fatalf("ParseAPIKey(%q): %v", key2, err)
	}
	if got, want := string(gotID), id; got != want {
		t.Errorf("WithID(%q) key has id %q", want, got)
	}
	if key2 == key {
		t.Errorf("WithID(%q) returned the old key", id)
	}
	if got, want := key2[idEnd+1:KeyLen-checkLen], key[idEnd+1:KeyLen-checkLen]; got == want {
		t.Errorf("WithID kept the secret %q", got)
	}
	if digest2 == digest {
		t.Errorf("WithID kept the digest")
	}
	if got, want := digest2, sha256.Sum256([]byte(key2)); got != want {
		t.Errorf("WithID digest = %x, want sha256(key) = %x", got, want)
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"abcDEF012345", true},
		{NewID(idLen), true},
		{"", false},
		{"abcDEF01234", false},
		{"abcDEF0123456", false},
		{"abcDEF01234_", false},
		{"abcDEF01234-", false},
		{"abcDEF01234é", false},
	}
	for _, tt := range tests {
		if got := ValidID(tt.in); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestNewID(t *testing.T) {
	for _, n := range []int{0, 1, 12, 100} {
		id := NewID(n)
		if got := len(id); got != n {
			t.Errorf("len(NewID(%d)) = %d", n, got)
		}
		for i := 0; i < len(id); i++ {
			if !isBase62[id[i]] {
				t.Errorf("NewID(%d) = %q: byte %d is not base62", n, id, i)
			}
		}
	}
}

func TestDisplay(t *testing.T) {
	key, id, _ := NewAPIKey()
	tests := []struct {
		name, in, want string
	}{
		{"key", key, KeyPrefix + id + "_" + key[idEnd+1:idEnd+5] + "…"},
		{"short", "tg_abc", "tg_abc"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Display(tt.in)
			if got != tt.want {
				t.Errorf("Display(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if tt.in == key && strings.Contains(got, key[idEnd+5:]) {
				t.Errorf("Display(%q) = %q shows the secret", tt.in, got)
			}
		})
	}
}

func FuzzParseAPIKey(f *testing.F) {
	key, _, _ := NewAPIKey()
	f.Add([]byte(key))
	for _, n := range []int{0, 1, 3, idEnd, idEnd + 1, KeyLen - checkLen, KeyLen - 1} {
		f.Add([]byte(key[:n]))
	}
	f.Add([]byte(key + key))
	f.Add([]byte("hello, world"))
	f.Add([]byte("tg_" + strings.Repeat("x", KeyLen-3)))
	f.Add(bytes.Repeat([]byte{0xff}, KeyLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		id, err := ParseAPIKey(b)
		if !bytes.Equal(b, in) {
			t.Fatalf("ParseAPIKey modified its input: %q → %q", in, b)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) || id != nil {
				t.Fatalf("ParseAPIKey(%q) = %q, %v; want nil, ErrMalformed", b, id, err)
			}
		} else {
			if len(b) != KeyLen || !bytes.HasPrefix(b, []byte(KeyPrefix)) {
				t.Fatalf("ParseAPIKey accepted %q (len %d)", b, len(b))
			}
			if len(id) != idLen || &id[0] != &b[idStart] {
				t.Fatalf("ParseAPIKey(%q) id %q is not b[%d:%d]", b, id, idStart, idEnd)
			}
			if !ValidID(string(id)) {
				t.Fatalf("ParseAPIKey(%q) id %q is not a valid id", b, id)
			}
		}

		// A key built from the input's bytes mapped onto base62 parses and
		// yields its id: the check encoding works for every body.
		var raw [idLen + secretLen]byte
		for i := range raw {
			if i < len(b) {
				raw[i] = base62[int(b[i])%len(base62)]
			} else {
				raw[i] = base62[i%len(base62)]
			}
		}
		built := buildKey(t, string(raw[:idLen]), string(raw[idLen:]))
		if id, err := ParseAPIKey(built); err != nil || string(id) != string(raw[:idLen]) {
			t.Fatalf("ParseAPIKey(%q) = %q, %v; want %q, nil", built, id, err, raw[:idLen])
		}

		fresh, freshID, _ := NewAPIKey()
		if id, err := ParseAPIKey([]byte(fresh)); err != nil || string(id) != freshID {
			t.Fatalf("ParseAPIKey(%q) = %q, %v; want %q, nil", fresh, id, err, freshID)
		}
	})
}

// TestMethodIsKind: a credential's Method and the access.Kind the proxy
// sees are the same numbers.
func TestMethodIsKind(t *testing.T) {
	if access.Kind(MethodAPIKey) != access.KindAPIKey || MethodAPIKey.String() != access.KindAPIKey.String() {
		t.Errorf("MethodAPIKey %d %q, KindAPIKey %d %q", MethodAPIKey, MethodAPIKey, access.KindAPIKey, access.KindAPIKey)
	}
}
