package proxy

import (
	"bytes"
	"errors"
	"net/netip"
	"strconv"
	"time"

	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/valyala/fasthttp"
)

// authenticate finds the credential the request presents, of one of the
// kinds in kinds, and verifies it through Options.Authenticate; on failure
// it has answered (401; 429 when the client failed too often; 503 when
// the store is unreachable).
func (p *Proxy) authenticate(ctx *fasthttp.RequestCtx, t *table, rs *reqState, kinds access.Kinds) bool {
	pc, field := t.presented(&ctx.Request.Header, kinds)
	if pc.Kind == 0 {
		p.o.Metrics.authFailed(0, authMissing)
		ctx.Response.Header.SetCanonical(hWWWAuth, t.challenge(kinds))
		p.fail(ctx, rs, 401, problems.CodeCredentialMissing, field, "")
		return false
	}
	pc.Addr = t.clientAddr(ctx)
	id, err := p.o.Authenticate(pc)
	if err != nil {
		p.o.Metrics.authFailed(pc.Kind, reasonOf(err))
		switch {
		case errors.Is(err, access.ErrStoreUnavailable):
			p.fail(ctx, rs, 503, problems.CodeStoreUnavailable, "", "")
		case errors.Is(err, access.ErrThrottled):
			var buf [24]byte
			ctx.Response.Header.SetCanonical(hRetryAfter, strconv.AppendInt(buf[:0], max(id.RetryAfter, 1), 10))
			p.fail(ctx, rs, 429, problems.CodeTooManyFailures, field, "")
		case errors.Is(err, access.ErrMalformed):
			ctx.Response.Header.SetCanonical(hWWWAuth, t.challengeOf(pc.Kind, kinds))
			p.fail(ctx, rs, 401, problems.CodeCredentialMalformed, field, "")
		default: // ErrInvalid, ErrExpired, ErrUnsupported and anything else: one answer
			ctx.Response.Header.SetCanonical(hWWWAuth, t.challengeOf(pc.Kind, kinds))
			p.fail(ctx, rs, 401, problems.CodeCredentialInvalid, field, "")
		}
		return false
	}
	rs.id = id
	return true
}

// reasonOf is the metrics' reason for a verification error.
func reasonOf(err error) authReason {
	switch {
	case errors.Is(err, access.ErrStoreUnavailable):
		return authUnavailable
	case errors.Is(err, access.ErrThrottled):
		return authThrottled
	case errors.Is(err, access.ErrMalformed):
		return authMalformed
	}
	return authInvalid
}

// authorize decides whether the authenticated principal may make this
// request on this route, between authentication and admission: it has not
// expired, it acts for one tenant it may act for, its scopes cover what
// the method needs, and it holds the module of the route or path. On
// failure it has answered (400, 401 or 403, naming the field at fault).
func (p *Proxy) authorize(ctx *fasthttp.RequestCtx, t *table, rs *reqState) bool {
	id, r := &rs.id, rs.route
	if id.Expires != 0 && time.Now().UnixNano() >= id.Expires {
		p.o.Metrics.authFailed(id.Kind, authInvalid)
		// An expired credential answers as an unknown one.
		ctx.Response.Header.SetCanonical(hWWWAuth, t.challengeOf(id.Kind, r.auth))
		p.fail(ctx, rs, 401, problems.CodeCredentialInvalid, "", "")
		return false
	}
	if !p.selectTenant(ctx, rs, r.tenantHdr, r.tenantSeg) {
		p.o.Metrics.authFailed(id.Kind, authTenant)
		return false
	}
	method := ctx.Request.Header.Method()
	need := access.MethodScope(method)
	if r.methodScopes != nil {
		if s, ok := r.methodScopes[string(method)]; ok {
			need = s
		}
	}
	if !id.Scopes.Covers(need) {
		p.o.Metrics.authFailed(id.Kind, authScope)
		if id.Kind == access.KindBearer {
			ctx.Response.Header.SetCanonical(hWWWAuth, challengeInsufficient)
		}
		p.fail(ctx, rs, 403, problems.CodeForbidden, "scope", "the credential lacks the "+need.String()+" scope")
		return false
	}
	if id.Modules != access.AllModules {
		mod, name := r.module, r.moduleName
		if mod == 0 {
			mod, name = t.moduleOf(rs.path)
		}
		if mod == 0 || id.Modules&mod == 0 {
			p.o.Metrics.authFailed(id.Kind, authModule)
			msg := "the credential is limited to modules, and this path is in none"
			if mod != 0 {
				msg = "the credential is not valid for module " + name
			}
			if id.Kind == access.KindBearer {
				ctx.Response.Header.SetCanonical(hWWWAuth, challengeInsufficient)
			}
			p.fail(ctx, rs, 403, problems.CodeForbidden, "module", msg)
			return false
		}
	}
	return true
}

