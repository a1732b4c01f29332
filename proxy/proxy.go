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

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/normalize"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// Identity is who a verified credential belongs to.
type Identity struct {
	Tenant     string
	Credential string
	Method     string
}

// Decision is a quota admission as the proxy needs it.
type Decision struct {
	Allowed   bool
	Unlimited bool
	Limit     int64
	Remaining int64
	Reset     int64 // seconds until the period resets
	// Unavailable says the decision was a refusal because the ledger
	// could not be reached.
	Unavailable bool
	// UnknownTenant says the credential's tenant has no limits.
	UnknownTenant bool
	// Refusal names the limit that refused the request.
	Refusal Refusal
	// Rate is the short-window limit, when the plan has one.
	Rate Rate
	// Release says Options.Release must be called when the request is done
	// (a concurrency slot was taken).
	Release bool
}

// Refusal names the limit that refused a request.
type Refusal uint8

// Refusals.
const (
	RefusedQuota Refusal = iota
	RefusedRate
	RefusedConcurrency
)

// Rate is the state of a short-window rate limit.
type Rate struct {
	Set        bool
	Limit      int64 // burst: requests allowed at once
	Window     int64 // seconds the limit is defined over
	Remaining  int64
	Reset      int64 // seconds until the bucket is full
	RetryAfter int64
}

// Errors an APIKey hook returns.
var (
	ErrMalformed   = errors.New("proxy: malformed credential")
	ErrInvalid     = errors.New("proxy: invalid credential")
	ErrUnavailable = errors.New("proxy: credential store unavailable")
)

// Options configure a Proxy.
type Options struct {
	// VerifyAPIKey checks a presented API key. Required.
	VerifyAPIKey func(key []byte) (Identity, error)
	// Admit applies the limits of id's tenant to a request costing cost
	// quota units. Required.
	Admit func(id Identity, cost int64) Decision
	// Release ends a request whose Decision had Release set. Required
	// when Admit sets it.
	Release func(id Identity)
	// SelfService answers the self-service paths (kind "usage" or
	// "limit-requests") for an authenticated credential: the answer's
	// status and JSON body, or an error (a *problems.Error is shown as
	// it is). If nil, the paths are not served.
	SelfService func(kind string, id Identity, method string, query, body []byte) (int, []byte, error)
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
	p.tab.Store(t)
	old.closeUnused(t, time.Minute)
	return nil
}

// Server returns the fasthttp server for the proxy listener.
func (p *Proxy) Server(c *config.Config) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                       p.Handler,
		ErrorHandler:                  p.errorHandler,
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
	t := p.tab.Load()
	p.requestID(ctx, t, &rs)
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.As(err, &small):
		p.fail(ctx, &rs, 431, problems.CodeHeadersTooLarge, "", "")
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		p.fail(ctx, &rs, 413, problems.CodeBodyTooLarge, "", "")
	case errors.As(err, &ne) && ne.Timeout():
		p.fail(ctx, &rs, 408, problems.CodeRequestTimeout, "", "")
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
	hRLPolicy        = []byte("RateLimit-Policy")
	hRL              = []byte("RateLimit")
	vHTTP            = []byte("http")
	vHTTPS           = []byte("https")
	vTrailers        = []byte("trailers")
	vAPIKey          = []byte("api_key")
)

// hopHeaders are removed from requests and responses before forwarding:
// RFC 9110 §7.6.1, as net/http/httputil's hopHeaders. Transfer-Encoding
// and Content-Length are framing that fasthttp rewrites itself.
var hopHeaders = [][]byte{hConnection, hProxyConnection, hKeepAlive, hProxyAuthn, hProxyAuthz, hTE, hTrailer, hUpgrade}

// reqState is the per-request data the handler keeps on its stack.
type reqState struct {
	start  time.Time
	route  *route
	id     Identity
	dec    Decision
	hasDec bool
	reqID  [64]byte
	reqIDn int
	code   problems.Code
}

