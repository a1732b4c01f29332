package admin

import (
	"encoding/hex"
	"time"

	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/store"
)

// CredentialOf converts a stored record into a credential; nil when the
// record is damaged.
func CredentialOf(k *store.Key) *authn.Credential {
	f := store.KeyFieldsOf(k)
	return CredentialOfFields(&f, Interner{})
}

// Interner gives the strings of a credential being built: tenant ids and
// names repeat across many credentials and are held once. The zero
// Interner interns through Intern.
type Interner struct {
	Tenant, Name func(b []byte) string
}

func (in Interner) tenant(b []byte) string {
	if in.Tenant != nil {
		return in.Tenant(b)
	}
	return Intern(string(b))
}

func (in Interner) name(b []byte) string {
	if in.Name != nil {
		return in.Name(b)
	}
	return Intern(string(b))
}

// CredentialOfFields builds the credential of a record's fields (as
// store.ScanKey finds them); nil when the record is damaged: an unknown
// kind, a digest that is not a SHA-256 in hex, an unparsable time, a user
// without a password, or a credential of no tenant. Unknown scopes and
// grants are dropped; a credential whose listed scopes are all unknown
// holds none and can do nothing (it fails closed).
func CredentialOfFields(f *store.KeyFields, in Interner) *authn.Credential {
	c := &authn.Credential{ID: string(f.ID), Name: in.name(f.Name)}
	switch string(f.Kind) {
	case "", store.KindAPIKey:
		c.Method = authn.MethodAPIKey
	case store.KindClient:
		c.Method = authn.MethodClient
	case store.KindUser:
		c.Method = authn.MethodUser
	case store.KindToken:
		c.Method = authn.MethodToken
	default:
		return nil
	}
	switch string(f.Type) {
	case "api_only":
		c.Type = authn.UserAPIOnly
	case "standard":
		c.Type = authn.UserStandard
	case "":
		if c.Method == authn.MethodUser {
			c.Type = authn.UserStandard
		}
	default:
		return nil
	}
	var ok bool
	if c.Created, ok = unixNano(f.Created); !ok {
		return nil
	}
	if c.Expires, ok = unixNano(f.Expires); !ok {
		return nil
	}
	if c.Method != authn.MethodUser && !decodeDigest(&c.Digest, f.Digest) {
		return nil
	}
	var x authn.Extra
	hasX := false
	if len(f.Tenant) > 0 {
		c.Tenant = in.tenant(f.Tenant)
	}
	store.Strings(f.Tenants, func(s []byte) { x.Tenants = append(x.Tenants, in.tenant(s)) })
	switch {
	case c.Tenant == "" && len(x.Tenants) == 1:
		c.Tenant, x.Tenants = x.Tenants[0], nil
	case c.Tenant == "" && len(x.Tenants) == 0:
		return nil
	case len(x.Tenants) > 0:
		hasX = true
	}
	if f.Scopes != nil {
		c.Scopes = ScopesOf(f.Scopes)
		if c.Scopes == 0 {
			// Scopes were listed but none is known: none granted.
			c.Scopes = scopeNone
		}
	}
	if f.Modules != nil {
		c.Modules = access.ModuleNone
		store.Strings(f.Modules, func(s []byte) { c.Modules |= access.ModuleNamed(string(s)) })
	}
	store.Strings(f.Grants, func(s []byte) {
		switch string(s) {
		case "password":
			c.Grants |= authn.GrantPassword
		case "client_credentials":
			c.Grants |= authn.GrantClientCredentials
		}
	})
	if c.Method == authn.MethodUser {
		if len(f.Password) == 0 {
			return nil
		}
		x.Password, hasX = string(f.Password), true
	}
	if c.Method == authn.MethodToken {
		if len(f.Client) == 0 {
			return nil
		}
		x.Client, x.User, hasX = in.name(f.Client), in.name(f.User), true
	}
	if len(f.TokenLifetime) > 0 {
		d, err := config.ParseDuration(string(f.TokenLifetime))
		if err != nil || d <= 0 {
			return nil
		}
		x.TokenLifetime, hasX = d, true
	}
	if len(f.PrevDigest) > 0 {
		until, ok := unixNano(f.PrevUntil)
		if !ok || !decodeDigest(&x.PrevDigest, f.PrevDigest) {
			return nil
		}
		if until != 0 {
			x.PrevUntil, hasX = until, true
		}
	}
	if hasX {
		c.X = &x
	}
	return c
}

// scopeNone is a scope bit no method needs: the scopes of a credential
// whose listed scopes are all unknown, which grants nothing.
const scopeNone access.Scopes = 1 << 63

// ScopesOf returns the method classes named in a raw JSON array of
// strings (CREATE, READ, UPDATE, DELETE); unknown names are skipped.
func ScopesOf(arr []byte) access.Scopes {
	var s access.Scopes
	store.Strings(arr, func(b []byte) {
		switch string(b) {
		case "CREATE":
			s |= access.ScopeCreate
		case "READ":
			s |= access.ScopeRead
		case "UPDATE":
			s |= access.ScopeUpdate
		case "DELETE":
			s |= access.ScopeDelete
		}
	})
	return s
}

func decodeDigest(dst *[32]byte, hexDigest []byte) bool {
	if len(hexDigest) != 64 {
		return false
	}
	_, err := hex.Decode(dst[:], hexDigest)
	return err == nil
}

// unixNano parses an RFC 3339 time as encoding/json does; empty is 0.
func unixNano(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, true
	}
	var t time.Time
	if t.UnmarshalText(b) != nil {
		return 0, false
	}
	return authn.UnixNano(t), true
}
