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

// secretFormat is the shape API keys and access tokens share:
// <prefix><id>_<secret><check>, the check a CRC-32 of the rest in base62.
type secretFormat struct {
	prefix string
	idLen  int
}

var (
	apiKeyFormat = secretFormat{KeyPrefix, idLen}
	tokenFormat  = secretFormat{TokenPrefix, tokenIDLen}
)

func (f secretFormat) len() int    { return len(f.prefix) + f.idLen + 1 + secretLen + checkLen }
func (f secretFormat) idEnd() int  { return len(f.prefix) + f.idLen }
func (f secretFormat) sumEnd() int { return f.len() - checkLen }

// make returns a fresh secret of the format with id (a fresh one when
// empty), its id and the digest to store.
func (f secretFormat) make(id string) (secret, newID string, digest [32]byte) {
	b := make([]byte, f.len())
	copy(b, f.prefix)
	if id == "" {
		randBase62(b[len(f.prefix):f.idEnd()])
	} else {
		copy(b[len(f.prefix):], id)
	}
	b[f.idEnd()] = '_'
	randBase62(b[f.idEnd()+1 : f.sumEnd()])
	putCheck(b[f.sumEnd():], crc32.ChecksumIEEE(b[:f.sumEnd()]))
	return string(b), string(b[len(f.prefix):f.idEnd()]), sha256.Sum256(b)
}

// parse checks the form and checksum of s and returns its id, a
// sub-slice of s. It does no lookup and does not allocate.
func (f secretFormat) parse(s []byte) ([]byte, error) {
	if len(s) != f.len() || string(s[:len(f.prefix)]) != f.prefix || s[f.idEnd()] != '_' {
		return nil, ErrMalformed
	}
	for i := len(f.prefix); i < len(s); i++ {
		if i != f.idEnd() && !isBase62[s[i]] {
			return nil, ErrMalformed
		}
	}
	var want [checkLen]byte
	putCheck(want[:], crc32.ChecksumIEEE(s[:f.sumEnd()]))
	if string(want[:]) != string(s[f.sumEnd():]) {
		return nil, ErrMalformed
	}
	return s[len(f.prefix):f.idEnd()], nil
}

// validID reports whether id has the form of an id of the format.
func (f secretFormat) validID(id string) bool {
	if len(id) != f.idLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !isBase62[id[i]] {
			return false
		}
	}
	return true
}

// NewAPIKey returns a fresh key, its id and the digest to store.
func NewAPIKey() (key, id string, digest [32]byte) { return apiKeyFormat.make("") }

// WithID returns a fresh key whose id is id, for regenerating a key. It
// panics if id is not a key id (see ValidID): ids come from stored keys.
func WithID(id string) (key string, digest [32]byte) {
	if !ValidID(id) {
		panic("authn: WithID: invalid key id")
	}
	key, _, digest = apiKeyFormat.make(id)
	return key, digest
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
func ParseAPIKey(key []byte) (id []byte, err error) { return apiKeyFormat.parse(key) }

// ValidID reports whether id has the form of a key id.
func ValidID(id string) bool { return apiKeyFormat.validID(id) }

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
