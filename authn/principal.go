package authn

import "github.com/tollgate/tollgate/internal/access"

// KindVerifier verifies presented credentials of one kind: API keys
// today, users' passwords and OAuth tokens as they come.
type KindVerifier interface {
	Verify(c access.Presented) (access.Principal, error)
}

// Authenticator is the one Authenticate hook in front of a verifier per
// kind of credential.
type Authenticator struct {
	byKind [access.KindClient + 1]KindVerifier
}

// Register makes v the verifier of kind k.
func (a *Authenticator) Register(k access.Kind, v KindVerifier) { a.byKind[k] = v }

// Authenticate verifies c with the verifier of its kind. A kind without
// one is access.ErrUnsupported.
func (a *Authenticator) Authenticate(c access.Presented) (access.Principal, error) {
	if int(c.Kind) >= len(a.byKind) || a.byKind[c.Kind] == nil {
		return access.Principal{}, access.ErrUnsupported
	}
	return a.byKind[c.Kind].Verify(c)
}

// Verify is the API key verifier: it checks c.Secret as an API key.
func (v *Verifier) Verify(c access.Presented) (access.Principal, error) {
	cr, err := v.APIKey(c.Secret)
	if err != nil {
		return access.Principal{}, err
	}
	return cr.Principal(), nil
}

// Principal is who c is. An API key acts for its one tenant, with every
// scope and module until the credential model holds narrower ones. It
// does not allocate: the strings are c's.
func (c *Credential) Principal() access.Principal {
	return access.Principal{
		Kind:       access.Kind(c.Method),
		Tenant:     c.Tenant,
		Credential: c.ID,
		Scopes:     access.AllScopes,
		Modules:    access.AllModules,
	}
}
