// Package proxy owns the fasthttp server and the request pipeline: route
// match, credential extraction, verification and admission through hooks
// the composition root provides, forwarding with the hop-by-hop rules of
// net/http/httputil, limit and identity headers, and rendering every error
// in the problems shape.
package proxy

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/normalize"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/proxy/wire"
	"github.com/valyala/bytebufferpool"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// SelfServiceKind names a self-service path.
type SelfServiceKind uint8

// Self-service paths (self_service.usage, self_service.limit_requests).
const (
	SelfUsage SelfServiceKind = 1 + iota
	SelfLimitRequests
	// SelfTenants lists the tenants the credential may act for.
	SelfTenants
	// SelfOAuthTenants lists them for a bearer token, in the admin
	// API's list shape (oauth.tenants_path).
	SelfOAuthTenants
)

// OAuthEndpoint names an endpoint of the OAuth2 server on the proxy
// listener.
type OAuthEndpoint uint8

// OAuth2 endpoints (oauth.token_path, oauth.revoke_path).
const (
	OAuthToken OAuthEndpoint = 1 + iota
	OAuthRevoke
)

// OAuthRequest is a request to an OAuth2 endpoint as the proxy read it:
// its slices are valid until the hook returns.
type OAuthRequest struct {
	Endpoint      OAuthEndpoint
	Method        string
	ContentType   []byte
	Query, Body   []byte
	Authorization []byte // the Authorization header
	APIKey        []byte // the header oauth.api_key_header names
	Addr          netip.Addr
	// Several says a parameter header the server reads (Authorization,
	// the API key header) came more than once.
	Several bool
}

// OAuthAnswer is the OAuth2 server's answer: a JSON body, and when set a
// WWW-Authenticate challenge and a Retry-After.
type OAuthAnswer struct {
	Status     int
	Body       []byte
	Challenge  string
	RetryAfter int64
}

// Options configure a Proxy. The hooks take and return the types of
// package access, shared with authn and the limiter: the proxy converts
// nothing.
type Options struct {
	// Authenticate verifies a presented credential of any kind and returns
	// who it is, or an access error (ErrMalformed, ErrInvalid, ErrExpired,
	// ErrUnsupported, ErrStoreUnavailable). Required.
	Authenticate func(c access.Presented) (access.Principal, error)
	// Admit applies the limits of p's tenant to a request costing cost
	// quota units, in the route's mode (ModePlan: the plan's). Required.
	Admit func(p access.Principal, cost int64, mode access.Mode) access.Decision
	// Release ends a request whose Decision had Acquired set. Required
	// when Admit sets it.
	Release func(p access.Principal)
	// Refund gives back the quota of an admitted request that failed
	// through the client's fault before the upstream received it whole (a
	// malformed or cut-off body), or whose answer is in the refund_on of
	// its route or plan. If nil, such requests still count.
	Refund func(p access.Principal, cost int64, d access.Decision)
	// SelfService answers the self-service paths for an authenticated
	// credential: the answer's status and JSON body, or an error (a
	// *problems.Error is shown as it is). If nil, the paths are not
	// served.
	SelfService func(kind SelfServiceKind, p access.Principal, method string, query, body []byte) (int, []byte, error)
	// OAuth answers the token and revocation endpoints. If nil, they are
	// not served.
	OAuth func(r OAuthRequest) OAuthAnswer
	// Log is the component logger. Default: no logging.
	Log *zap.Logger
	// Access receives one line per request when set.
	Access *AccessLog
	// Metrics, when set, counts requests.
	Metrics *Metrics
	// Dial, when set, opens upstream connections instead of TCP (tests
	// and benchmarks use in-memory listeners).
	Dial func(addr string) (net.Conn, error)
}

// Proxy is the request pipeline.
type Proxy struct {
	o   Options
	tab atomic.Pointer[table]
	log *zap.Logger
}

// New compiles c into a proxy.
func New(c *config.Config, o Options) (*Proxy, error) {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	p := &Proxy{o: o, log: o.Log}
	t, err := compile(c, nil, o.Dial)
	if err != nil {
		return nil, err
	}
	o.Metrics.bind(t)
	p.tab.Store(t)
	return p, nil
}

// Update swaps in a new configuration. Requests in flight finish with the
// old one; upstream pools that did not change are kept.
func (p *Proxy) Update(c *config.Config) error {
	old := p.tab.Load()
	t, err := compile(c, old, p.o.Dial)
	if err != nil {
		return err
	}
	p.o.Metrics.bind(t)
	p.tab.Store(t)
	old.closeUnused(t, time.Minute)
	return nil
}

// Server returns the fasthttp server for the proxy listener.
func (p *Proxy) Server(c *config.Config) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                       p.Handler,
		ErrorHandler:                  p.errorHandler,
		ExpectHandler:                 p.expect,
		Name:                          "tollgate",
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		NoDefaultDate:                 false,
		ReadTimeout:                   c.Server.ReadTimeout.D(),
		WriteTimeout:                  c.Server.WriteTimeout.D(),
		IdleTimeout:                   c.Server.IdleTimeout.D(),
		MaxRequestBodySize:            int(c.Server.MaxRequestBody),
		ReadBufferSize:                int(c.Server.MaxHeaderBytes),
		Concurrency:                   c.Server.Concurrency,
		StreamRequestBody:             true,
		DisablePreParseMultipartForm:  true,
		CloseOnShutdown:               true,
		ReduceMemoryUsage:             false,
		DisableHeaderNamesNormalizing: false,
		Logger:                        zapPrintf{p.log},
	}
}

