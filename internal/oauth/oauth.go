// Package oauth is tollgate's OAuth2 server on the proxy listener: the
// token endpoint (RFC 6749: client credentials, and the password grant
// for legacy clients that were given it) and the revocation endpoint
// (RFC 7009). It issues opaque access tokens (see authn.NewToken), stored
// as digests in the tokens bucket and verified on routes like every other
// credential. Errors carry both RFC 6749 §5.2's fields and the problems
// shape.
package oauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/admin"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/proxy"
	"go.uber.org/zap"
)

// Options wire the server to the credential sets and the store.
type Options struct {
	// Keys, Clients and Users verify an API key (the legacy password
	// grant's Api-Key header), a client's id and secret, and a user's
	// password.
	Keys    *authn.Verifier
	Clients *authn.Verifier
	Users   *authn.UserVerifier
	// Tokens is this replica's set of tokens: an issued token is put in
	// it at once.
	Tokens *authn.Set
	// LookupToken finds a token the set does not hold yet (issued on
	// another replica a moment ago), for the revocation endpoint.
	LookupToken authn.Lookup
	// Bucket is where tokens are stored.
	Bucket jetstream.KeyValue
	// WriteCtx bounds a store write (store.Store.WriteCtx).
	WriteCtx func(context.Context) (context.Context, context.CancelFunc)
	// Failures counts failed client authentications per address.
	Failures *authn.Throttle[netip.Addr]
	// Config returns the configuration in force.
	Config func() *config.Config
	// Plan returns the plan of a tenant ("" if unknown), for its token
	// lifetime.
	Plan func(tenant string) string
	// Admit counts a token request against the tenant's quota when
	// oauth.count_requests is on; false refuses it.
	Admit func(tenant string) bool
	// PasswordGrants counts uses of the password grant by client.
	PasswordGrants *prometheus.CounterVec
	Log            *zap.Logger
	Now            func() time.Time
}

// Server answers the OAuth2 endpoints.
type Server struct{ o Options }

// New returns a server.
func New(o Options) *Server {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	return &Server{o: o}
}

// Serve is the proxy's OAuth hook.
func (s *Server) Serve(r proxy.OAuthRequest) proxy.OAuthAnswer {
	req, e := parse(r)
	if e != nil {
		return e.answer()
	}
	switch r.Endpoint {
	case proxy.OAuthToken:
		return s.token(req)
	case proxy.OAuthRevoke:
		return s.revoke(req)
	}
	return fail(404, problems.CodeRouteNotFound, "", "").answer()
}

// request is a parsed token or revocation request.
type request struct {
	r      proxy.OAuthRequest
	params url.Values // the form and the query string, each name once
	// How the client authenticated: Basic (id and secret), form or
	// query parameters, or an API key in a header.
	basicID, basicSecret string
	hasBasic             bool
}

// oauthError is an error answer: an RFC 6749 §5.2 code (or another
// problems code) with its status.
type oauthError struct {
	status     int
	code       problems.Code
	field, msg string
	challenge  string
	retryAfter int64
}

func fail(status int, code problems.Code, field, msg string) *oauthError {
	return &oauthError{status: status, code: code, field: field, msg: msg}
}

// answer renders e with RFC 6749's fields and the problems shape.
func (e *oauthError) answer() proxy.OAuthAnswer {
	msg := e.msg
	if msg == "" {
		msg = e.code.Message()
	}
	b := []byte(`{"error":`)
	b = problems.AppendString(b, string(e.code))
	b = append(b, `,"error_description":`...)
	b = problems.AppendString(b, msg)
	b = append(b, ',')
	p := problems.Problem{Level: problems.Severe, Code: e.code, Field: e.field, Message: msg}
	body := problems.Append(nil, e.status, []problems.Problem{p})
	b = append(b, body[1:]...) // the problems object without its '{'
	return proxy.OAuthAnswer{Status: e.status, Body: b, Challenge: e.challenge, RetryAfter: e.retryAfter}
}

