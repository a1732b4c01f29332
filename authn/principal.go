package authn

import (
	"errors"
	"net/netip"
	"time"

	"github.com/tollgate/tollgate/internal/access"
)

// KindVerifier verifies presented credentials of one kind: API keys
// today, users' passwords and OAuth tokens as they come.
type KindVerifier interface {
	Verify(c access.Presented) (access.Principal, error)
}

// Authenticator is the one Authenticate hook in front of a verifier per
// kind of credential.
type Authenticator struct {
	byKind [access.KindClient + 1]KindVerifier
	// Failures, when set, counts failed authentications per client
	// address; an address that has spent its allowance is refused
	// (ErrThrottled) before anything is verified, so a flood of bad keys
	// or passwords reaches neither the store nor the password hash.
	Failures *Throttle[netip.Addr]
}

// Register makes v the verifier of kind k.
func (a *Authenticator) Register(k access.Kind, v KindVerifier) { a.byKind[k] = v }

// Authenticate verifies c with the verifier of its kind. A kind without
// one is access.ErrUnsupported.
func (a *Authenticator) Authenticate(c access.Presented) (access.Principal, error) {
	if d, blocked := a.Failures.Blocked(c.Addr); blocked {
		return access.Principal{RetryAfter: max(int64((d+time.Second-1)/time.Second), 1)}, access.ErrThrottled
	}
	if int(c.Kind) >= len(a.byKind) || a.byKind[c.Kind] == nil {
		return access.Principal{}, access.ErrUnsupported
	}
	p, err := a.byKind[c.Kind].Verify(c)
	if err != nil && (errors.Is(err, access.ErrInvalid) || errors.Is(err, access.ErrMalformed)) {
		a.Failures.Fail(c.Addr)
	}
	return p, err
}

// Verify is the API key verifier: it checks c.Secret as an API key.
func (v *Verifier) Verify(c access.Presented) (access.Principal, error) {
	cr, err := v.APIKey(c.Secret)
	if err != nil {
		return access.Principal{}, err
	}
	return cr.Principal(), nil
}

// Principal is who c is: the tenant it acts for (empty for a credential
// of several until the request selects one), its scopes and modules. It
// does not allocate: the strings are c's.
func (c *Credential) Principal() access.Principal {
	p := access.Principal{
		Kind:       c.Method,
		Tenant:     c.Tenant,
		Tenants:    c.Tenants(),
		Credential: c.ID,
		Scopes:     c.Scopes,
		Modules:    c.Modules,
		Expires:    c.Expires,
	}
	// A credential without scopes or modules is not limited by them (an
	// empty list is refused when one is made).
	if p.Scopes == 0 {
		p.Scopes = access.AllScopes
	}
	if p.Modules == 0 {
		p.Modules = access.AllModules
	}
	switch c.Method {
	case MethodUser, MethodClient:
		p.Subject = c.ID
		p.SubjectType = c.Type.String()
	case MethodToken:
		// The backend sees who the token was issued to, never its id.
		p.Credential = c.X.Client
		p.Subject = c.X.User
		p.SubjectType = c.Type.String()
	}
	return p
}
