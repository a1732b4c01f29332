package proxy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/proxy"
	"github.com/valyala/fasthttp"
)

const (
	goodKey    = "good-key"
	brokenKey  = "broken-key"
	unknownKey = "unknown-key"
	ghostKey   = "ghost-tenant-key"
	downKey    = "store-down-key"
	panicKey   = "panic-key"
	overKey    = "over-quota-key"
	ledgerDown = "ledger-down-key"
)

// verify is a hand-written hook: the proxy's contract with authn is this
// function, so the tests give it one with known answers.
func verify(pc access.Presented) (access.Principal, error) {
	if pc.Kind != access.KindAPIKey {
		return access.Principal{}, access.ErrUnsupported
	}
	switch string(pc.Secret) {
	case goodKey:
		return access.Principal{Kind: access.KindAPIKey, Tenant: "acme", Credential: "KEYID0000001", Scopes: access.AllScopes, Modules: access.AllModules}, nil
	case ghostKey:
		return access.Principal{Kind: access.KindAPIKey, Tenant: "ghost", Credential: "KEYID0000002", Scopes: access.AllScopes, Modules: access.AllModules}, nil
	case overKey:
		return access.Principal{Kind: access.KindAPIKey, Tenant: "over", Credential: "KEYID0000003", Scopes: access.AllScopes, Modules: access.AllModules}, nil
	case ledgerDown:
		return access.Principal{Kind: access.KindAPIKey, Tenant: "down", Credential: "KEYID0000004", Scopes: access.AllScopes, Modules: access.AllModules}, nil
	case brokenKey:
		return access.Principal{}, access.ErrMalformed
	case downKey:
		return access.Principal{}, access.ErrStoreUnavailable
	case panicKey:
		panic("boom")
	}
	return access.Principal{}, access.ErrInvalid
}

func admit(id access.Principal, cost int64, mode access.Mode) access.Decision {
	if mode == access.ModeShadow {
		// A route in shadow mode: over the rate limit, admitted all the
		// same (and counted).
		return access.Decision{Allowed: true, Shadow: access.ReasonRate, Limit: 8000, Remaining: 100, Reset: 3600}
	}
	switch id.Tenant {
	case "ghost":
		return access.Decision{Err: access.ErrUnknownTenant}
	case "over":
		return access.Decision{Limit: 8000, Remaining: 0, Reset: 3600}
	case "down":
		return access.Decision{Limit: 8000, Remaining: 10, Reset: 3600, Err: access.ErrLedgerUnavailable}
	}
	return access.Decision{Allowed: true, Limit: 16000, Remaining: 15997, Reset: 86400}
}

// backend is a real fasthttp server on loopback that records what it got.
type backend struct {
	addr string
	mu   sync.Mutex
	last *fasthttp.RequestHeader
	body int64
}

