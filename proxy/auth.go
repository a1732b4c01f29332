package proxy

import (
	"bytes"
	"errors"
	"time"

	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/valyala/fasthttp"
)

// authenticate finds the credential the request presents, of one of the
// kinds in kinds, and verifies it through Options.Authenticate; on failure
// it has answered (401, or 503 when the store is unreachable).
func (p *Proxy) authenticate(ctx *fasthttp.RequestCtx, t *table, rs *reqState, kinds access.Kinds) bool {
	pc, field := t.presented(&ctx.Request.Header, kinds)
	if pc.Kind == 0 {
		ctx.Response.Header.SetCanonical(hWWWAuth, t.challenge(kinds))
		p.fail(ctx, rs, 401, problems.CodeCredentialMissing, field, "")
		return false
	}
	id, err := p.o.Authenticate(pc)
	if err != nil {
		switch {
		case errors.Is(err, access.ErrStoreUnavailable):
			p.fail(ctx, rs, 503, problems.CodeStoreUnavailable, "", "")
		case errors.Is(err, access.ErrMalformed):
			ctx.Response.Header.SetCanonical(hWWWAuth, t.challenge(kinds))
			p.fail(ctx, rs, 401, problems.CodeCredentialMalformed, field, "")
		case errors.Is(err, access.ErrExpired):
			ctx.Response.Header.SetCanonical(hWWWAuth, t.challenge(kinds))
			p.fail(ctx, rs, 401, problems.CodeCredentialExpired, field, "")
		default: // ErrInvalid, ErrUnsupported and anything else
			ctx.Response.Header.SetCanonical(hWWWAuth, t.challenge(kinds))
			p.fail(ctx, rs, 401, problems.CodeCredentialInvalid, field, "")
		}
		return false
	}
	rs.id = id
	return true
}

// authorize decides whether the authenticated principal may make this
// request on this route, between authentication and admission: it has not
// expired, it acts for one tenant it may act for, its scopes cover the
// route's need for the method, and it holds the route's module. On
// failure it has answered (401 or 403).
func (p *Proxy) authorize(ctx *fasthttp.RequestCtx, rs *reqState) bool {
	id, r := &rs.id, rs.route
	if id.Expires != 0 && time.Now().UnixNano() >= id.Expires {
		p.fail(ctx, rs, 401, problems.CodeCredentialExpired, "", "")
		return false
	}
	if id.Tenant == "" || !id.MayActFor(id.Tenant) {
		p.fail(ctx, rs, 403, problems.CodeForbidden, "", "the credential does not name one tenant to act for")
		return false
	}
	if r.scoped && !id.Scopes.Covers(access.MethodScope(ctx.Request.Header.Method())) {
		p.fail(ctx, rs, 403, problems.CodeForbidden, "", "the credential's scopes do not allow this method")
		return false
	}
	if r.module != 0 && id.Modules&r.module == 0 {
		p.fail(ctx, rs, 403, problems.CodeForbidden, "", "the credential is not valid for this route's module")
		return false
	}
	return true
}

// presented returns the credential the request presents among kinds, and
// the field it came in (or, when there is none, the field a client should
// use). An API key is looked for first in the configured headers, then in
// Authorization; Basic and Bearer in Authorization. It does not allocate.
func (t *table) presented(h *fasthttp.RequestHeader, kinds access.Kinds) (access.Presented, string) {
	if kinds.Has(access.KindAPIKey) {
		for _, name := range t.apiKeyHdr {
			if v := h.PeekBytes(name); len(v) > 0 {
				return access.Presented{Kind: access.KindAPIKey, Secret: v}, b2s(name)
			}
		}
	}
	if authz := h.PeekBytes(hAuthorization); len(authz) > 0 {
		if kinds.Has(access.KindAPIKey) && t.authzSch != nil {
			if v := ParseAuthorization(authz, t.authzSch); v != nil {
				return access.Presented{Kind: access.KindAPIKey, Secret: v}, "Authorization"
			}
		}
		if kinds.Has(access.KindBearer) {
			if v := ParseAuthorization(authz, schemeBearer); v != nil {
				return access.Presented{Kind: access.KindBearer, Secret: v}, "Authorization"
			}
		}
		if kinds.Has(access.KindBasic) {
			if v := ParseAuthorization(authz, schemeBasic); v != nil {
				// The verifier decodes it (access.DecodeBasic) into
				// storage of its own.
				return access.Presented{Kind: access.KindBasic, Secret: v}, "Authorization"
			}
		}
	}
	if kinds.Has(access.KindAPIKey) && len(t.apiKeyHdr) > 0 {
		return access.Presented{}, b2s(t.apiKeyHdr[0])
	}
	return access.Presented{}, "Authorization"
}

// stripCredentials removes every credential the route's kinds read, so
// none reaches the upstream: the API key headers, and an Authorization
// field of a scheme tollgate reads (the API key scheme, Basic, Bearer);
// authz says the client sent an Authorization at all. An Authorization of
// another scheme is the backend's and is kept.
func (t *table) stripCredentials(h *fasthttp.RequestHeader, kinds access.Kinds, authz bool) {
	if kinds.Has(access.KindAPIKey) {
		for _, name := range t.apiKeyHdr {
			h.DelBytes(name)
		}
	}
	if !authz {
		return
	}
	for _, v := range h.PeekAll(HeaderAuthorization) {
		if kinds.Has(access.KindAPIKey) && t.authzSch != nil && ParseAuthorization(v, t.authzSch) != nil ||
			kinds.Has(access.KindBearer) && ParseAuthorization(v, schemeBearer) != nil ||
			kinds.Has(access.KindBasic) && ParseAuthorization(v, schemeBasic) != nil {
			h.DelBytes(hAuthorization)
			return
		}
	}
}

// HeaderAuthorization is the name PeekAll takes.
const HeaderAuthorization = "Authorization"

var (
	schemeBearer = []byte("Bearer")
	schemeBasic  = []byte("Basic")
)

// ParseAuthorization returns the credentials of an Authorization header
// value "<scheme> <credentials>" with the scheme matched case-insensitively
// (RFC 9110 §11.1), or nil.
func ParseAuthorization(v, scheme []byte) []byte {
	if len(v) <= len(scheme) || v[len(scheme)] != ' ' || !bytes.EqualFold(v[:len(scheme)], scheme) {
		return nil
	}
	v = bytes.TrimLeft(v[len(scheme)+1:], " ")
	v = bytes.TrimRight(v, " ")
	if len(v) == 0 {
		return nil
	}
	return v
}

// challenge is the WWW-Authenticate of a 401 on a route accepting kinds.
func (t *table) challenge(kinds access.Kinds) []byte {
	switch {
	case kinds.Has(access.KindAPIKey) && (t.authzSch == nil || len(t.apiKeyHdr) > 0):
		return challengeAPIKey
	case kinds.Has(access.KindAPIKey):
		return t.authzSch
	case kinds.Has(access.KindBearer):
		return challengeBearer
	case kinds.Has(access.KindBasic):
		return challengeBasic
	}
	return challengeAPIKey
}

var (
	challengeAPIKey = []byte(`ApiKey realm="tollgate"`)
	challengeBearer = []byte(`Bearer realm="tollgate"`)
	challengeBasic  = []byte(`Basic realm="tollgate", charset="UTF-8"`)
)