type zapPrintf struct{ l *zap.Logger }

func (z zapPrintf) Printf(format string, args ...any) { z.l.Sugar().Debugf(format, args...) }

// errorHandler answers the errors fasthttp raises while reading a request.
func (p *Proxy) errorHandler(ctx *fasthttp.RequestCtx, err error) {
	var rs reqState
	rs.start = time.Now()
	rs.unparsed = true
	t := p.tab.Load()
	p.requestID(ctx, t, &rs)
	wire.LingerOnClose(ctx.Conn())
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.As(err, &small):
		p.fail(ctx, &rs, 431, problems.CodeHeadersTooLarge, "", "")
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		p.fail(ctx, &rs, 413, problems.CodeBodyTooLarge, "", "")
	case errors.As(err, &ne) && ne.Timeout():
		p.fail(ctx, &rs, 408, problems.CodeRequestTimeout, "", "")
	case wire.BareLineFeeds(ctx.Conn()):
		p.fail(ctx, &rs, 400, problems.CodeInvalidFraming, "", "the request head must end lines with CRLF, not a bare LF")
	default:
		p.fail(ctx, &rs, 400, problems.CodeBadRequest, "", "")
	}
	ctx.SetConnectionClose()
	p.finish(ctx, t, &rs)
}

// Well-known header names, as bytes so the hot path does not convert.
var (
	hConnection      = []byte("Connection")
	hProxyConnection = []byte("Proxy-Connection")
	hKeepAlive       = []byte("Keep-Alive")
	hProxyAuthn      = []byte("Proxy-Authenticate")
	hProxyAuthz      = []byte("Proxy-Authorization")
	hTE              = []byte("Te")
	hTrailer         = []byte("Trailer")
	hUpgrade         = []byte("Upgrade")
	hAuthorization   = []byte("Authorization")
	hForwarded       = []byte("Forwarded")
	hXFF             = []byte("X-Forwarded-For")
	hXFProto         = []byte("X-Forwarded-Proto")
	hXFHost          = []byte("X-Forwarded-Host")
	hExpect          = []byte("Expect")
	hAccept          = []byte("Accept")
	hRetryAfter      = []byte("Retry-After")
	hWWWAuth         = []byte("WWW-Authenticate")
	hXRLLimit        = []byte("X-RateLimit-Limit")
	hXRLRemaining    = []byte("X-RateLimit-Remaining")
	hXRLReset        = []byte("X-RateLimit-Reset")
	hXRLOverage      = []byte("X-RateLimit-Overage")
	hShadow          = []byte("Tollgate-Shadow")
	hRLPolicy        = []byte("RateLimit-Policy")
	hRL              = []byte("RateLimit")
	vHTTP            = []byte("http")
	vHTTPS           = []byte("https")
	vTrailers        = []byte("trailers")
)

// hopHeaders are removed from requests and responses before forwarding:
// RFC 9110 §7.6.1, as net/http/httputil's hopHeaders. Transfer-Encoding
// and Content-Length are framing that fasthttp rewrites itself.
var hopHeaders = [][]byte{hConnection, hProxyConnection, hKeepAlive, hProxyAuthn, hProxyAuthz, hTE, hTrailer, hUpgrade}

// reqState is the per-request data the handler keeps on its stack.
type reqState struct {
	start  time.Time
	route  *route
	id     access.Principal
	dec    access.Decision
	hasDec bool
	reqID  [64]byte
	reqIDn int
	code   problems.Code

	// The canonical request (canonicalize): host and path are what the
	// route was matched on and what the upstream receives.
	host, path []byte
	hasBody    bool
	upgradeN   int // the Upgrade header's value is upgradeBuf[:upgradeN]
	upgradeBuf [64]byte
	pathN      int // after rewritePath, the client's path is pathBuf[:pathN]
	pathBuf    [512]byte
	owned      owned       // the owned headers the client sent (checkHead)
	unparsed   bool        // fasthttp could not parse the request
	endpoint   uint8       // endpointSelf or endpointOAuth: answered by tollgate itself
	incomplete bool        // the answer's streamed body was not sent whole
	refunded   bool        // the request's quota was given back
	body       *clientBody // the streamed request body, when forwarded as a stream
}