// clientAddr is the address failed authentications are counted against:
// the peer's, or, when the peer is a trusted proxy, the address it says
// it received the request from (the last of X-Forwarded-For), so that
// one client behind a load balancer cannot lock out all the others.
func (t *table) clientAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	ip := remoteAddr(ctx)
	if len(t.trusted) == 0 || !t.trustedPeer(ip) {
		return ip
	}
	var last []byte
	for _, v := range ctx.Request.Header.PeekAll(b2s(hXFF)) {
		last = v
	}
	if i := bytes.LastIndexByte(last, ','); i >= 0 {
		last = last[i+1:]
	}
	if a, err := netip.ParseAddr(b2s(bytes.TrimSpace(last))); err == nil {
		return a.Unmap()
	}
	return ip
}

// selectTenant sets the tenant the request acts for. A credential of
// several tenants must name one, in the header hdr or the path segment
// seg; one of a single tenant may, and what it names must be its tenant.
// A header named twice is refused: the backend must see the tenant that
// was authorized and no other.
func (p *Proxy) selectTenant(ctx *fasthttp.RequestCtx, rs *reqState, hdr []byte, seg int) bool {
	id := &rs.id
	var named []byte
	field := "path"
	if seg > 0 {
		named = PathSegment(rs.path, seg)
	} else {
		field = b2s(hdr)
		named = ctx.Request.Header.PeekBytes(hdr)
		if len(named) > 0 && countHeader(&ctx.Request.Header, hdr) > 1 {
			p.fail(ctx, rs, 400, problems.CodeInvalidField, field, "name the tenant once")
			return false
		}
	}
	if id.Tenants == nil {
		if id.Tenant == "" {
			p.fail(ctx, rs, 403, problems.CodeForbidden, "", "the credential does not name one tenant to act for")
			return false
		}
		if len(named) > 0 && string(named) != id.Tenant {
			p.fail(ctx, rs, 403, problems.CodeForbidden, field, "the credential may not act for this tenant")
			return false
		}
		return true
	}
	if len(named) == 0 {
		p.fail(ctx, rs, 400, problems.CodeInvalidField, field, "the credential may act for several tenants: name the one this request is for")
		return false
	}
	for _, t := range id.Tenants {
		if t == string(named) {
			id.Tenant = t
			return true
		}
	}
	p.fail(ctx, rs, 403, problems.CodeForbidden, field, "the credential may not act for this tenant")
	return false
}

// PathSegment returns the n-th segment of path (1 is the first), or nil.
// "/api/acme/invoices" has segments api, acme and invoices.
func PathSegment(path []byte, n int) []byte {
	for len(path) > 0 && path[0] == '/' {
		path = path[1:]
		end := bytes.IndexByte(path, '/')
		if end < 0 {
			end = len(path)
		}
		if n--; n == 0 {
			if end == 0 {
				return nil
			}
			return path[:end]
		}
		path = path[end:]
	}
	return nil
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

// challengeOf is the WWW-Authenticate of a 401 for a presented credential
// of kind that was refused: a bearer token gets RFC 6750's invalid_token.
func (t *table) challengeOf(kind access.Kind, kinds access.Kinds) []byte {
	if kind == access.KindBearer {
		return challengeInvalidToken
	}
	return t.challenge(kinds)
}

var (
	challengeInvalidToken = []byte(`Bearer realm="tollgate", error="invalid_token"`)
	challengeInsufficient = []byte(`Bearer realm="tollgate", error="insufficient_scope"`)
	challengeAPIKey       = []byte(`ApiKey realm="tollgate"`)
	challengeBearer       = []byte(`Bearer realm="tollgate"`)
	challengeBasic        = []byte(`Basic realm="tollgate", charset="UTF-8"`)
)