func startBackend(t testing.TB, h fasthttp.RequestHandler) *backend {
	t.Helper()
	b := &backend{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	srv := &fasthttp.Server{StreamRequestBody: true, Handler: func(ctx *fasthttp.RequestCtx) {
		var hdr fasthttp.RequestHeader
		ctx.Request.Header.CopyTo(&hdr)
		n := int64(len(ctx.Request.Body()))
		if s := ctx.RequestBodyStream(); s != nil {
			n, _ = io.Copy(io.Discard, s)
		}
		b.mu.Lock()
		b.last, b.body = &hdr, n
		b.mu.Unlock()
		if h != nil {
			h(ctx)
			return
		}
		ctx.SetContentType("application/json")
		ctx.Response.Header.Set("Connection", "keep-alive, X-Hop")
		ctx.Response.Header.Set("X-Hop", "secret-hop")
		ctx.Response.Header.Set("Keep-Alive", "timeout=5")
		ctx.SetBodyString(`{"ok":true}`)
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return b
}

func (b *backend) header(name string) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last == nil {
		return "", false
	}
	v := b.last.Peek(name)
	return string(v), v != nil
}

type harness struct {
	addr string
	be   *backend
	p    *proxy.Proxy
}

func start(t testing.TB, mutate func(c *config.Config), o proxy.Options) *harness {
	t.Helper()
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		switch path := string(ctx.Path()); {
		case strings.HasSuffix(path, "/slow"):
			time.Sleep(300 * time.Millisecond) // past the upstream's 100ms read_timeout: what /slow tests
		case strings.HasSuffix(path, "/big"):
			ctx.SetBodyStream(io.LimitReader(zeros{}, 50<<20), -1)
			return
		}
		ctx.SetContentType("application/json")
		ctx.Response.Header.Set("Connection", "keep-alive, X-Hop")
		ctx.Response.Header.Set("X-Hop", "secret-hop")
		ctx.SetBodyString(`{"ok":true}`)
	})
	c := config.Default()
	c.Server.MaxRequestBody = 1 << 20
	c.Server.MaxHeaderBytes = 4096
	c.Upstreams = map[string]config.Upstream{
		"be":   {URL: "http://" + be.addr, ReadTimeout: config.Duration(100 * time.Millisecond)},
		"dead": {URL: "http://" + deadAddr(t)},
	}
	c.Routes = []config.Route{
		{PathPrefix: "/api", Upstream: "be", Auth: []string{"api_key"}},
		{PathPrefix: "/dead", Upstream: "dead", Auth: []string{"api_key"}},
		{PathPrefix: "/open", Upstream: "be"},
		{PathPrefix: "/strip", Upstream: "be", StripPrefix: true},
		{Host: "special.example", PathPrefix: "/api", Upstream: "http://" + be.addr + "/v2"},
	}
	if mutate != nil {
		mutate(c)
	}
	if err := config.Validate(c); err != nil {
		t.Fatal(err)
	}
	if o.Authenticate == nil {
		o.Authenticate = verify
	}
	if o.Admit == nil {
		o.Admit = admit
	}
	p, err := proxy.New(c, o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := p.Server(c)
	go func() { _ = srv.Serve(proxy.Listener(ln)) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return &harness{addr: ln.Addr().String(), be: be, p: p}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// dial connects to the proxy with a 5 s deadline, closed when the test ends.
func (h *harness) dial(t *testing.T) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	return conn
}

// raw sends raw bytes and reads one response.
func (h *harness) raw(t *testing.T, req string) *fasthttp.Response {
	t.Helper()
	conn := h.dial(t)
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp := fasthttp.AcquireResponse()
	resp.SkipBody = strings.HasPrefix(req, "HEAD ")
	if err := resp.Read(bufio.NewReader(conn)); err != nil {
		t.Fatalf("reading response to %q: %v", req[:min(len(req), 40)], err)
	}
	return resp
}

func (h *harness) do(t *testing.T, method, path string, hdr map[string]string) *fasthttp.Response {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, path, h.addr)
	for k, v := range hdr {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	return h.raw(t, b.String())
}

func checkProblem(t *testing.T, resp *fasthttp.Response, status int, code problems.Code) problems.Body {
	t.Helper()
	body := checkProblemStatus(t, resp, status)
	if p := body.Problems[0]; p.Code != code || p.Level != problems.Severe || p.Message == "" {
		t.Errorf("problem = %+v, want code %s, SEVERE, a message", p, code)
	}
	return body
}

// checkProblemStatus checks the shape of an error answer: status, JSON
// content type, a problems body for that status, a request id.
func checkProblemStatus(t *testing.T, resp *fasthttp.Response, status int) problems.Body {
	t.Helper()
	if got := resp.StatusCode(); got != status {
		b := resp.Body()
		t.Errorf("status = %d, want %d (body %q)", got, status, b[:min(len(b), 200)])
	}
	if ct := string(resp.Header.ContentType()); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var body problems.Body
	dec := json.NewDecoder(bytes.NewReader(resp.Body()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		b := resp.Body()
		t.Fatalf("body %q (%d bytes) is not a problems body: %v", b[:min(len(b), 200)], len(b), err)
	}
	if body.OK || body.Status != status || len(body.Problems) != 1 {
		t.Fatalf("body = %+v, want ok=false status=%d and one problem", body, status)
	}
	if len(resp.Header.Peek("X-Request-Id")) == 0 {
		t.Error("no X-Request-Id on the error")
	}
	return body
}

func TestErrorPaths(t *testing.T) {
	h := start(t, nil, proxy.Options{})
	long := strings.Repeat("a", 5000)
	tests := []struct {
		name    string
		req     string
		status  int
		code    problems.Code
		field   string
		headers map[string]string // expected response headers ("" = present, any value)
	}{
		{"no route", "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404, problems.CodeRouteNotFound, "", nil},
		{"no credential", "GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n", 401, problems.CodeCredentialMissing, "X-API-Key",
			map[string]string{"WWW-Authenticate": `ApiKey realm="tollgate"`}},
		{"malformed credential", "GET /api/x HTTP/1.1\r\nHost: x\r\nX-API-Key: " + brokenKey + "\r\n\r\n", 401, problems.CodeCredentialMalformed, "X-API-Key",
			map[string]string{"WWW-Authenticate": ""}},
		{"unknown credential", "GET /api/x HTTP/1.1\r\nHost: x\r\nX-API-Key: " + unknownKey + "\r\n\r\n", 401, problems.CodeCredentialInvalid, "X-API-Key",
			map[string]string{"WWW-Authenticate": ""}},
		{"store unavailable", "GET /api/x HTTP/1.1\r\nHost: x\r\nX-API-Key: " + downKey + "\r\n\r\n", 503, problems.CodeStoreUnavailable, "", nil},
		{"tenant unknown", "GET /api/x HTTP/1.1\r\nHost: x\r\nX-API-Key: " + ghostKey + "\r\n\r\n", 403, problems.CodeForbidden, "", nil},
		{"quota exhausted", "GET /api/x HTTP/1.1\r\nHost: x\r\nX-API-Key: " + overKey + "\r\n\r\n", 429, problems.CodeQuotaExceeded, "",
			map[string]string{"Retry-After": "3600", "X-RateLimit-Limit": "8000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3600",
				"RateLimit-Policy": `"monthly";q=8000`, "RateLimit": `"monthly";r=0;t=3600`}},
		{"ledger unavailable", "GET /api/x HTTP/1.1\r\nHost: x\r\nX-API-Key: " + ledgerDown + "\r\n\r\n", 503, problems.CodeStoreUnavailable, "",
			map[string]string{"X-RateLimit-Limit": "8000"}},
		{"upstream unreachable", "GET /dead/x HTTP/1.1\r\nHost: x\r\nX-API-Key: " + goodKey + "\r\n\r\n", 502, problems.CodeUpstreamUnreachable, "",
			map[string]string{"X-RateLimit-Remaining": "15997"}},
		{"upstream timeout", "GET /api/slow HTTP/1.1\r\nHost: x\r\nX-API-Key: " + goodKey + "\r\n\r\n", 504, problems.CodeUpstreamTimeout, "",
			map[string]string{"X-RateLimit-Limit": "16000"}},
		{"panic", "GET /api/x HTTP/1.1\r\nHost: x\r\nX-API-Key: " + panicKey + "\r\n\r\n", 500, problems.CodeInternal, "", nil},
		{"upgrade refused", "GET /api/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-API-Key: " + goodKey + "\r\n\r\n", 501, problems.CodeUpgradeRefused, "Upgrade", nil},
		{"malformed request", "GARBAGE\r\n\r\n", 400, problems.CodeBadRequest, "", nil},
		{"bad content length", "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, problems.CodeBadRequest, "", nil},
		{"body too large", "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n" + strings.Repeat("b", 16<<10), 413, problems.CodeBodyTooLarge, "", nil},
		{"headers too large", "GET /api/x HTTP/1.1\r\nHost: x\r\nX-Long: " + long + "\r\n\r\n", 431, problems.CodeHeadersTooLarge, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.raw(t, tt.req)
			body := checkProblem(t, resp, tt.status, tt.code)
			if got := body.Problems[0].Field; got != tt.field {
				t.Errorf("field = %q, want %q", got, tt.field)
			}
			for k, want := range tt.headers {
				got := resp.Header.Peek(k)
				if got == nil || want != "" && string(got) != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestForwardsWithIdentityAndWithoutSecrets(t *testing.T) {
	h := start(t, nil, proxy.Options{})
	resp := h.do(t, "GET", "/api/things?q=1", map[string]string{
		"X-API-Key":             goodKey,
		"X-Tollgate-Tenant":     "forged",
		"X-Tollgate-Credential": "forged",
		"X-Tollgate-Auth":       "forged",
		"X-Forwarded-For":       "6.6.6.6",
		"Forwarded":             "for=6.6.6.6",
		"Connection":            "keep-alive, X-Private",
		"X-Private":             "hop",
		"Proxy-Authorization":   "Basic Zm9vOmJhcg==",
		"X-Request-Id":          "client-id-123",
	})
	if resp.StatusCode() != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
	}
	want := map[string]string{
		"X-Tollgate-Tenant": "acme", "X-Tollgate-Credential": "KEYID0000001", "X-Tollgate-Auth": "api_key",
		"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Request-Id": "client-id-123",
	}
	for k, v := range want {
		if got, _ := h.be.header(k); got != v {
			t.Errorf("backend saw %s = %q, want %q", k, got, v)
		}
	}
	for _, k := range []string{"X-API-Key", "Forwarded", "X-Private", "Proxy-Authorization"} {
		if v, ok := h.be.header(k); ok {
			t.Errorf("backend saw %s = %q, want it removed", k, v)
		}
	}
	// Response: hop-by-hop headers of the upstream are not passed on;
	// limit headers and the request id are set.
	for k, v := range map[string]string{
		"X-Request-Id": "client-id-123", "X-RateLimit-Limit": "16000", "X-RateLimit-Remaining": "15997",
		"X-RateLimit-Reset": "86400", "RateLimit-Policy": `"monthly";q=16000`, "RateLimit": `"monthly";r=15997;t=86400`,
	} {
		if got := string(resp.Header.Peek(k)); got != v {
			t.Errorf("response %s = %q, want %q", k, got, v)
		}
	}
	if v := resp.Header.Peek("X-Hop"); v != nil {
		t.Errorf("response carries X-Hop %q named in the upstream's Connection header", v)
	}
	if string(resp.Body()) != `{"ok":true}` {
		t.Errorf("body = %q", resp.Body())
	}
}

func TestTrustedProxyExtendsForwardedFor(t *testing.T) {
	h := start(t, func(c *config.Config) { c.TrustedProxies = []string{"127.0.0.0/8"} }, proxy.Options{})
	h.do(t, "GET", "/api/x", map[string]string{"X-API-Key": goodKey, "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
	if got, _ := h.be.header("X-Forwarded-For"); got != "203.0.113.9, 127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want the client's value extended", got)
	}
	if got, _ := h.be.header("X-Forwarded-Proto"); got != "https" {
		t.Errorf("X-Forwarded-Proto = %q, want the trusted proxy's https", got)
	}
}

func TestRequestIDGeneratedWhenInvalid(t *testing.T) {
	h := start(t, nil, proxy.Options{})
	resp := h.do(t, "GET", "/api/x", map[string]string{"X-API-Key": goodKey, "X-Request-Id": "bad id with spaces"})
	id := string(resp.Header.Peek("X-Request-Id"))
	if len(id) != 32 || id == "bad id with spaces" {
		t.Errorf("response X-Request-Id = %q, want a generated 32-hex id", id)
	}
	if got, _ := h.be.header("X-Request-Id"); got != id {
		t.Errorf("backend saw request id %q, response has %q", got, id)
	}
}

func TestRouting(t *testing.T) {
	h := start(t, nil, proxy.Options{})
	tests := []struct {
		name, host, path string
		status           int
		backendPath      string
	}{
		{"open route needs no key", "x", "/open/a", 200, "/open/a"},
		{"whole segments only", "x", "/apix", 404, ""},
		{"strip prefix", "x", "/strip/a/b?c=d", 200, "/a/b?c=d"},
		{"host route with upstream path", "special.example:8080", "/api/z", 200, "/v2/api/z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.raw(t, fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", tt.path, tt.host))
			if resp.StatusCode() != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode(), tt.status, resp.Body())
			}
			if tt.backendPath != "" {
				h.be.mu.Lock()
				got := string(h.be.last.RequestURI())
				h.be.mu.Unlock()
				if got != tt.backendPath {
					t.Errorf("backend got %q, want %q", got, tt.backendPath)
				}
			}
		})
	}
	resp := h.raw(t, "GET /api/z?k=v HTTP/1.1\r\nHost: SPECIAL.example\r\nX-API-Key: "+goodKey+"\r\n\r\n")
	if resp.StatusCode() != 200 {
		t.Fatalf("host route: %d", resp.StatusCode())
	}
	h.be.mu.Lock()
	got := string(h.be.last.RequestURI())
	h.be.mu.Unlock()
	if got != "/v2/api/z?k=v" {
		t.Errorf("host route forwarded %q, want /v2/api/z?k=v", got)
	}
}

func TestAuthorizationScheme(t *testing.T) {
	h := start(t, func(c *config.Config) {
		c.Auth.APIKey.Headers = []string{"Api-Key"}
		c.Auth.APIKey.AuthorizationScheme = "ApiKey"
	}, proxy.Options{})
	for _, hdr := range []map[string]string{{"Api-Key": goodKey}, {"Authorization": "apikey " + goodKey}} {
		if resp := h.do(t, "GET", "/api/x", hdr); resp.StatusCode() != 200 {
			t.Errorf("%v: status %d", hdr, resp.StatusCode())
		}
		if v, ok := h.be.header("Authorization"); ok {
			t.Errorf("Authorization %q forwarded", v)
		}
	}
	if resp := h.do(t, "GET", "/api/x", map[string]string{"X-API-Key": goodKey}); resp.StatusCode() != 401 {
		t.Errorf("unconfigured header accepted: %d", resp.StatusCode())
	}
}

func TestStreamsLargeBodies(t *testing.T) {
	h := start(t, nil, proxy.Options{})
	c := &fasthttp.Client{StreamResponseBody: true}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI("http://" + h.addr + "/api/big")
	req.Header.Set("X-API-Key", goodKey)
	if err := c.Do(req, resp); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.BodyStream())
	if err != nil || n != 50<<20 {
		t.Errorf("downloaded %d bytes (%v), want %d", n, err, 50<<20)
	}
	_ = resp.CloseBodyStream()
}

func TestReloadSwapsRoutes(t *testing.T) {
	h := start(t, nil, proxy.Options{})
	if resp := h.do(t, "GET", "/new/x", nil); resp.StatusCode() != 404 {
		t.Fatalf("before reload: %d", resp.StatusCode())
	}
	c := config.Default()
	c.Routes = []config.Route{{PathPrefix: "/new", Upstream: "http://" + h.be.addr}}
	if err := config.Validate(c); err != nil {
		t.Fatal(err)
	}
	if err := h.p.Update(c); err != nil {
		t.Fatal(err)
	}
	if resp := h.do(t, "GET", "/new/x", nil); resp.StatusCode() != 200 {
		t.Errorf("after reload: %d", resp.StatusCode())
	}
}

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

// A client may send its next request before it has read the answer to the
// last one (HTTP/1.1 pipelining), in the same write or later while the
// first is in flight. The client listener yields before reading after a
// write (proxy.Listener); it must still serve every request, in order and
// without waiting for a timeout.
func TestClientPipelining(t *testing.T) {
	h := start(t, nil, proxy.Options{})
	conn := h.dial(t)
	get := func(path string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: x\r\nX-API-Key: " + goodKey + "\r\n\r\n"
	}
	br := bufio.NewReader(conn)
	expect := func(want ...int) {
		t.Helper()
		for i, status := range want {
			resp := fasthttp.AcquireResponse()
			if err := resp.Read(br); err != nil {
				t.Fatalf("answer %d of %d: %v", i+1, len(want), err)
			}
			if got := resp.StatusCode(); got != status {
				t.Errorf("answer %d of %d: status %d, want %d", i+1, len(want), got, status)
			}
			fasthttp.ReleaseResponse(resp)
		}
	}
	// Three requests in one write.
	if _, err := io.WriteString(conn, get("/api/1")+get("/nowhere")+get("/api/2")); err != nil {
		t.Fatal(err)
	}
	expect(200, 404, 200)
	// The next one sent while the one before is answered and not yet
	// read, then one after a pause: a read that waited for a readiness
	// already seen would hang here until the deadline.
	for i := 0; i < 20; i++ {
		if _, err := io.WriteString(conn, get("/api/3")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // the pause itself is what is tested
		if _, err := io.WriteString(conn, get("/nowhere")); err != nil {
			t.Fatal(err)
		}
		expect(200, 404)
	}
}