// Handler serves one proxied request.
func (p *Proxy) Handler(ctx *fasthttp.RequestCtx) {
	var rs reqState
	rs.start = time.Now()
	t := p.tab.Load()
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic serving request", zap.Any("panic", r), zap.String("request_id", string(rs.reqID[:rs.reqIDn])), zap.Stack("stack"))
			p.fail(ctx, &rs, 500, problems.CodeInternal, "", "")
		}
		p.finish(ctx, t, &rs)
	}()
	if !p.head(ctx, t, &rs, false) {
		return
	}
	if rs.route == nil { // self-service, answered
		return
	}
	// Bodies up to bufferedBody are read whole before anything is counted
	// or sent: a malformed or cut-off one is the client's error (400 or
	// 408) and costs neither quota nor an upstream connection.
	if rs.hasBody && !p.bufferBody(ctx, &rs) {
		return
	}
	if rs.route.auth != 0 {
		rs.dec = p.o.Admit(rs.id, rs.route.cost, rs.route.mode)
		rs.hasDec = true
		p.o.Metrics.decided(&rs.dec)
		if !rs.dec.Allowed {
			var buf [24]byte
			switch {
			case errors.Is(rs.dec.Err, access.ErrUnknownTenant):
				rs.hasDec = false
				p.fail(ctx, &rs, 403, problems.CodeForbidden, "", "the credential's tenant does not exist")
			case errors.Is(rs.dec.Err, access.ErrLedgerUnavailable):
				p.fail(ctx, &rs, 503, problems.CodeStoreUnavailable, "", "the quota ledger is unavailable")
			case rs.dec.Reason == access.ReasonRate:
				ctx.Response.Header.SetCanonical(hRetryAfter, strconv.AppendInt(buf[:0], max(rs.dec.Rate.RetryAfter, 1), 10))
				p.fail(ctx, &rs, 429, problems.CodeRateLimited, "", "")
			case rs.dec.Reason == access.ReasonConcurrency:
				ctx.Response.Header.SetCanonical(hRetryAfter, strconv.AppendInt(buf[:0], 1, 10))
				p.fail(ctx, &rs, 429, problems.CodeConcurrencyLimited, "", "")
			default:
				ctx.Response.Header.SetCanonical(hRetryAfter, strconv.AppendInt(buf[:0], max(rs.dec.Reset, 1), 10))
				p.fail(ctx, &rs, 429, problems.CodeQuotaExceeded, "", "")
			}
			return
		}
	}
	if rs.upgradeN > 0 {
		p.upgrade(ctx, t, &rs)
		return
	}
	p.forward(ctx, t, &rs)
	if rs.hasDec && !rs.refunded {
		set := rs.dec.RefundOn
		if rs.route.refunds != nil {
			set = rs.route.refunds
		}
		if set.Has(ctx.Response.StatusCode(), failureOf(rs.code)) {
			p.refund(&rs)
		}
	}
}

// failureOf is the upstream failure a problem code names, if any.
func failureOf(c problems.Code) access.Failure {
	switch c {
	case problems.CodeUpstreamUnreachable:
		return access.FailureUnreachable
	case problems.CodeUpstreamTimeout:
		return access.FailureTimeout
	}
	return access.FailureNone
}

// head does what the request head alone decides, before a body is read
// or anything is counted: the canonical request, self-service, the route,
// the body limit, upgrades and authentication. It returns false when it
// has answered; rs.route is nil when a self-service path answered.
func (p *Proxy) head(ctx *fasthttp.RequestCtx, t *table, rs *reqState, expecting bool) bool {
	p.requestID(ctx, t, rs)
	if !p.canonicalize(ctx, t, rs, expecting) {
		return false
	}
	if p.o.SelfService != nil {
		var kind SelfServiceKind
		if len(t.selfUsage) > 0 && bytes.Equal(rs.path, t.selfUsage) {
			kind = SelfUsage
		} else if len(t.selfReqs) > 0 && bytes.Equal(rs.path, t.selfReqs) {
			kind = SelfLimitRequests
		} else if len(t.selfTens) > 0 && bytes.Equal(rs.path, t.selfTens) {
			kind = SelfTenants
		} else if len(t.oauthTenants) > 0 && bytes.Equal(rs.path, t.oauthTenants) {
			kind = SelfOAuthTenants
		}
		if kind != 0 {
			rs.endpoint = endpointSelf
			if !expecting {
				p.selfService(ctx, t, rs, kind)
			}
			return true
		}
	}
	if p.o.OAuth != nil {
		var ep OAuthEndpoint
		if len(t.oauthToken) > 0 && bytes.Equal(rs.path, t.oauthToken) {
			ep = OAuthToken
		} else if len(t.oauthRevoke) > 0 && bytes.Equal(rs.path, t.oauthRevoke) {
			ep = OAuthRevoke
		}
		if ep != 0 {
			rs.endpoint = endpointOAuth
			if !expecting {
				p.oauth(ctx, t, rs, ep)
			}
			return true
		}
	}
	rs.route = t.match(rs.host, rs.path)
	if rs.route == nil {
		p.fail(ctx, rs, 404, problems.CodeRouteNotFound, "", "")
		return false
	}
	// With a streamed body fasthttp pre-reads only a little and leaves
	// the size limit to us. The unread body makes the connection unusable.
	if cl := ctx.Request.Header.ContentLength(); cl > rs.route.maxBody {
		ctx.SetConnectionClose()
		p.fail(ctx, rs, 413, problems.CodeBodyTooLarge, "", "")
		return false
	}
	if rs.upgradeN > 0 && !rs.route.upgrade {
		p.fail(ctx, rs, 501, problems.CodeUpgradeRefused, "Upgrade", "")
		return false
	}
	if rs.route.requireTLS && !secure(ctx, t) {
		p.fail(ctx, rs, 403, problems.CodeTLSRequired, "", "")
		return false
	}
	if rs.route.auth != 0 && (!p.authenticate(ctx, t, rs, rs.route.auth) || !p.authorize(ctx, t, rs)) {
		return false
	}
	return true
}

// expect decides a request with "Expect: 100-continue" before its body is
// asked for: whatever the head alone refuses (a bad head, no route, a body
// over the limit, no valid credential) is answered at once, without
// "100 Continue" and without reading the body; otherwise the body is
// asked for and Handler serves the request as usual.
func (p *Proxy) expect(ctx *fasthttp.RequestCtx) int {
	var rs reqState
	rs.start = time.Now()
	t := p.tab.Load()
	if p.head(ctx, t, &rs, true) {
		return fasthttp.StatusContinue
	}
	// The client may already be sending its body: fasthttp closes the
	// connection after this answer, and the close lingers.
	wire.LingerOnClose(ctx.Conn())
	status := ctx.Response.StatusCode()
	p.finish(ctx, t, &rs)
	return status
}

