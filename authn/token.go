package authn

import "github.com/tollgate/tollgate/internal/access"

// Access tokens (OAuth2 bearer tokens) look like API keys with their own
// prefix and a longer id: tgt_<16-char id>_<32-char secret><6-char
// check>. They are opaque: the store keeps the SHA-256 of the whole
// token under its id, with who it was issued to, for as long as it is
// valid. Opaque rather than signed, because every property asked of a
// token is one of a stored credential: revocation on every replica
// within a second is a deletion the watchers deliver (a signed token
// would need a revocation list replicated the same way, and key
// rotation besides), a token issued on one replica is found on another
// by the store lookup on a miss, and nothing usable is stored.
const (
	TokenPrefix = "tgt_"
	tokenIDLen  = 16
	TokenLen    = len(TokenPrefix) + tokenIDLen + 1 + secretLen + checkLen
)

// NewToken returns a fresh access token, its id and the digest to store.
func NewToken() (token, id string, digest [32]byte) { return tokenFormat.make("") }

// ParseToken checks the form and checksum of a presented token and
// returns its id, a sub-slice of token. It does no lookup and does not
// allocate.
func ParseToken(token []byte) (id []byte, err error) { return tokenFormat.parse(token) }

// ValidTokenID reports whether id has the form of a token id.
func ValidTokenID(id string) bool { return tokenFormat.validID(id) }

// Token verifies a presented access token. For a token in the set it
// does no I/O and no allocation.
func (v *Verifier) Token(token []byte) (*Credential, error) {
	id, err := ParseToken(token)
	if err != nil {
		return nil, err
	}
	return v.find(id, token, MethodToken)
}

// TokenVerifier is the KindVerifier of bearer tokens.
type TokenVerifier struct{ *Verifier }

// Verify checks c.Secret as an access token.
func (v TokenVerifier) Verify(c access.Presented) (access.Principal, error) {
	cr, err := v.Token(c.Secret)
	if err != nil {
		return access.Principal{}, err
	}
	return cr.Principal(), nil
}