// Handler serves one proxied request.
func (p *Proxy) Handler(ctx *fasthttp.RequestCtx) {
	var rs reqState
	rs.start = time.Now()
	t := p.tab.Load()
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic serving request", zap.Any("panic", r), zap.Stack("stack"))
			p.fail(ctx, &rs, 500, problems.CodeInternal, "", "")
		}
		p.finish(ctx, t, &rs)
	}()
	p.requestID(ctx, t, &rs)

	if p.o.SelfService != nil {
		if path := ctx.Path(); len(t.selfUsage) > 0 && bytes.Equal(path, t.selfUsage) {
			p.selfService(ctx, t, &rs, "usage")
			return
		} else if len(t.selfReqs) > 0 && bytes.Equal(path, t.selfReqs) {
			p.selfService(ctx, t, &rs, "limit-requests")
			return
		}
	}
	rs.route = t.match(ctx.Request.Header.Host(), ctx.Path())
	if rs.route == nil {
		p.fail(ctx, &rs, 404, problems.CodeRouteNotFound, "", "")
		return
	}
	// With a streamed body fasthttp pre-reads only a little and leaves
	// the size limit to us. The unread body makes the connection unusable.
	if cl := ctx.Request.Header.ContentLength(); cl > rs.route.maxBody {
		ctx.SetConnectionClose()
		p.fail(ctx, &rs, 413, problems.CodeBodyTooLarge, "", "")
		return
	}
	upgrade := len(ctx.Request.Header.PeekBytes(hUpgrade)) > 0
	if upgrade && !rs.route.upgrade {
		p.fail(ctx, &rs, 501, problems.CodeUpgradeRefused, "Upgrade", "")
		return
	}
	if rs.route.apiKey {
		if !p.authenticate(ctx, t, &rs) {
			return
		}
		rs.dec = p.o.Admit(rs.id, rs.route.cost)
		rs.hasDec = true
		if !rs.dec.Allowed {
			var buf [24]byte
			switch {
			case rs.dec.UnknownTenant:
				rs.hasDec = false
				p.fail(ctx, &rs, 403, problems.CodeForbidden, "", "the credential's tenant does not exist")
			case rs.dec.Unavailable:
				p.fail(ctx, &rs, 503, problems.CodeStoreUnavailable, "", "the quota ledger is unavailable")
			case rs.dec.Refusal == RefusedRate:
				ctx.Response.Header.SetCanonical(hRetryAfter, strconv.AppendInt(buf[:0], max(rs.dec.Rate.RetryAfter, 1), 10))
				p.fail(ctx, &rs, 429, problems.CodeRateLimited, "", "")
			case rs.dec.Refusal == RefusedConcurrency:
				ctx.Response.Header.SetCanonical(hRetryAfter, strconv.AppendInt(buf[:0], 1, 10))
				p.fail(ctx, &rs, 429, problems.CodeConcurrencyLimited, "", "")
			default:
				ctx.Response.Header.SetCanonical(hRetryAfter, strconv.AppendInt(buf[:0], max(rs.dec.Reset, 1), 10))
				p.fail(ctx, &rs, 429, problems.CodeQuotaExceeded, "", "")
			}
			return
		}
	}
	if upgrade {
		p.upgrade(ctx, t, &rs)
		return
	}
	p.forward(ctx, t, &rs)
}

// authenticate verifies the request's API key; on failure it has answered.
func (p *Proxy) authenticate(ctx *fasthttp.RequestCtx, t *table, rs *reqState) bool {
	key, field := t.apiKey(ctx)
	if key == nil {
		ctx.Response.Header.SetCanonical(hWWWAuth, t.challenge())
		p.fail(ctx, rs, 401, problems.CodeCredentialMissing, field, "")
		return false
	}
	id, err := p.o.VerifyAPIKey(key)
	if err != nil {
		switch {
		case errors.Is(err, ErrMalformed):
			ctx.Response.Header.SetCanonical(hWWWAuth, t.challenge())
			p.fail(ctx, rs, 401, problems.CodeCredentialMalformed, field, "")
		case errors.Is(err, ErrUnavailable):
			p.fail(ctx, rs, 503, problems.CodeStoreUnavailable, "", "")
		default:
			ctx.Response.Header.SetCanonical(hWWWAuth, t.challenge())
			p.fail(ctx, rs, 401, problems.CodeCredentialInvalid, field, "")
		}
		return false
	}
	rs.id = id
	return true
}

// selfService serves a tenant's own usage and limit requests. It needs
// the tenant's credential and does not count against the quota.
func (p *Proxy) selfService(ctx *fasthttp.RequestCtx, t *table, rs *reqState, kind string) {
	if !p.authenticate(ctx, t, rs) {
		return
	}
	var body []byte
	if ctx.IsPost() {
		if s := ctx.RequestBodyStream(); s != nil {
			b, err := io.ReadAll(io.LimitReader(s, 64<<10))
			if err != nil {
				p.fail(ctx, rs, 400, problems.CodeBadRequest, "body", "")
				return
			}
			body = b
		} else {
			body = ctx.Request.Body()
		}
	}
	status, out, err := p.o.SelfService(kind, rs.id, string(ctx.Method()), ctx.URI().QueryString(), body)
	if err != nil {
		pe := problems.From(err)
		if pe.Status >= 500 {
			p.log.Error("self-service failed", zap.String("kind", kind), zap.Error(err))
		}
		p.render(ctx, rs, pe.Status, pe.Problems)
		return
	}
	ctx.Response.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(ctJSON)
	ctx.Response.SetBodyRaw(out)
}