// selfService serves a tenant's own usage and limit requests. It needs
// the tenant's credential and does not count against the quota.
func (p *Proxy) selfService(ctx *fasthttp.RequestCtx, t *table, rs *reqState, kind SelfServiceKind) {
	if t.selfTLS && !secure(ctx, t) && ParseAuthorization(ctx.Request.Header.PeekBytes(hAuthorization), schemeBasic) != nil {
		p.fail(ctx, rs, 403, problems.CodeTLSRequired, "", "")
		return
	}
	if !p.authenticate(ctx, t, rs, t.selfAuth) {
		return
	}
	// Usage and limit requests are a tenant's: a credential of several
	// names one as on a route (the X-Tenant header).
	if kind != SelfTenants && kind != SelfOAuthTenants && !p.selectTenant(ctx, rs, tenantHeader, 0) {
		return
	}
	var body []byte
	if ctx.IsPost() {
		var ok bool
		if body, ok = p.smallBody(ctx, rs); !ok {
			return
		}
	}
	status, out, err := p.o.SelfService(kind, rs.id, string(ctx.Method()), ctx.URI().QueryString(), body)
	if err != nil {
		pe := problems.From(err)
		if pe.Status >= 500 {
			p.log.Error("self-service failed", zap.Uint8("kind", uint8(kind)), zap.String("request_id", string(rs.reqID[:rs.reqIDn])), zap.Error(err))
		}
		p.render(ctx, rs, pe.Status, pe.Problems)
		return
	}
	ctx.Response.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(ctJSON)
	ctx.Response.SetBodyRaw(out)
}

// maxSmallBody bounds the bodies tollgate reads for itself (self-service
// and OAuth2 forms).
const maxSmallBody = 64 << 10

// smallBody reads a body tollgate answers itself, of at most
// maxSmallBody bytes; on failure it has answered (400, or 413).
func (p *Proxy) smallBody(ctx *fasthttp.RequestCtx, rs *reqState) ([]byte, bool) {
	var body []byte
	if s := ctx.RequestBodyStream(); s != nil {
		// Body would read a stream whole, however long: read it here,
		// bounded.
		b, err := io.ReadAll(io.LimitReader(s, maxSmallBody+1))
		if err != nil {
			p.fail(ctx, rs, 400, problems.CodeBadRequest, "body", "")
			return nil, false
		}
		body = b
	} else {
		body = ctx.Request.Body()
	}
	if len(body) > maxSmallBody {
		ctx.SetConnectionClose()
		p.fail(ctx, rs, 413, problems.CodeBodyTooLarge, "", "")
		return nil, false
	}
	return body, true
}

// oauth serves an OAuth2 endpoint through Options.OAuth. Its requests
// are small forms: the body is read whole, up to 64 KiB.
func (p *Proxy) oauth(ctx *fasthttp.RequestCtx, t *table, rs *reqState, ep OAuthEndpoint) {
	body, ok := p.smallBody(ctx, rs)
	if !ok {
		return
	}
	h := &ctx.Request.Header
	r := OAuthRequest{
		Endpoint: ep, Method: string(h.Method()), ContentType: h.ContentType(), Query: ctx.URI().QueryString(), Body: body,
		Authorization: h.PeekBytes(hAuthorization), APIKey: h.PeekBytes(t.oauthKeyHdr), Addr: t.clientAddr(ctx),
		Several: countHeader(h, hAuthorization) > 1 || countHeader(h, t.oauthKeyHdr) > 1,
	}
	a := p.o.OAuth(r)
	p.o.Metrics.oauthFailed(len(r.APIKey) > 0, &a)
	if a.Challenge != "" {
		ctx.Response.Header.SetCanonical(hWWWAuth, []byte(a.Challenge))
	}
	if a.RetryAfter > 0 {
		var buf [24]byte
		ctx.Response.Header.SetCanonical(hRetryAfter, strconv.AppendInt(buf[:0], a.RetryAfter, 10))
	}
	if a.Status == 405 {
		ctx.Response.Header.Set("Allow", "POST") // RFC 9110 §15.5.6
	}
	// RFC 6749 §5.1: token answers must not be cached.
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.Response.Header.Set("Pragma", "no-cache")
	ctx.Response.SetStatusCode(a.Status)
	if a.Body != nil {
		ctx.Response.Header.SetContentTypeBytes(ctJSON)
		ctx.Response.SetBodyRaw(a.Body)
	}
}

// requestID keeps a client's X-Request-Id when it sent exactly one valid
// copy, or makes one. prepare sets it on the forwarded request, after the
// client's copies (and any Connection header naming it) are gone.
func (p *Proxy) requestID(ctx *fasthttp.RequestCtx, t *table, rs *reqState) {
	if rs.reqIDn > 0 {
		return
	}
	if v := ctx.Request.Header.PeekBytes(t.hReqID); validRequestID(v) && countHeader(&ctx.Request.Header, t.hReqID) == 1 {
		rs.reqIDn = copy(rs.reqID[:], v)
		return
	}
	const hexdigits = "0123456789abcdef"
	a, b := rand.Uint64(), rand.Uint64()
	for i := 0; i < 16; i++ {
		rs.reqID[i] = hexdigits[(a>>(60-4*i))&0xf]
		rs.reqID[16+i] = hexdigits[(b>>(60-4*i))&0xf]
	}
	rs.reqIDn = 32
}

// countHeader counts the copies of the header named name (canonical case).
func countHeader(h *fasthttp.RequestHeader, name []byte) int {
	n := 0
	for k := range h.All() {
		if bytes.EqualFold(k, name) {
			n++
		}
	}
	return n
}

