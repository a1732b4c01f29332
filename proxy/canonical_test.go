package proxy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"path"
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

// hostRoutes adds the two host routes of the Host-confusion reproduction:
// public.test is open, private.test needs a key.
func hostRoutes(c *config.Config) {
	piped := c.Upstreams["be"]
	piped.Pipeline = &config.Pipeline{Conns: 2, MaxBody: 1 << 20}
	c.Upstreams["piped"] = piped
	c.Routes = append(c.Routes,
		config.Route{PathPrefix: "/piped", Upstream: "piped"},
		config.Route{Host: "public.test", PathPrefix: "/", Upstream: "be"},
		config.Route{Host: "private.test", PathPrefix: "/", Upstream: "be", Auth: []string{"api_key"}},
	)
}

// TestCanonicalRequest sends raw requests an attacker would and checks the
// answer and, when the request is forwarded, the exact target and Host the
// upstream received.
func TestCanonicalRequest(t *testing.T) {
	h := start(t, hostRoutes, proxy.Options{})
	key := "X-API-Key: " + goodKey + "\r\n"
	tests := []struct {
		name     string
		req      string
		status   int
		code     problems.Code
		target   string // what the upstream received, when forwarded
		host     string
		closeAft bool // the connection is closed after the answer
	}{
		{name: "dot segments", req: "GET /api/../open/x HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, code: problems.CodeAmbiguousPath},
		{name: "open to protected", req: "GET /open/../api/x HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, code: problems.CodeAmbiguousPath},
		{name: "encoded slash dots", req: "GET /api/..%2fopen/x HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, code: problems.CodeAmbiguousPath},
		{name: "encoded dots", req: "GET /api/%2e%2e/open/x HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, code: problems.CodeAmbiguousPath},
		{name: "encoded slash", req: "GET /open%2f..%2fapi/x HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, code: problems.CodeAmbiguousPath},
		{name: "single dot", req: "GET /open/./x HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, code: problems.CodeAmbiguousPath},
		{name: "empty segment", req: "GET //api/x HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, code: problems.CodeAmbiguousPath},
		{name: "backslash", req: "GET /open\\..\\api HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, code: problems.CodeAmbiguousPath},
		{name: "encoded backslash", req: "GET /open/%5c HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, code: problems.CodeAmbiguousPath},
		{name: "path parameter", req: "GET /open;x/../api HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, code: problems.CodeAmbiguousPath},
		{name: "encoded NUL", req: "GET /open/%00 HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, code: problems.CodeAmbiguousPath},
		{name: "bad escape", req: "GET /open/%zz HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, code: problems.CodeAmbiguousPath},
		{name: "encoded prefix", req: "GET /%61pi/x HTTP/1.1\r\nHost: a\r\n\r\n", status: 401, code: problems.CodeCredentialMissing},
		{name: "unreserved decoded", req: "GET /open/%61%7E%2d?q=%2F..%2f HTTP/1.1\r\nHost: a\r\n\r\n", status: 200, target: "/open/a~-?q=%2F..%2f", host: "a"},
		{name: "reserved kept upper", req: "GET /open/a%2cb%20c HTTP/1.1\r\nHost: a\r\n\r\n", status: 200, target: "/open/a%2Cb%20c", host: "a"},
		{name: "pipelined as canonical", req: "GET /piped/a%2Cb%20c/%7e HTTP/1.1\r\nHost: a\r\n\r\n", status: 200, target: "/piped/a%2Cb%20c/~", host: "a"},
		{name: "pipelined untouched", req: "GET /piped/a%2Cb%20c?x=%2e%2e HTTP/1.0\r\nHost: a\r\n\r\n", status: 200, target: "/piped/a%2Cb%20c?x=%2e%2e", host: "a", closeAft: true},
		{name: "pipelined empty POST", req: "POST /piped/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", status: 200, target: "/piped/x", host: "a"},
		{name: "trailing slash", req: "GET /open/ HTTP/1.1\r\nHost: a\r\n\r\n", status: 200, target: "/open/", host: "a"},
		{name: "absolute form routes on its authority", req: "GET http://private.test/secret HTTP/1.1\r\nHost: public.test\r\n\r\n", status: 401, code: problems.CodeCredentialMissing},
		{name: "absolute form forwards its authority", req: "GET http://public.test/x?y HTTP/1.1\r\nHost: private.test\r\n\r\n", status: 200, target: "/x?y", host: "public.test"},
		{name: "absolute form with key", req: "GET HTTP://private.test HTTP/1.1\r\nHost: public.test\r\n" + key + "\r\n", status: 200, target: "/", host: "private.test"},
		{name: "absolute form userinfo", req: "GET http://u@public.test/ HTTP/1.1\r\nHost: public.test\r\n\r\n", status: 400, code: problems.CodeInvalidTarget},
		{name: "other scheme", req: "GET ftp://public.test/ HTTP/1.1\r\nHost: public.test\r\n\r\n", status: 400, code: problems.CodeInvalidTarget},
		{name: "asterisk", req: "OPTIONS * HTTP/1.1\r\nHost: public.test\r\n\r\n", status: 400, code: problems.CodeInvalidTarget},
		// fasthttp refuses these two itself.
		{name: "host with path", req: "GET /x HTTP/1.1\r\nHost: public.test/evil\r\n\r\n", status: 400, code: problems.CodeBadRequest},
		{name: "host with comma", req: "GET /x HTTP/1.1\r\nHost: public.test,private.test\r\n\r\n", status: 400, code: problems.CodeInvalidHost},
		{name: "two trailing dots", req: "GET /open/x HTTP/1.1\r\nHost: private.test..\r\n\r\n", status: 400, code: problems.CodeInvalidHost},
		{name: "trailing dot", req: "GET /x HTTP/1.1\r\nHost: Public.Test.:80\r\n\r\n", status: 200, target: "/x", host: "Public.Test:80"},
		{name: "host with userinfo", req: "GET /x HTTP/1.1\r\nHost: u@public.test\r\n\r\n", status: 400, code: problems.CodeInvalidHost},
		{name: "host with port", req: "GET /x HTTP/1.1\r\nHost: PUBLIC.test:8080\r\n\r\n", status: 200, target: "/x", host: "PUBLIC.test:8080"},
		{name: "HTTP/1.0 without Host", req: "GET /open/x HTTP/1.0\r\n\r\n", status: 400, code: problems.CodeInvalidHost, closeAft: true},
		{name: "HTTP/1.1 without Host", req: "GET /open/x HTTP/1.1\r\n\r\n", status: 400, code: problems.CodeBadRequest},
		{name: "HTTP/1.0 forwarded as 1.1", req: "GET /open/x HTTP/1.0\r\nHost: a\r\n\r\n", status: 200, target: "/open/x", host: "a", closeAft: true},
		{name: "client's close kept, not forwarded", req: "GET /open/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", status: 200, target: "/open/x", host: "a", closeAft: true},
		{name: "HTTP/2.0", req: "GET /open/x HTTP/2.0\r\nHost: a\r\n\r\n", status: 505, code: problems.CodeVersionNotSupported, closeAft: true},
		{name: "HTTP/1.2", req: "GET /open/x HTTP/1.2\r\nHost: a\r\n\r\n", status: 505, code: problems.CodeVersionNotSupported, closeAft: true},
		{name: "space in a header name", req: "GET /open/x HTTP/1.1\r\nHost: a\r\nX Tollgate-Tenant: evil\r\n\r\n", status: 400, code: problems.CodeInvalidFraming, closeAft: true},
		{name: "transfer-encoding identity", req: "POST /open/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\nGET /api/x HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, code: problems.CodeInvalidFraming, closeAft: true},
		{name: "connection names content-length", req: "POST /api/x HTTP/1.1\r\nHost: a\r\n" + key + "Connection: Content-Length\r\nContent-Length: 5\r\n\r\nhello", status: 400, code: problems.CodeInvalidFraming, closeAft: true},
		{name: "content-length and chunked", req: "POST /api/x HTTP/1.1\r\nHost: a\r\n" + key + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", status: 400, code: problems.CodeInvalidFraming, closeAft: true},
		{name: "bad chunk size", req: "POST /api/x HTTP/1.1\r\nHost: a\r\n" + key + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", status: 400, code: problems.CodeInvalidFraming, closeAft: true},
		{name: "huge chunk size", req: "POST /api/x HTTP/1.1\r\nHost: a\r\n" + key + "Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n", status: 400, code: problems.CodeInvalidFraming, closeAft: true},
		{name: "negative chunk size", req: "POST /api/x HTTP/1.1\r\nHost: a\r\n" + key + "Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", status: 400, code: problems.CodeInvalidFraming, closeAft: true},
		{name: "connect", req: "CONNECT public.test:443 HTTP/1.1\r\nHost: public.test:443\r\n\r\n", status: 405, code: problems.CodeMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.be.mu.Lock()
			h.be.last = nil
			h.be.mu.Unlock()
			conn := h.dial(t)
			if _, err := io.WriteString(conn, tt.req); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			resp := fasthttp.AcquireResponse()
			if err := resp.Read(br); err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			if tt.code != "" {
				checkProblem(t, resp, tt.status, tt.code)
			} else if resp.StatusCode() != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode(), tt.status, resp.Body())
			}
			h.be.mu.Lock()
			last := h.be.last
			h.be.mu.Unlock()
			switch {
			case tt.target == "" && last != nil:
				t.Errorf("the upstream received %s %s; want nothing", last.Method(), last.RequestURI())
			case tt.target != "" && last == nil:
				t.Errorf("the upstream received nothing; want %s", tt.target)
			case tt.target != "":
				if got := string(last.RequestURI()); got != tt.target {
					t.Errorf("upstream target %q, want %q", got, tt.target)
				}
				if got := string(last.Host()); got != tt.host {
					t.Errorf("upstream Host %q, want %q", got, tt.host)
				}
				if got := string(last.Protocol()); got != "HTTP/1.1" || last.ConnectionClose() {
					t.Errorf("upstream protocol %q, close %v; want HTTP/1.1 on a kept connection", got, last.ConnectionClose())
				}
			}
			if tt.closeAft {
				_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
				if n, err := br.ReadByte(); err != io.EOF {
					t.Errorf("after the answer: %q, %v; want the connection closed", n, err)
				}
			}
		})
	}
}

// TestOwnedHeadersEveryCopy: every copy of a header tollgate owns is
// replaced, in the head and in trailers, and a Connection header cannot
// remove one.
func TestOwnedHeadersEveryCopy(t *testing.T) {
	got := make(chan []byte, 4)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var req fasthttp.Request
				br := bufio.NewReader(c)
				var raw bytes.Buffer
				tee := bufio.NewReader(io.TeeReader(br, &raw))
				if err := req.Read(tee); err != nil {
					return
				}
				got <- raw.Bytes()
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
			}()
		}
	}()
	h := start(t, func(c *config.Config) {
		c.Routes = append(c.Routes, config.Route{PathPrefix: "/raw", Upstream: "http://" + ln.Addr().String(), Auth: []string{"api_key"}})
	}, proxy.Options{})
	tests := []struct {
		name, req string
		once      []string // header lines that must appear exactly once, as given
		absent    []string
	}{
		{
			name: "duplicates",
			req: "GET /raw/x HTTP/1.1\r\nHost: a\r\nX-API-Key: " + goodKey + "\r\n" +
				"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Host: evil\r\n" +
				"X-Forwarded-Proto: https\r\nx-forwarded-proto: https\r\nForwarded: for=6.6.6.6\r\n" +
				"X-Tollgate-Tenant: evil\r\nx-tollgate-tenant: evil\r\nX-Tollgate-Credential: evil\r\nX-Tollgate-Auth: evil\r\n" +
				"X-Tollgate-Scopes: evil\r\nX-Tollgate-User: evil\r\nx-tollgate-user-type: evil\r\n" +
				// Not hex: the request id tollgate makes cannot contain them.
				"X-Request-Id: req-one\r\nX-Request-Id: req-two\r\n\r\n",
			once: []string{"X-Forwarded-For: 127.0.0.1", "X-Forwarded-Host: a", "X-Forwarded-Proto: http", "X-Tollgate-Tenant: acme",
				"X-Tollgate-Credential: KEYID0000001", "X-Tollgate-Auth: api_key", "X-Tollgate-Scopes: CREATE READ UPDATE DELETE", "X-Request-Id: "},
			absent: []string{"6.6.6.6", "7.7.7.7", "evil", "req-one", "req-two", "Forwarded:", "X-Tollgate-User", goodKey},
		},
		{
			name:   "connection names owned headers",
			req:    "GET /raw/x HTTP/1.1\r\nHost: a\r\nX-API-Key: " + goodKey + "\r\nConnection: X-Request-Id, X-Tollgate-Tenant, X-Forwarded-For\r\nX-Request-Id: abc123\r\n\r\n",
			once:   []string{"X-Request-Id: abc123", "X-Tollgate-Tenant: acme", "X-Forwarded-For: 127.0.0.1"},
			absent: []string{"Connection: X-"},
		},
		{
			name: "trailers",
			req: "POST /raw/x HTTP/1.1\r\nHost: a\r\nX-API-Key: " + goodKey + "\r\nTrailer: X-Tollgate-Tenant, X-Evil\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"5\r\nhello\r\n0\r\nX-Tollgate-Tenant: evil\r\nX-Evil: 1\r\n\r\n",
			once:   []string{"X-Tollgate-Tenant: acme", "Content-Length: 5"},
			absent: []string{"evil", "X-Evil", "Trailer", "chunked"},
		},
		{
			// More names, and longer ones, than any fixed buffer: not one
			// reaches the upstream, in the trailer or moved into the head.
			name: "many trailers",
			req: "POST /raw/x HTTP/1.1\r\nHost: a\r\nX-API-Key: " + goodKey + "\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"5\r\nhello\r\n0\r\n" + manyTrailers() + "\r\n",
			once:   []string{"X-Tollgate-Tenant: acme", "Content-Length: 5"},
			absent: []string{"X-Smuggled", "evil"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.raw(t, tt.req)
			if resp.StatusCode() != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
			}
			var head []byte
			select {
			case head = <-got:
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream received nothing")
			}
			s := string(head)
			for _, line := range tt.once {
				if n := strings.Count(s, "\r\n"+line); n != 1 {
					t.Errorf("%q appears %d times upstream, want once:\n%s", line, n, s)
				}
			}
			lower := strings.ToLower(s)
			for _, bad := range tt.absent {
				if strings.Contains(lower, strings.ToLower(bad)) {
					t.Errorf("%q reached the upstream:\n%s", bad, s)
				}
			}
		})
	}
}

// TestRefusedBeforeContinue: what the head alone refuses is answered
// without "100 Continue" and without reading the body.
func TestRefusedBeforeContinue(t *testing.T) {
	h := start(t, nil, proxy.Options{})
	tests := []struct {
		name, req string
		status    int
		code      problems.Code
	}{
		{"no key", "POST /api/x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", 401, problems.CodeCredentialMissing},
		{"too large", "POST /api/x HTTP/1.1\r\nHost: a\r\nX-API-Key: " + goodKey + "\r\nExpect: 100-continue\r\nContent-Length: 20000000\r\n\r\n", 413, problems.CodeBodyTooLarge},
		{"no route", "POST /nowhere HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", 404, problems.CodeRouteNotFound},
		{"ambiguous path", "POST /open/../api HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", 400, problems.CodeAmbiguousPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.raw(t, tt.req)
			checkProblem(t, resp, tt.status, tt.code)
			if resp.Header.ConnectionClose() != true {
				t.Error("the connection is kept open after refusing an expected body")
			}
		})
	}
}

// TestBareLineFeedHead: a head ending in bare LFs is answered at once,
// not after the read timeout, whether it comes in one write or several.
func TestBareLineFeedHead(t *testing.T) {
	h := start(t, nil, proxy.Options{})
	for _, parts := range [][]string{
		{"GET /open/x HTTP/1.1\nHost: a\n\n"},
		{"GET /open/x HTTP/1.1\r\nHost: a\r\n\n"},
		{"GET /open/x HTTP/1.1\r\nHost: a\n", "\n"},
		{"GET /open/x HTTP/1.1\r\nHost: a\r", "\n", "\n"},
	} {
		conn := h.dial(t)
		for _, p := range parts {
			if _, err := io.WriteString(conn, p); err != nil {
				t.Fatal(err)
			}
			// Apart, so that the proxy reads the head in pieces: what is
			// tested.
			time.Sleep(20 * time.Millisecond)
		}
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		resp := fasthttp.AcquireResponse()
		if err := resp.Read(bufio.NewReader(conn)); err != nil {
			t.Fatalf("%q: %v (want an answer at once)", parts, err)
		}
		checkProblem(t, resp, 400, problems.CodeInvalidFraming)
	}
	// A body holding "\n\n" after a well-formed head is not a bare-LF head.
	resp := h.raw(t, "POST /open/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n\n\n\n\n")
	if resp.StatusCode() != 200 {
		t.Errorf("body with line feeds: %d %s", resp.StatusCode(), resp.Body())
	}
}

// TestRefundOnClientBodyFailure: a streamed body that breaks off after
// admission is the client's error and its quota is given back.
func TestRefundOnClientBodyFailure(t *testing.T) {
	var mu sync.Mutex
	refunded := int64(0)
	h := start(t, nil, proxy.Options{Refund: func(id access.Principal, cost int64, d access.Decision) {
		mu.Lock()
		refunded += cost
		mu.Unlock()
	}})
	conn := h.dial(t)
	io.WriteString(conn, "POST /api/x HTTP/1.1\r\nHost: a\r\nX-API-Key: "+goodKey+"\r\nTransfer-Encoding: chunked\r\n\r\n")
	chunk := "10000\r\n" + strings.Repeat("z", 0x10000) + "\r\n"
	io.WriteString(conn, chunk+chunk+"zz\r\n")
	resp := fasthttp.AcquireResponse()
	if err := resp.Read(bufio.NewReader(conn)); err != nil {
		t.Fatal(err)
	}
	checkProblem(t, resp, 400, problems.CodeInvalidFraming)
	mu.Lock()
	defer mu.Unlock()
	if refunded != 1 {
		t.Errorf("refunded %d, want 1", refunded)
	}
}

// lenientPath is how a permissive backend reads a path: percent-decoded,
// path parameters dropped, backslashes as slashes, slashes merged, dot
// segments resolved. A forwarded request must route the same way under
// this reading as under tollgate's.
func lenientPath(p string) string {
	if d, err := url.PathUnescape(p); err == nil {
		p = d
	}
	p = strings.ReplaceAll(p, "\\", "/")
	var segs []string
	for _, s := range strings.Split(p, "/") {
		if i := strings.IndexByte(s, ';'); i >= 0 {
			s = s[:i]
		}
		segs = append(segs, s)
	}
	return path.Clean("/" + strings.Join(segs, "/"))
}

// FuzzRequestHead sends arbitrary request heads through the proxy and
// checks the invariant of the canonical request: whatever reaches the
// upstream is authorized by the route it matches, read by tollgate's
// rules or by a permissive backend's, with the Host it was routed on.
func FuzzRequestHead(f *testing.F) {
	for _, s := range []string{
		"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /open/../api/x HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /open/%2e%2e/api/x HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /open%2f..%2fapi HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /open;/../api HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET //api HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://private.test/x HTTP/1.1\r\nHost: public.test\r\n\r\n",
		"GET http://public.test/x HTTP/1.1\r\nHost: private.test\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: public.test\r\nHost: private.test\r\n\r\n",
		"GET /x HTTP/1.0\r\nHost: PRIVATE.test.\r\n\r\n",
		"POST /open/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Tollgate-Tenant: acme\r\n\r\n",
		"GET /open/x HTTP/1.1\r\nHost: a\r\nX-Tollgate-Tenant: acme\r\nConnection: close\r\n\r\n",
		"GET /%61pi HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /api/x HTTP/1.1\r\nHost: a\r\nX-API-Key: " + goodKey + "\r\n\r\n",
	} {
		f.Add(s)
	}
	type seen struct {
		target, host, tenant string
	}
	var mu sync.Mutex
	var got []seen
	beLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	be := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		got = append(got, seen{string(ctx.Request.Header.RequestURI()), string(ctx.Request.Header.Host()),
			string(ctx.Request.Header.Peek("X-Tollgate-Tenant"))})
		mu.Unlock()
	}}
	go be.Serve(beLn)
	f.Cleanup(func() { be.Shutdown() })
	c := config.Default()
	c.Server.ReadTimeout = config.Duration(time.Second)
	c.Upstreams = map[string]config.Upstream{"be": {URL: "http://" + beLn.Addr().String()}}
	c.Routes = []config.Route{
		{PathPrefix: "/api", Upstream: "be", Auth: []string{"api_key"}},
		{PathPrefix: "/open", Upstream: "be"},
		{Host: "public.test", PathPrefix: "/", Upstream: "be"},
		{Host: "private.test", PathPrefix: "/", Upstream: "be", Auth: []string{"api_key"}},
	}
	if err := config.Validate(c); err != nil {
		f.Fatal(err)
	}
	p, err := proxy.New(c, proxy.Options{Authenticate: verify, Admit: admit})
	if err != nil {
		f.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	srv := p.Server(c)
	go srv.Serve(proxy.Listener(ln))
	f.Cleanup(func() { srv.Shutdown() })

	// protected says whether a permissive backend's route for host and
	// target needs a credential, and whether any route matches at all.
	protected := func(host, target string) (bool, bool) {
		if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
			host = host[:i]
		}
		host = strings.TrimRight(strings.ToLower(host), ".") // some backends drop every final dot
		p := target
		if i := strings.IndexByte(p, '?'); i >= 0 {
			p = p[:i]
		}
		p = lenientPath(p)
		switch host {
		case "public.test":
			return false, true
		case "private.test":
			return true, true
		}
		switch {
		case p == "/api" || strings.HasPrefix(p, "/api/"):
			return true, true
		case p == "/open" || strings.HasPrefix(p, "/open/"):
			return false, true
		}
		return false, false
	}

	f.Fuzz(func(t *testing.T, head string) {
		mu.Lock()
		got = got[:0]
		mu.Unlock()
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Skip(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
		_, _ = io.WriteString(conn, head)
		_ = conn.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, conn) // every answer, until tollgate closes
		mu.Lock()
		defer mu.Unlock()
		for _, g := range got {
			if strings.Contains(g.target, "..") || strings.Contains(g.target, "//") || strings.ContainsAny(g.target, "\\;") ||
				strings.Contains(strings.ToLower(g.target), "%2f") || strings.Contains(strings.ToLower(g.target), "%5c") {
				if i := strings.IndexByte(g.target, '?'); i < 0 || strings.Contains(g.target[:i], "..") || strings.Contains(g.target[:i], "//") ||
					strings.ContainsAny(g.target[:i], "\\;") || strings.Contains(strings.ToLower(g.target[:i]), "%2f") || strings.Contains(strings.ToLower(g.target[:i]), "%5c") {
					t.Fatalf("ambiguous path %q forwarded for %q", g.target, head)
				}
			}
			prot, ok := protected(g.host, g.target)
			if !ok {
				t.Fatalf("forwarded %q (Host %q), which no route matches, for %q", g.target, g.host, head)
			}
			if prot && g.tenant != "acme" {
				t.Fatalf("forwarded %q (Host %q) to a protected route without a verified credential, for %q", g.target, g.host, head)
			}
		}
	})
}

// syncBuffer is a bytes.Buffer safe for the access log's writer and the
// test reading it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAccessLogOfCutDownload: a streamed answer that the client does not
// take within server.write_timeout is logged when it ends, with its real
// duration and "complete":false; one taken whole is logged complete.
func TestAccessLogOfCutDownload(t *testing.T) {
	var out syncBuffer
	al := proxy.NewAccessLog(&out)
	h := start(t, func(c *config.Config) {
		c.Server.WriteTimeout = config.Duration(300 * time.Millisecond)
	}, proxy.Options{Access: al})
	conn := h.dial(t)
	io.WriteString(conn, "GET /open/big HTTP/1.1\r\nHost: a\r\n\r\n")
	// Read nothing: the 50 MiB answer fills the socket buffers and the
	// proxy's write times out.
	var line string
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		al.Flush()
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.Contains(l, `"path":"/open/big"`) {
				line = l
				return nil
			}
		}
		return fmt.Errorf("no access log line for the cut download; log:\n%s", out.String())
	})
	if !strings.Contains(line, `"complete":false`) || !strings.Contains(line, `"status":200`) {
		t.Errorf("cut download logged as %s; want status 200 and complete:false", line)
	}
	var entry struct {
		DurationMS float64 `json:"duration_ms"`
	}
	if err := json.Unmarshal([]byte(line), &entry); err != nil || entry.DurationMS < 250 {
		t.Errorf("cut download logged with duration %v ms (%v); want at least the write timeout", entry.DurationMS, err)
	}
	resp := h.raw(t, "GET /open/x HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode() != 200 {
		t.Fatal(resp.StatusCode())
	}
	al.Flush()
	if strings.Contains(out.String(), `"path":"/open/x","status":200,"complete":false`) {
		t.Errorf("a whole answer logged as incomplete:\n%s", out.String())
	}
}

// manyTrailers is a trailer section of 20 fields, one with a 100-byte name.
func manyTrailers() string {
	var b strings.Builder
	for i := 0; i < 19; i++ {
		fmt.Fprintf(&b, "X-Smuggled-%d: evil\r\n", i)
	}
	fmt.Fprintf(&b, "X-Smuggled-%s: evil\r\n", strings.Repeat("l", 89))
	return b.String()
}