// apiKey returns the presented API key and the header it came in.
func (t *table) apiKey(ctx *fasthttp.RequestCtx) ([]byte, string) {
	for _, h := range t.apiKeyHdr {
		if v := ctx.Request.Header.PeekBytes(h); len(v) > 0 {
			return v, b2s(h)
		}
	}
	if t.authzSch != nil {
		if v := ParseAuthorization(ctx.Request.Header.PeekBytes(hAuthorization), t.authzSch); v != nil {
			return v, "Authorization"
		}
	}
	if len(t.apiKeyHdr) > 0 {
		return nil, b2s(t.apiKeyHdr[0])
	}
	return nil, "Authorization"
}

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

func (t *table) challenge() []byte {
	if t.authzSch != nil && len(t.apiKeyHdr) == 0 {
		return t.authzSch
	}
	return challengeAPIKey
}

var challengeAPIKey = []byte(`ApiKey realm="tollgate"`)

// requestID keeps a valid client X-Request-Id or makes one.
func (p *Proxy) requestID(ctx *fasthttp.RequestCtx, t *table, rs *reqState) {
	if v := ctx.Request.Header.PeekBytes(t.hReqID); validRequestID(v) {
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
	ctx.Request.Header.SetCanonical(t.hReqID, rs.reqID[:32])
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
	removeHopHeaders(&req.Header)
	p.prepare(ctx, t, rs)
	var limited *limitedBody
	if req.Header.ContentLength() == -1 { // chunked: the size is known only at the end
		if s := req.BodyStream(); s != nil {
			limited = &limitedBody{r: s, left: int64(rs.route.maxBody)}
			req.SetBodyStream(limited, -1)
		}
	}
	var err error
	if cl := req.Header.ContentLength(); up.pipe != nil && (cl == 0 || cl == -2) {
		err = up.pipe.Do(req, &ctx.Response)
	} else {
		err = up.client.Do(req, &ctx.Response)
	}
	if err != nil {
		p.upstreamFailed(ctx, rs, err, limited != nil && limited.over)
		return
	}
	removeHopHeaders(&ctx.Response.Header)
	if ctx.Response.StatusCode() >= 400 && rs.route.normalize {
		p.normalize(ctx, rs)
	}
}

// upstreamFailed answers a failed upstream exchange.
func (p *Proxy) upstreamFailed(ctx *fasthttp.RequestCtx, rs *reqState, err error, tooLarge bool) {
	ctx.Response.Reset()
	var ne net.Error
	switch {
	case tooLarge:
		ctx.SetConnectionClose()
		p.fail(ctx, rs, 413, problems.CodeBodyTooLarge, "", "")
	case errors.Is(err, fasthttp.ErrTimeout) || errors.As(err, &ne) && ne.Timeout():
		p.fail(ctx, rs, 504, problems.CodeUpstreamTimeout, "", "")
	case errors.Is(err, errPipelineFull):
		p.fail(ctx, rs, 503, problems.CodeUpstreamError, "", "too many requests are queued for the upstream")
	case errors.Is(err, errPipelineFull):
		p.fail(ctx, rs, 503, problems.CodeUpstreamError, "", "too many requests are queued for the upstream")
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		p.fail(ctx, rs, 502, problems.CodeUpstreamError, "", "the upstream's answer is larger than a pipelined upstream allows (pipeline.max_body)")
	default:
		p.log.Debug("upstream failed", zap.String("upstream", rs.route.upstream.name), zap.Error(err))
		p.fail(ctx, rs, 502, problems.CodeUpstreamUnreachable, "", "")
	}
}

// prepare applies the forwarding rules to the request headers and path:
// identity headers, no credentials, X-Forwarded-*, the upstream's path.
func (p *Proxy) prepare(ctx *fasthttp.RequestCtx, t *table, rs *reqState) {
	req := &ctx.Request
	up := rs.route.upstream
	// Identity headers are ours alone: drop whatever the client sent, then
	// set the verified values. The API key itself is not forwarded.
	req.Header.DelBytes(t.hTenant)
	req.Header.DelBytes(t.hCred)
	req.Header.DelBytes(t.hAuth)
	if rs.route.apiKey {
		for _, h := range t.apiKeyHdr {
			req.Header.DelBytes(h)
		}
		if t.authzSch != nil && ParseAuthorization(req.Header.PeekBytes(hAuthorization), t.authzSch) != nil {
			req.Header.DelBytes(hAuthorization)
		}
		req.Header.SetCanonical(t.hTenant, s2b(rs.id.Tenant))
		req.Header.SetCanonical(t.hCred, s2b(rs.id.Credential))
		req.Header.SetCanonical(t.hAuth, vAPIKey)
	}
	p.setForwarded(ctx, t)
	// We answered any Expect: 100-continue ourselves (fasthttp does, as it
	// reads the body); the upstream gets the body without waiting.
	req.Header.DelBytes(hExpect)
	if rs.route.stripPrefix || len(up.path) > 0 {
		rewritePath(req, rs.route, up)
	}
}

// limitedBody fails a streamed request body once it exceeds the route's
// limit, so a chunked upload cannot bypass max_request_body.
type limitedBody struct {
	r    io.Reader
	left int64
	over bool
}

var errBodyTooLarge = errors.New("proxy: request body too large")

func (l *limitedBody) Read(b []byte) (int, error) {
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
	return n, err
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
	if c := h.PeekBytes(hConnection); len(c) > 0 && !isPlainConnection(c) {
		var buf [256]byte
		n := copy(buf[:], c)
		for _, f := range bytes.Split(buf[:n], []byte{','}) {
			if f = bytes.TrimSpace(f); len(f) > 0 {
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

type hopHeader interface {
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

// setForwarded sets X-Forwarded-For, -Proto and -Host from the socket. A
// client's own values are kept and extended only when the peer is a
// trusted proxy; otherwise they, and Forwarded, are replaced.
func (p *Proxy) setForwarded(ctx *fasthttp.RequestCtx, t *table) {
	h := &ctx.Request.Header
	var ipbuf [64]byte
	ip := remoteAddr(ctx)
	ipb := ip.AppendTo(ipbuf[:0])
	trusted := false
	for _, n := range t.trusted {
		if n.Contains(ip) {
			trusted = true
			break
		}
	}
	if trusted {
		if prior := h.PeekBytes(hXFF); len(prior) > 0 {
			var buf [512]byte
			b := append(append(append(buf[:0], prior...), ", "...), ipb...)
			h.SetCanonical(hXFF, b)
		} else {
			h.SetCanonical(hXFF, ipb)
		}
		if len(h.PeekBytes(hXFProto)) == 0 {
			h.SetCanonical(hXFProto, scheme(ctx))
		}
		if len(h.PeekBytes(hXFHost)) == 0 {
			h.SetCanonical(hXFHost, h.Host())
		}
		return
	}
	h.DelBytes(hForwarded)
	h.SetCanonical(hXFF, ipb)
	h.SetCanonical(hXFProto, scheme(ctx))
	h.SetCanonical(hXFHost, h.Host())
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

func rewritePath(req *fasthttp.Request, r *route, up *upstream) {
	var buf [1024]byte
	path := req.URI().PathOriginal()
	if r.stripPrefix && len(r.prefix) > 1 {
		path = path[min(len(r.prefix), len(path)):]
	}
	b := append(buf[:0], up.path...)
	if len(path) == 0 || path[0] != '/' {
		b = append(b, '/')
	}
	b = append(b, path...)
	if q := req.URI().QueryString(); len(q) > 0 {
		b = append(b, '?')
		b = append(b, q...)
	}
	req.SetRequestURIBytes(b)
}

// finish sets the response headers every answer carries and logs it.
func (p *Proxy) finish(ctx *fasthttp.RequestCtx, t *table, rs *reqState) {
	if rs.dec.Release && rs.dec.Allowed {
		p.o.Release(rs.id)
	}
	ctx.Response.Header.SetCanonical(t.hReqID, rs.reqID[:rs.reqIDn])
	if rs.hasDec {
		setLimitHeaders(&ctx.Response.Header, &rs.dec)
	}
	status := ctx.Response.StatusCode()
	if m := p.o.Metrics; m != nil {
		m.observe(status, rs.code, time.Since(rs.start))
	}
	if p.o.Access != nil {
		p.o.Access.log(ctx, rs, status)
	}
}

// setLimitHeaders writes the X-RateLimit-* fields (the monthly quota) and
// the IETF draft RateLimit-Policy / RateLimit fields
// (draft-ietf-httpapi-ratelimit-headers): every policy in RateLimit-Policy,
// the most restrictive one (fewest requests left) in RateLimit.
func setLimitHeaders(h *fasthttp.ResponseHeader, d *Decision) {
	var buf [160]byte
	monthly := !d.Unlimited
	if monthly {
		h.SetCanonical(hXRLLimit, strconv.AppendInt(buf[:0], d.Limit, 10))
		h.SetCanonical(hXRLRemaining, strconv.AppendInt(buf[:0], d.Remaining, 10))
		h.SetCanonical(hXRLReset, strconv.AppendInt(buf[:0], d.Reset, 10))
	}
	b := buf[:0]
	if monthly {
		b = append(b, `"monthly";q=`...)
		b = strconv.AppendInt(b, d.Limit, 10)
	}
	if d.Rate.Set {
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
	if d.Rate.Set && (!monthly || d.Rate.Remaining < d.Remaining) {
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