func validRequestID(v []byte) bool {
	if len(v) == 0 || len(v) > 64 {
		return false
	}
	for _, c := range v {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// forward sends the request upstream and leaves its response in ctx.
func (p *Proxy) forward(ctx *fasthttp.RequestCtx, t *table, rs *reqState) {
	req := &ctx.Request
	up := rs.route.upstream
	p.prepare(ctx, t, rs)
	var err error
	var sent time.Time
	if up.latency != nil {
		sent = time.Now()
	}
	if up.pipe != nil && !rs.hasBody {
		if req.IsBodyStream() {
			// An empty stream ("Content-Length: 0"): a pipelined
			// request carries no body at all.
			req.SetBody(nil)
		}
		err = up.pipe.Do(req, &ctx.Response)
	} else {
		// The scheme must be the upstream's: fasthttp parses a request
		// that came over TLS as https (one in clear as http), and a
		// HostClient refuses any other (ErrHostClientRedirectToDifferentScheme).
		if up.https {
			req.URI().SetSchemeBytes(vHTTPS)
		} else {
			req.URI().SetSchemeBytes(vHTTP)
		}
		err = up.client.Do(req, &ctx.Response)
	}
	if up.latency != nil {
		up.latency.Observe(time.Since(sent).Seconds())
	}
	if err != nil {
		p.upstreamFailed(ctx, rs, err)
		return
	}
	removeHopHeaders(&ctx.Response.Header)
	if ctx.Response.StatusCode() >= 400 && rs.route.normalize {
		p.normalize(ctx, rs)
	}
}

// upstreamFailed answers a failed upstream exchange. A failure of the
// client's streamed body is the client's: 413, 408 or 400, refunded.
func (p *Proxy) upstreamFailed(ctx *fasthttp.RequestCtx, rs *reqState, err error) {
	ctx.Response.Reset()
	var ne net.Error
	if b := rs.body; b != nil && (b.over || b.err != nil) {
		ctx.SetConnectionClose()
		wire.LingerOnClose(ctx.Conn())
		p.refund(rs)
		switch {
		case b.over:
			p.fail(ctx, rs, 413, problems.CodeBodyTooLarge, "", "")
		case errors.As(b.err, &ne) && ne.Timeout():
			p.fail(ctx, rs, 408, problems.CodeRequestTimeout, "body", "the request body was not received in time")
		default:
			p.fail(ctx, rs, 400, problems.CodeInvalidFraming, "body", "the request body is malformed or was cut off")
		}
		return
	}
	switch {
	case errors.Is(err, fasthttp.ErrTimeout) || errors.As(err, &ne) && ne.Timeout():
		p.fail(ctx, rs, 504, problems.CodeUpstreamTimeout, "", "")
	case errors.Is(err, wire.ErrPipelineFull):
		p.fail(ctx, rs, 503, problems.CodeUpstreamError, "", "too many requests are queued for the upstream")
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		p.fail(ctx, rs, 502, problems.CodeUpstreamError, "", "the upstream's answer is larger than a pipelined upstream allows (pipeline.max_body)")
	default:
		if ce := p.log.Check(zap.DebugLevel, "upstream failed"); ce != nil {
			ce.Write(zap.String("upstream", rs.route.upstream.name), zap.String("request_id", string(rs.reqID[:rs.reqIDn])), zap.Error(err))
		}
		p.fail(ctx, rs, 502, problems.CodeUpstreamUnreachable, "", "")
	}
}

// prepare applies the forwarding rules to the canonical request: the
// request id, identity headers, no credentials, X-Forwarded-*, the
// upstream's path. Every copy of a header tollgate owns is removed before
// its own value is set.
func (p *Proxy) prepare(ctx *fasthttp.RequestCtx, t *table, rs *reqState) {
	req := &ctx.Request
	up := rs.route.upstream
	if rs.owned&ownReqID != 0 {
		req.Header.DelBytes(t.hReqID)
	}
	req.Header.SetCanonical(t.hReqID, rs.reqID[:rs.reqIDn])
	// Identity headers are ours alone: drop whatever the client sent, then
	// set the verified values. Credentials are not forwarded.
	if rs.owned&ownTenant != 0 {
		req.Header.DelBytes(t.hTenant)
	}
	if rs.owned&ownCred != 0 {
		req.Header.DelBytes(t.hCred)
	}
	if rs.owned&ownAuth != 0 {
		req.Header.DelBytes(t.hAuth)
	}
	if rs.owned&ownUser != 0 {
		req.Header.DelBytes(t.hUser)
		req.Header.DelBytes(t.hUserType)
	}
	if rs.owned&ownScopes != 0 {
		req.Header.DelBytes(t.hScopes)
	}
	if rs.route.auth != 0 {
		t.stripCredentials(&req.Header, rs.route.auth, rs.owned&ownAuthorization != 0)
		req.Header.SetCanonical(t.hTenant, s2b(rs.id.Tenant))
		req.Header.SetCanonical(t.hCred, s2b(rs.id.Credential))
		req.Header.SetCanonical(t.hAuth, s2b(rs.id.Kind.String()))
		req.Header.SetCanonical(t.hScopes, s2b(rs.id.Scopes.String()))
		if rs.id.Subject != "" {
			req.Header.SetCanonical(t.hUser, s2b(rs.id.Subject))
		}
		if rs.id.SubjectType != "" {
			req.Header.SetCanonical(t.hUserType, s2b(rs.id.SubjectType))
		}
	}
	p.setForwarded(ctx, t, rs.owned&ownForwarded != 0)
	// We answered any Expect: 100-continue ourselves (fasthttp does, as it
	// reads the body); the upstream gets the body without waiting.
	if rs.owned&ownExpect != 0 {
		req.Header.DelBytes(hExpect)
	}
	if rs.route.stripPrefix || len(up.path) > 0 {
		rewritePath(req, rs)
	}
}

// bufferedBody is the largest request body read whole before the request
// is counted and forwarded; larger ones are streamed.
const bufferedBody = 64 << 10

// bufferBody reads a request body of up to bufferedBody bytes whole, so
// that a malformed, cut-off or slow body is answered (400, 408, 413)
// before the request is counted or an upstream connection is used, and
// sent upstream with a Content-Length. A larger body is left to stream,
// wrapped in a clientBody. It returns false when it has answered.
func (p *Proxy) bufferBody(ctx *fasthttp.RequestCtx, rs *reqState) bool {
	req := &ctx.Request
	s := req.BodyStream()
	if s == nil {
		// Read already (fasthttp had it whole); trailers, if any, go.
		dropTrailers(&req.Header)
		return true
	}
	limit := rs.route.maxBody
	cl := req.Header.ContentLength()
	if cl > bufferedBody {
		rs.body = &clientBody{r: s, h: &req.Header, left: int64(limit)}
		req.SetBodyStream(rs.body, cl)
		return true
	}
	bb := bodyPool.Get()
	defer bodyPool.Put(bb)
	want := min(limit, bufferedBody) + 1
	if cap(bb.B) < want {
		bb.B = make([]byte, 0, bufferedBody+1)
	}
	var err error
	for len(bb.B) < want && err == nil {
		var n int
		n, err = s.Read(bb.B[len(bb.B):want])
		bb.B = bb.B[:len(bb.B)+n]
	}
	switch {
	case err == io.EOF || err == nil && len(bb.B) < want:
	case err == nil && len(bb.B) > limit:
		ctx.SetConnectionClose()
		wire.LingerOnClose(ctx.Conn())
		p.fail(ctx, rs, 413, problems.CodeBodyTooLarge, "", "")
		return false
	case err == nil:
		// A chunked body larger than bufferedBody: stream the rest after
		// what was read.
		rs.body = &clientBody{r: io.MultiReader(bytes.NewReader(append([]byte(nil), bb.B...)), s), h: &req.Header, left: int64(limit)}
		req.SetBodyStream(rs.body, -1)
		return true
	default:
		ctx.SetConnectionClose()
		wire.LingerOnClose(ctx.Conn())
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			p.fail(ctx, rs, 408, problems.CodeRequestTimeout, "body", "the request body was not received in time")
		} else {
			p.fail(ctx, rs, 400, problems.CodeInvalidFraming, "body", "the request body is malformed or was cut off")
		}
		return false
	}
	dropTrailers(&req.Header)
	req.SetBody(bb.B)
	return true
}

var bodyPool bytebufferpool.Pool

// dropTrailers removes the fields a client sent in a chunked body's
// trailer section: tollgate does not vet them, so it does not forward
// them (RFC 9112 §7.1.2 lets a recipient discard them). A field of the
// same name in the header section goes with them.
func dropTrailers(h *fasthttp.RequestHeader) {
	keys := h.PeekTrailerKeys()
	if len(keys) == 0 {
		return
	}
	// Every value of every trailer name goes first (DelBytes copies the
	// name it is given and leaves the set of names alone); forgetting the
	// names then moves nothing into the head, where fasthttp would put
	// the values of any name still there.
	for _, k := range keys {
		h.DelBytes(k)
	}
	h.DelBytes(hTrailer)
}

// clientBody is a streamed request body: it fails once the body exceeds
// the route's limit, so a chunked upload cannot bypass max_request_body,
// remembers a failure of the client's side (malformed chunks, a cut-off or
// slow body) so it is answered as the client's error, and drops the
// client's trailers at the end.
type clientBody struct {
	r    io.Reader
	h    *fasthttp.RequestHeader
	left int64
	over bool
	err  error
}

var errBodyTooLarge = errors.New("proxy: request body too large")

func (l *clientBody) Read(b []byte) (int, error) {
	if l.left < 0 {
		l.over = true
		return 0, errBodyTooLarge
	}
	n, err := l.r.Read(b)
	l.left -= int64(n)
	if l.left < 0 {
		l.over = true
		return 0, errBodyTooLarge
	}
	switch {
	case err == io.EOF:
		dropTrailers(l.h)
	case err != nil:
		l.err = err
	}
	return n, err
}

// refund gives back the quota of an admitted request, once: one that
// failed through the client's fault, or whose answer is in refund_on.
func (p *Proxy) refund(rs *reqState) {
	if rs.hasDec && rs.dec.Allowed && !rs.dec.Uncounted && !rs.dec.Unlimited && !rs.refunded && p.o.Refund != nil {
		p.o.Refund(rs.id, rs.route.cost, rs.dec)
		rs.refunded = true
		// This answer's limit headers already show the refund.
		d := &rs.dec
		if d.Overage > 0 {
			d.Overage = max(d.Overage-rs.route.cost, 0)
		} else {
			d.Remaining = min(d.Remaining+rs.route.cost, d.Limit)
		}
	}
}

// removeHopHeaders deletes hop-by-hop headers and the headers the
// Connection header names (RFC 9110 §7.6.1), as httputil's
// removeHopByHopHeaders does. A "Te: trailers" request header is kept, as
// httputil keeps it, so gRPC-style backends still see it. Most messages
// carry none of these: one pass over the names finds out, so the deletes
// (each a scan of its own) are skipped then.
func removeHopHeaders(h hopHeader) {
	switch h := h.(type) {
	case *fasthttp.RequestHeader:
		if !hasHopRequest(h) {
			return
		}
	case *fasthttp.ResponseHeader:
		if !hasHopResponse(h) {
			return
		}
	}
	removeHops(h)
}

// removeHops is removeHopHeaders without its first look, for a request
// whose raw head showed a hop-by-hop header (checkHead).
func removeHops(h hopHeader) {
	// Every Connection line, at any length, as httputil does. The values
	// stay valid while headers are only deleted.
	for _, c := range h.PeekAll(HeaderConnection) {
		for len(c) > 0 {
			var f []byte
			f, c = nextToken(c)
			if len(f) > 0 && !isPlainConnection(f) {
				h.DelBytes(f)
			}
		}
	}
	te := bytes.EqualFold(bytes.TrimSpace(h.PeekBytes(hTE)), vTrailers)
	for _, name := range hopHeaders {
		h.DelBytes(name)
	}
	if te {
		h.SetCanonical(hTE, vTrailers)
	}
}

// HeaderConnection is the name PeekAll takes.
const HeaderConnection = "Connection"

type hopHeader interface {
	PeekAll(string) [][]byte
	PeekBytes([]byte) []byte
	DelBytes([]byte)
	SetCanonical([]byte, []byte)
}

// hasHopRequest and hasHopResponse are one function per concrete type: a
// range over an interface's iterator allocates its closure.
func hasHopRequest(h *fasthttp.RequestHeader) bool {
	for k := range h.All() {
		if isHopHeader(k) {
			return true
		}
	}
	return false
}

func hasHopResponse(h *fasthttp.ResponseHeader) bool {
	for k := range h.All() {
		if isHopHeader(k) {
			return true
		}
	}
	return false
}

func isHopHeader(k []byte) bool {
	for _, name := range hopHeaders {
		if len(k) == len(name) && bytes.EqualFold(k, name) {
			return true
		}
	}
	return false
}

func isPlainConnection(v []byte) bool {
	return bytes.EqualFold(v, []byte("keep-alive")) || bytes.EqualFold(v, []byte("close"))
}

// setForwarded sets X-Forwarded-For, -Proto and -Host from the socket and
// the canonical host. A client's own values are kept and extended only when
// the peer is a trusted proxy (every X-Forwarded-For copy, joined, and a
// single -Proto or -Host); otherwise they, and Forwarded, are replaced.
func (p *Proxy) setForwarded(ctx *fasthttp.RequestCtx, t *table, sent bool) {
	h := &ctx.Request.Header
	var ipbuf [64]byte
	ip := remoteAddr(ctx)
	ipb := ip.AppendTo(ipbuf[:0])
	if !t.trustedPeer(ip) {
		if sent {
			h.DelBytes(hForwarded)
			h.DelBytes(hXFF)
			h.DelBytes(hXFProto)
			h.DelBytes(hXFHost)
		}
		h.SetCanonical(hXFF, ipb)
		h.SetCanonical(hXFProto, scheme(ctx))
		h.SetCanonical(hXFHost, h.Host())
		return
	}
	var buf [512]byte
	b := buf[:0]
	for _, v := range h.PeekAll(b2s(hXFF)) {
		b = append(append(b, v...), ", "...)
	}
	b = append(b, ipb...)
	h.DelBytes(hXFF)
	h.SetCanonical(hXFF, b)
	if countHeader(h, hXFProto) != 1 {
		h.DelBytes(hXFProto)
		h.SetCanonical(hXFProto, scheme(ctx))
	}
	if countHeader(h, hXFHost) != 1 {
		h.DelBytes(hXFHost)
		h.SetCanonical(hXFHost, h.Host())
	}
}

var tenantHeader = []byte(defaultTenantHeader)

// secure reports whether the request came over TLS: to this listener, or
// to a trusted proxy in front of it that says so in X-Forwarded-Proto.
func secure(ctx *fasthttp.RequestCtx, t *table) bool {
	if ctx.IsTLS() {
		return true
	}
	return len(t.trusted) > 0 && t.trustedPeer(remoteAddr(ctx)) &&
		string(ctx.Request.Header.PeekBytes(hXFProto)) == "https" && countHeader(&ctx.Request.Header, hXFProto) == 1
}

// trustedPeer reports whether ip is in trusted_proxies: its
// X-Forwarded-* headers are believed.
func (t *table) trustedPeer(ip netip.Addr) bool {
	for _, n := range t.trusted {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

func scheme(ctx *fasthttp.RequestCtx) []byte {
	if ctx.IsTLS() {
		return vHTTPS
	}
	return vHTTP
}

func remoteAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	if a, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

// rewritePath joins the upstream's path prefix and the canonical path,
// stripped of the route's prefix when it says so, and keeps the query.
func rewritePath(req *fasthttp.Request, rs *reqState) {
	var buf [2048]byte
	r, up := rs.route, rs.route.upstream
	target := req.Header.RequestURI()
	path, query := rs.path, target[len(rs.path):]
	// rs.path points into the target replaced below; the access log
	// keeps the client's.
	rs.pathN = copy(rs.pathBuf[:], path)
	rs.path = nil
	if r.stripPrefix && len(r.prefix) > 1 {
		path = path[min(len(r.prefix), len(path)):]
	}
	b := append(buf[:0], up.path...)
	if len(path) == 0 || path[0] != '/' {
		b = append(b, '/')
	}
	b = append(b, path...)
	b = append(b, query...)
	req.SetRequestURIBytes(b)
	req.UseHostHeader = true
}

// finish sets the response headers every answer carries and logs it.
func (p *Proxy) finish(ctx *fasthttp.RequestCtx, t *table, rs *reqState) {
	if rs.dec.Acquired && rs.dec.Allowed {
		p.o.Release(rs.id)
	}
	if ctx.Response.ConnectionClose() && ctx.Response.StatusCode() >= 400 {
		wire.LingerOnClose(ctx.Conn())
	}
	ctx.Response.Header.SetCanonical(t.hReqID, rs.reqID[:rs.reqIDn])
	if rs.hasDec {
		setLimitHeaders(&ctx.Response.Header, &rs.dec)
	}
	status := ctx.Response.StatusCode()
	if m := p.o.Metrics; m != nil {
		m.observe(t, rs, ctx.Method(), status, time.Since(rs.start))
	}
	if p.o.Access != nil {
		if sb, ok := ctx.Response.BodyStream().(wire.StreamedBody); ok {
			// Log a streamed answer when it has been sent, or has failed
			// to be (a client too slow for server.write_timeout): with
			// its whole duration, and whether it was sent whole.
			line := new(reqState)
			*line = *rs
			sb.NotifyClose(func(complete bool) {
				line.incomplete = !complete
				p.o.Access.log(ctx, line, status)
			})
			return
		}
		p.o.Access.log(ctx, rs, status)
	}
}

// setLimitHeaders writes the X-RateLimit-* fields (the monthly quota) and
// the IETF draft RateLimit-Policy / RateLimit fields
// (draft-ietf-httpapi-ratelimit-headers): every policy in RateLimit-Policy,
// the most restrictive one (fewest requests left) in RateLimit.
func setLimitHeaders(h *fasthttp.ResponseHeader, d *access.Decision) {
	var buf [160]byte
	monthly := !d.Unlimited
	if monthly {
		h.SetCanonical(hXRLLimit, strconv.AppendInt(buf[:0], d.Limit, 10))
		h.SetCanonical(hXRLRemaining, strconv.AppendInt(buf[:0], d.Remaining, 10))
		h.SetCanonical(hXRLReset, strconv.AppendInt(buf[:0], d.Reset, 10))
		if d.HasOverage {
			h.SetCanonical(hXRLOverage, strconv.AppendInt(buf[:0], d.Overage, 10))
		}
	}
	if d.Shadow != access.ReasonNone {
		h.SetCanonical(hShadow, s2b(d.Shadow.String()))
	}
	b := buf[:0]
	if monthly {
		b = append(b, `"monthly";q=`...)
		b = strconv.AppendInt(b, d.Limit, 10)
	}
	if d.HasRate {
		if monthly {
			b = append(b, ", "...)
		}
		b = append(b, `"rate";q=`...)
		b = strconv.AppendInt(b, d.Rate.Limit, 10)
		b = append(b, ";w="...)
		b = strconv.AppendInt(b, d.Rate.Window, 10)
	}
	if len(b) == 0 {
		return
	}
	h.SetCanonical(hRLPolicy, b)
	if d.HasRate && (!monthly || d.Rate.Remaining < d.Remaining) {
		b = append(buf[:0], `"rate";r=`...)
		b = strconv.AppendInt(b, d.Rate.Remaining, 10)
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, d.Rate.Reset, 10)
	} else {
		b = append(buf[:0], `"monthly";r=`...)
		b = strconv.AppendInt(b, d.Remaining, 10)
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, d.Reset, 10)
	}
	h.SetCanonical(hRL, b)
}

// fail answers with one problem of the catalogue.
func (p *Proxy) fail(ctx *fasthttp.RequestCtx, rs *reqState, status int, code problems.Code, field, msg string) {
	if msg == "" {
		msg = code.Message()
	}
	p.render(ctx, rs, status, []problems.Problem{{Level: problems.Severe, Code: code, Field: field, Message: msg}})
}

// render writes an error answer: the one place the proxy turns problems
// into a response body, in the problems shape or as RFC 9457.
func (p *Proxy) render(ctx *fasthttp.RequestCtx, rs *reqState, status int, ps []problems.Problem) {
	if rs != nil && len(ps) > 0 {
		rs.code = ps[0].Code
	}
	// Keep headers we set for this answer (WWW-Authenticate, Retry-After)
	// but nothing of an upstream response.
	ctx.Response.ResetBody()
	ctx.Response.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(ctJSON)
	var buf [512]byte
	if wantsRFC9457(ctx, rs) {
		ctx.Response.Header.SetContentTypeBytes(ctProblemJSON)
		ctx.Response.AppendBody(normalize.AppendRFC9457(buf[:0], status, ps))
		return
	}
	ctx.Response.AppendBody(problems.Append(buf[:0], status, ps))
}

var (
	ctJSON        = []byte("application/json")
	ctProblemJSON = []byte("application/problem+json")
)

// wantsRFC9457 reports whether the error is to be rendered as RFC 9457
// problem details: the route says so, or the client asks for it.
func wantsRFC9457(ctx *fasthttp.RequestCtx, rs *reqState) bool {
	if rs != nil && rs.route != nil && rs.route.rfc9457 {
		return true
	}
	a := ctx.Request.Header.PeekBytes(hAccept)
	return len(a) > 0 && bytes.Contains(bytes.ToLower(a), ctProblemJSON)
}