// parse reads the parameters of a request: POST only; a form body
// (application/x-www-form-urlencoded) and the query string, which legacy
// clients use for all of them. A parameter may come once (RFC 6749 §3.2).
func parse(r proxy.OAuthRequest) (*request, *oauthError) {
	if r.Method != "POST" {
		e := fail(405, problems.CodeInvalidRequest, "", "use POST")
		return nil, e
	}
	if r.Several {
		return nil, fail(400, problems.CodeInvalidRequest, "Authorization", "a header was sent more than once")
	}
	req := &request{r: r, params: url.Values{}}
	seen := map[string]bool{} // every name, empty or not: none may repeat (§3.2)
	add := func(raw []byte, where string) *oauthError {
		vs, err := url.ParseQuery(string(raw))
		if err != nil {
			return fail(400, problems.CodeInvalidRequest, where, "cannot be parsed as a form")
		}
		for k, v := range vs {
			if len(v) > 1 || seen[k] {
				return fail(400, problems.CodeInvalidRequest, k, "the parameter "+describable(k)+" was sent more than once")
			}
			seen[k] = true
			if v[0] != "" { // empty parameters are as if left out (§3.1)
				req.params.Set(k, v[0])
			}
		}
		return nil
	}
	if len(r.Body) > 0 {
		ct, _, _ := strings.Cut(string(r.ContentType), ";")
		if !strings.EqualFold(strings.TrimSpace(ct), "application/x-www-form-urlencoded") {
			return nil, fail(400, problems.CodeInvalidRequest, "Content-Type", "send the parameters as application/x-www-form-urlencoded")
		}
		if e := add(r.Body, "body"); e != nil {
			return nil, e
		}
	}
	if e := add(r.Query, "query"); e != nil {
		return nil, e
	}
	if len(r.Authorization) > 0 {
		scheme, cred, _ := strings.Cut(string(r.Authorization), " ")
		if strings.EqualFold(scheme, "Basic") {
			// RFC 6749 §2.3.1: id and secret are form-encoded, then
			// joined with ':' and base64-encoded.
			dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
			id, secret, ok := strings.Cut(string(dec), ":")
			if err != nil || !ok {
				return nil, fail(400, problems.CodeInvalidRequest, "Authorization", "the Basic credentials cannot be decoded")
			}
			if req.basicID, err = url.QueryUnescape(id); err != nil {
				return nil, fail(400, problems.CodeInvalidRequest, "Authorization", "the client id is not form-encoded")
			}
			if req.basicSecret, err = url.QueryUnescape(secret); err != nil {
				return nil, fail(400, problems.CodeInvalidRequest, "Authorization", "the client secret is not form-encoded")
			}
			req.hasBasic = true
		}
	}
	return req, nil
}

// client is the authenticated client of a request: an OAuth client or,
// for the legacy password grant, an API key.
type client struct {
	c  *authn.Credential
	id string
}

// authenticate finds and verifies the client of a request. RFC 6749
// §2.3: exactly one way of authenticating.
func (s *Server) authenticate(req *request) (*client, *oauthError) {
	ways := 0
	if req.hasBasic {
		ways++
	}
	formID, formSecret := req.params.Get("client_id"), req.params.Get("client_secret")
	if formSecret != "" {
		ways++
	}
	if len(req.r.APIKey) > 0 {
		ways++
	}
	if ways > 1 {
		return nil, fail(400, problems.CodeInvalidRequest, "", "authenticate the client one way only")
	}
	if d, blocked := s.o.Failures.Blocked(req.r.Addr); blocked {
		e := fail(429, problems.CodeTooManyFailures, "", "")
		e.retryAfter = max(int64((d+time.Second-1)/time.Second), 1)
		return nil, e
	}
	invalid := func(field string) *oauthError {
		s.o.Failures.Fail(req.r.Addr)
		e := fail(401, problems.CodeInvalidClient, field, "")
		e.challenge = `Basic realm="tollgate"`
		return e
	}
	var (
		c   *authn.Credential
		err error
	)
	switch {
	case len(req.r.APIKey) > 0:
		c, err = s.o.Keys.APIKey(req.r.APIKey)
		if err != nil {
			return nil, s.verifyErr(err, invalid(s.o.Config().OAuth.APIKeyHeader))
		}
		return &client{c: c, id: c.ID}, nil
	case req.hasBasic:
		if formID != "" && formID != req.basicID {
			return nil, fail(400, problems.CodeInvalidRequest, "client_id", "differs from the client of the Authorization header")
		}
		c, err = s.o.Clients.Client([]byte(req.basicID), []byte(req.basicSecret))
		if err != nil {
			return nil, s.verifyErr(err, invalid("Authorization"))
		}
	case formSecret != "":
		c, err = s.o.Clients.Client([]byte(formID), []byte(formSecret))
		if err != nil {
			return nil, s.verifyErr(err, invalid("client_secret"))
		}
	default:
		// Public clients are not served: tollgate's clients are
		// confidential (RFC 9700 §2.4 for the password grant).
		e := invalid("client_id")
		e.msg = "authenticate the client: HTTP Basic, client_id and client_secret, or an API key"
		return nil, e
	}
	return &client{c: c, id: c.ID}, nil
}

