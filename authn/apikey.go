// Package authn owns credentials: the API key format, the in-memory
// credential set every replica keeps, and verification of a presented
// credential against it. It knows nothing of NATS or HTTP: the composition
// root feeds the set from the store and gives it a Lookup for misses.
package authn

import (
	"crypto/rand"
	"crypto/sha256"
	"hash/crc32"

	"github.com/tollgate/tollgate/internal/access"
)

// API keys look like tg_<id>_<secret><check>: a fixed prefix so that
// leaked keys are recognisable (and scannable), a public id used to find
// the credential, a 190-bit secret, and a CRC-32 check so that a mistyped or
// random string is rejected without any lookup. Only SHA-256 of the whole
// key is stored.
const (
	KeyPrefix    = "tg_"
	idLen        = 12
	secretLen    = 32
	checkLen     = 6
	KeyLen       = len(KeyPrefix) + idLen + 1 + secretLen + checkLen
	base62       = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	displayChars = len(KeyPrefix) + idLen + 1 + 4 // shown in lists: tg_<id>_abcd
)

// Errors returned by verification: the values of package access, so that
// they keep their identity across the seam (errors.Is).
var (
	ErrMalformed   = access.ErrMalformed
	ErrInvalid     = access.ErrInvalid
	ErrUnavailable = access.ErrStoreUnavailable
)

var isBase62 = func() (t [256]bool) {
	for i := 0; i < len(base62); i++ {
		t[base62[i]] = true
	}
	return
}()

// NewID returns a random base62 id of n characters.
func NewID(n int) string {
	b := make([]byte, n)
	randBase62(b)
	return string(b)
}

func randBase62(b []byte) {
	// Rejection sampling keeps the distribution uniform: 62*4 = 248.
	buf := make([]byte, len(b)*2)
	for i := 0; i < len(b); {
		_, _ = rand.Read(buf)
		for _, c := range buf {
			if c < 248 && i < len(b) {
				b[i] = base62[c%62]
				i++
			}
		}
	}
}

// NewAPIKey returns a fresh key, its id and the digest to store.
func NewAPIKey() (key, id string, digest [32]byte) {
	b := make([]byte, KeyLen)
	copy(b, KeyPrefix)
	randBase62(b[len(KeyPrefix) : len(KeyPrefix)+idLen])
	b[len(KeyPrefix)+idLen] = '_'
	randBase62(b[len(KeyPrefix)+idLen+1 : KeyLen-checkLen])
	putCheck(b[KeyLen-checkLen:], crc32.ChecksumIEEE(b[:KeyLen-checkLen]))
	return string(b), string(b[len(KeyPrefix) : len(KeyPrefix)+idLen]), sha256.Sum256(b)
}

// WithID returns a fresh key whose id is id, for regenerating a key. It
// panics if id is not a key id (see ValidID): ids come from stored keys.
func WithID(id string) (key string, digest [32]byte) {
	if !ValidID(id) {
		panic("authn: WithID: invalid key id")
	}
	b := make([]byte, KeyLen)
	copy(b, KeyPrefix)
	copy(b[len(KeyPrefix):], id)
	b[len(KeyPrefix)+idLen] = '_'
	randBase62(b[len(KeyPrefix)+idLen+1 : KeyLen-checkLen])
	putCheck(b[KeyLen-checkLen:], crc32.ChecksumIEEE(b[:KeyLen-checkLen]))
	return string(b), sha256.Sum256(b)
}

func putCheck(dst []byte, v uint32) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = base62[v%62]
		v /= 62
	}
}

// Display returns the part of a key that may be shown and logged.
func Display(key string) string {
	if len(key) < displayChars {
		return key
	}
	return key[:displayChars] + "…"
}

// ParseAPIKey checks the form and checksum of a presented key and returns
// its id, a sub-slice of key. It does no lookup and does not allocate.
func ParseAPIKey(key []byte) (id []byte, err error) {
	if len(key) != KeyLen || string(key[:len(KeyPrefix)]) != KeyPrefix || key[len(KeyPrefix)+idLen] != '_' {
		return nil, ErrMalformed
	}
	for i := len(KeyPrefix); i < KeyLen; i++ {
		if i != len(KeyPrefix)+idLen && !isBase62[key[i]] {
			return nil, ErrMalformed
		}
	}
	var want [checkLen]byte
	putCheck(want[:], crc32.ChecksumIEEE(key[:KeyLen-checkLen]))
	if string(want[:]) != string(key[KeyLen-checkLen:]) {
		return nil, ErrMalformed
	}
	return key[len(KeyPrefix) : len(KeyPrefix)+idLen], nil
}

// ValidID reports whether id has the form of a key id.
func ValidID(id string) bool {
	if len(id) != idLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !isBase62[id[i]] {
			return false
		}
	}
	return true
}

// OAuth clients are identified by tgc_ and 16 base62 characters, and
// authenticate with a secret of tgs_ and 40 (238 bits), of which only
// SHA-256 is stored.
const (
	ClientPrefix    = "tgc_"
	clientIDLen     = len(ClientPrefix) + 16
	secretPrefix    = "tgs_"
	clientSecretLen = 40
)

// NewClient returns a fresh client id.
func NewClient() string { return ClientPrefix + NewID(clientIDLen-len(ClientPrefix)) }

// NewClientSecret returns a fresh client secret and the digest to store.
func NewClientSecret() (secret string, digest [32]byte) {
	secret = secretPrefix + NewID(clientSecretLen)
	return secret, sha256.Sum256([]byte(secret))
}

// ValidClientID reports whether id has the form of a client id. It does
// not allocate.
func ValidClientID[T string | []byte](id T) bool {
	if len(id) != clientIDLen || string(id[:len(ClientPrefix)]) != ClientPrefix {
		return false
	}
	for i := len(ClientPrefix); i < len(id); i++ {
		if !isBase62[id[i]] {
			return false
		}
	}
	return true
}