func (s *Server) verifyErr(err error, invalid *oauthError) *oauthError {
	if errors.Is(err, access.ErrStoreUnavailable) {
		return fail(503, problems.CodeStoreUnavailable, "", "")
	}
	return invalid
}

// token serves the token endpoint.
func (s *Server) token(req *request) proxy.OAuthAnswer {
	gt := req.params.Get("grant_type")
	if gt == "" {
		return fail(400, problems.CodeInvalidRequest, "grant_type", "required").answer()
	}
	if gt != "client_credentials" && gt != "password" {
		return fail(400, problems.CodeUnsupportedGrantType, "grant_type", "supported: client_credentials, password").answer()
	}
	cl, e := s.authenticate(req)
	if e != nil {
		return e.answer()
	}
	requested, e := parseScope(req.params.Get("scope"))
	if e != nil {
		return e.answer()
	}
	rec := &store.Key{Kind: store.KindToken, Client: cl.id}
	scopes, modules := scopesOf(cl.c), cl.c.Modules
	switch gt {
	case "client_credentials":
		if cl.c.Method != authn.MethodClient || cl.c.Grants&authn.GrantClientCredentials == 0 {
			return fail(400, problems.CodeUnauthorizedClient, "grant_type", "the client may not use the client_credentials grant").answer()
		}
		rec.Tenant, rec.Tenants = cl.c.Tenant, cl.c.Tenants()
	case "password":
		if cl.c.Grants&authn.GrantPassword == 0 {
			return fail(400, problems.CodeUnauthorizedClient, "grant_type", "the client may not use the password grant").answer()
		}
		user, password := req.params.Get("username"), req.params.Get("password")
		if user == "" || password == "" {
			field := "username"
			if user != "" {
				field = "password"
			}
			return fail(400, problems.CodeInvalidRequest, field, "required with the password grant").answer()
		}
		if s.o.PasswordGrants != nil {
			s.o.PasswordGrants.WithLabelValues(cl.id).Inc()
		}
		u, retry, err := s.o.Users.CheckPassword([]byte(user), []byte(password))
		switch {
		case errors.Is(err, access.ErrThrottled):
			e := fail(429, problems.CodeTooManyFailures, "username", "")
			e.retryAfter = retry
			return e.answer()
		case errors.Is(err, access.ErrStoreUnavailable):
			return fail(503, problems.CodeStoreUnavailable, "", "").answer()
		case err != nil:
			s.o.Failures.Fail(req.r.Addr)
			return fail(400, problems.CodeInvalidGrant, "password", "").answer()
		}
		// The token acts for the user's tenants, with no more than the
		// client and the user both hold.
		rec.User, rec.Type = u.ID, u.Type.String()
		rec.Tenant, rec.Tenants = u.Tenant, u.Tenants()
		scopes &= scopesOf(u)
		modules = intersectModules(modules, u.Modules)
	}
	if requested != 0 {
		if requested&^scopes != 0 {
			return fail(400, problems.CodeInvalidScope, "scope", "beyond the scopes granted to the client and user").answer()
		}
		scopes = requested
	}
	if scopes == 0 {
		return fail(400, problems.CodeInvalidScope, "scope", "the client and the user share no scope").answer()
	}
	rec.Scopes = strings.Fields(scopes.String())
	if modules != 0 {
		rec.Modules = access.ModuleNames(modules &^ access.ModuleNone)
		if len(rec.Modules) == 0 {
			// A stored empty list would read as every module.
			return fail(400, problems.CodeInvalidScope, "scope", "the client and the user share no module").answer()
		}
	}
	c := s.o.Config()
	if c.OAuth.CountRequests && s.o.Admit != nil && rec.Tenant != "" && !s.o.Admit(rec.Tenant) {
		return fail(429, problems.CodeQuotaExceeded, "", "").answer()
	}
	// The client's lifetime, else its tenant's plan's, else the default.
	lifetime := c.OAuth.TokenLifetime.D()
	if rec.Tenant != "" && s.o.Plan != nil {
		if p, ok := c.Plans[s.o.Plan(rec.Tenant)]; ok && p.TokenLifetime > 0 {
			lifetime = p.TokenLifetime.D()
		}
	}
	if x := cl.c.X; x != nil && x.TokenLifetime > 0 {
		lifetime = min(x.TokenLifetime, store.MaxTokenLifetime)
	}
	now := s.o.Now().UTC()
	expires := now.Add(lifetime)
	rec.Created, rec.Expires = now, &expires
	token, id, digest := authn.NewToken()
	rec.ID, rec.Digest = id, hex.EncodeToString(digest[:])
	ctx, cancel := s.o.WriteCtx(context.Background())
	defer cancel()
	if _, err := store.Create(ctx, s.o.Bucket, id, rec); err != nil {
		s.o.Log.Warn("token not stored", zap.Error(err))
		return fail(503, problems.CodeStoreUnavailable, "", "the token could not be stored; retry").answer()
	}
	if cr := admin.CredentialOf(rec); cr != nil {
		s.o.Tokens.Put(cr)
	}
	b := []byte(`{"access_token":`)
	b = problems.AppendString(b, token)
	b = append(b, `,"token_type":"Bearer","expires_in":`...)
	b = strconv.AppendInt(b, int64(lifetime/time.Second), 10)
	b = append(b, `,"scope":`...)
	b = problems.AppendString(b, scopes.String())
	b = append(b, '}')
	return proxy.OAuthAnswer{Status: 200, Body: b}
}

func scopesOf(c *authn.Credential) access.Scopes {
	s := c.Principal().Scopes
	return s & (access.ScopeCreate | access.ScopeRead | access.ScopeUpdate | access.ScopeDelete)
}

// intersectModules is what two credentials' modules both allow (0 is
// every module).
func intersectModules(a, b access.Modules) access.Modules {
	switch {
	case a == 0:
		return b
	case b == 0:
		return a
	}
	return a & b
}

// parseScope reads a scope parameter: space-separated method classes.
func parseScope(s string) (access.Scopes, *oauthError) {
	var out access.Scopes
	for _, name := range strings.Split(s, " ") {
		if name == "" {
			continue
		}
		sc := config.ScopeNamed(name)
		if sc == 0 {
			// The description holds no client text (RFC 6749 §5.2 limits
			// its characters); the field names the parameter.
			return 0, fail(400, problems.CodeInvalidScope, "scope", "unknown scope "+describable(name)+" (known: CREATE READ UPDATE DELETE)")
		}
		out |= sc
	}
	return out, nil
}

// revoke serves RFC 7009: the client authenticates as at the token
// endpoint and revokes a token issued to it; an unknown or expired token
// is answered 200 like a revoked one.
func (s *Server) revoke(req *request) proxy.OAuthAnswer {
	cl, e := s.authenticate(req)
	if e != nil {
		return e.answer()
	}
	tok := req.params.Get("token")
	if tok == "" {
		return fail(400, problems.CodeInvalidRequest, "token", "required").answer()
	}
	if h := req.params.Get("token_type_hint"); h != "" && h != "access_token" && h != "refresh_token" {
		return fail(400, problems.CodeUnsupportedTokenType, "token_type_hint", "").answer()
	}
	id, err := authn.ParseToken([]byte(tok))
	if err != nil {
		return proxy.OAuthAnswer{Status: 200}
	}
	ctx, cancel := s.o.WriteCtx(context.Background())
	defer cancel()
	c := s.o.Tokens.Get(id)
	if c == nil && s.o.LookupToken != nil {
		var err error
		c, err = s.o.LookupToken(ctx, string(id))
		if err != nil && !errors.Is(err, authn.ErrInvalid) {
			return fail(503, problems.CodeStoreUnavailable, "", "").answer()
		}
	}
	if c == nil {
		return proxy.OAuthAnswer{Status: 200}
	}
	if sum := sha256.Sum256([]byte(tok)); subtle.ConstantTimeCompare(sum[:], c.Digest[:]) != 1 {
		return proxy.OAuthAnswer{Status: 200} // not a token tollgate issued
	}
	if c.X == nil || c.X.Client != cl.id {
		return fail(400, problems.CodeUnauthorizedClient, "token", "the token was issued to another client").answer()
	}
	if err := store.Delete(ctx, s.o.Bucket, string(id)); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fail(503, problems.CodeStoreUnavailable, "", "the token could not be revoked; retry").answer()
	}
	s.o.Tokens.Delete(string(id))
	return proxy.OAuthAnswer{Status: 200}
}

// describable returns s when an error_description may hold it (RFC 6749
// §5.2: %x20-21 / %x23-5B / %x5D-7E, so no '"' or '\\'), else a
// placeholder: client text goes into a description only as it is allowed.
func describable(s string) string {
	if len(s) > 64 {
		return "(too long to show)"
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return "(not shown: characters a description may not hold)"
		}
	}
	return s
}
