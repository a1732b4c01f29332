package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/echo"
)

// rawTimeout bounds every raw exchange with the proxy.
const rawTimeout = 5 * time.Second

// securityInstance is newInstance with the routes the security tests
// need: host routes, an unauthenticated /public, a pipelined upstream and
// a raw TCP backend that reports the bytes it receives.
func securityInstance(t *testing.T, echoAddr, rawAddr string) *instance {
	t.Helper()
	in := &instance{t: t, dir: t.TempDir(), proxy: freeAddr(t), admin: freeAddr(t)}
	in.config = filepath.Join(in.dir, "config.yaml")
	cfg := fmt.Sprintf(`listen: %s
admin: {listen: %s, token: "${E2E_ADMIN_TOKEN}"}
data_dir: %s
nats: {url: ""}
server: {read_timeout: 2s}
quota: {timezone: UTC, max_lease: 10}
plans:
  pro: {monthly_requests: 1000000}
upstreams:
  be: {url: "http://%[4]s"}
  piped: {url: "http://%[4]s", pipeline: {conns: 2}}
  raw: {url: "http://%[5]s"}
routes:
  - {host: public.test, path_prefix: /, upstream: be}
  - {host: private.test, path_prefix: /, upstream: be, auth: [api_key]}
  - {path_prefix: /, upstream: be, auth: [api_key]}
  - {path_prefix: /public, upstream: be}
  - {path_prefix: /piped, upstream: piped, auth: [api_key]}
  - {path_prefix: /raw, upstream: raw, auth: [api_key]}
`, in.proxy, in.admin, filepath.Join(in.dir, "data"), echoAddr, rawAddr)
	if err := os.WriteFile(in.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return in
}

// rawBackend is a minimal HTTP/1.1 backend that hands every request it
// receives, head and body bytes exactly as read, to got.
type rawBackend struct {
	addr string
	got  chan []byte
}

func startRawBackend(t *testing.T) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rb := &rawBackend{addr: ln.Addr().String(), got: make(chan []byte, 64)}
	var conns sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		conns.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
					req, err := readRawRequest(br)
					if err != nil {
						return
					}
					select {
					case rb.got <- req:
					default:
					}
					if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")); err != nil {
						return
					}
				}
			}()
		}
	}()
	return rb
}

// drain empties got before a request whose bytes a test will look at.
func (rb *rawBackend) drain() {
	for {
		select {
		case <-rb.got:
		default:
			return
		}
	}
}

// next returns the bytes of the next request the backend received.
func (rb *rawBackend) next(t *testing.T) []byte {
	t.Helper()
	select {
	case b := <-rb.got:
		return b
	case <-time.After(rawTimeout):
		t.Fatal("the raw backend received no request")
		return nil
	}
}

// readRawRequest reads one request, head and body (Content-Length or
// chunked with trailers), and returns its bytes.
func readRawRequest(br *bufio.Reader) ([]byte, error) {
	var buf bytes.Buffer
	cl, chunked := int64(0), false
	for first := true; ; first = false {
		line, err := br.ReadString('\n')
		buf.WriteString(line)
		if err != nil {
			return nil, err
		}
		l := strings.TrimRight(line, "\r\n")
		if l == "" {
			break
		}
		if first {
			continue
		}
		name, value, _ := strings.Cut(l, ":")
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "content-length":
			cl, _ = strconv.ParseInt(value, 10, 64)
		case "transfer-encoding":
			chunked = strings.EqualFold(value, "chunked")
		}
	}
	if !chunked {
		if _, err := io.CopyN(&buf, br, cl); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	for {
		line, err := br.ReadString('\n')
		buf.WriteString(line)
		if err != nil {
			return nil, err
		}
		size, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ";")
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("bad chunk size %q", line)
		}
		if n == 0 {
			for {
				line, err := br.ReadString('\n')
				buf.WriteString(line)
				if err != nil {
					return nil, err
				}
				if strings.TrimRight(line, "\r\n") == "" {
					return buf.Bytes(), nil
				}
			}
		}
		if _, err := io.CopyN(&buf, br, n+2); err != nil {
			return nil, err
		}
	}
}

// rawConn is a client connection to the proxy on which tests write bytes.
type rawConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, rawTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(rawTimeout))
	return &rawConn{c: c, br: bufio.NewReader(c)}
}

// answer is a response read from a raw connection.
type answer struct {
	status int
	header http.Header
	body   []byte
	err    error
}

func (a answer) String() string {
	if a.err != nil {
		return "error: " + a.err.Error()
	}
	return fmt.Sprintf("%d %s", a.status, a.body)
}

// code is the first problem code of a problems body, or "".
func (a answer) code() string {
	var body struct {
		OK       bool `json:"ok"`
		Status   int  `json:"status"`
		Problems []struct{ Level, Code, Field, Message string }
	}
	if json.Unmarshal(a.body, &body) != nil || body.OK || body.Status != a.status || len(body.Problems) == 0 {
		return ""
	}
	return body.Problems[0].Code
}

// echoed is the echo backend's reply in the body of a.
func (a answer) echoed(t *testing.T) echo.Reply {
	t.Helper()
	var r echo.Reply
	if err := json.Unmarshal(a.body, &r); err != nil {
		t.Fatalf("not an echo reply: %s", a)
	}
	return r
}

func (rc *rawConn) write(t *testing.T, s string) {
	t.Helper()
	if _, err := rc.c.Write([]byte(s)); err != nil {
		t.Fatalf("writing %q: %v", s, err)
	}
}

func (rc *rawConn) read() answer {
	_ = rc.c.SetReadDeadline(time.Now().Add(rawTimeout))
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

// send writes req on a fresh connection and reads one answer.
func send(t *testing.T, addr, req string) answer {
	t.Helper()
	rc := dialRaw(t, addr)
	defer rc.c.Close()
	rc.write(t, req)
	return rc.read()
}

// usedBy reads the tenant's usage through the admin API.
func usedBy(t *testing.T, in *instance, token, tenant string) int64 {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+in.admin+"/v1/tenants/"+tenant+"/usage", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: rawTimeout}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var u struct{ Used *int64 }
	if resp.StatusCode != 200 || json.Unmarshal(b, &u) != nil || u.Used == nil {
		t.Fatalf("usage of %s: %d %s", tenant, resp.StatusCode, b)
	}
	return *u.Used
}

// headerLines returns the values of the header lines named name in a raw
// request head.
func headerLines(raw []byte, name string) []string {
	head, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	var out []string
	for i, l := range strings.Split(string(head), "\r\n") {
		if i == 0 {
			continue
		}
		n, v, ok := strings.Cut(l, ":")
		if ok && strings.EqualFold(strings.TrimSpace(n), name) {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

// TestSecurity sends hostile raw requests to one tollgate and checks that
// what it authorizes is what it forwards, and that malformed input is
// refused before it reaches a backend or the quota.
func TestSecurity(t *testing.T) {
	raw := startRawBackend(t)
	in := securityInstance(t, backend(t), raw.addr)
	in.start()
	m := tokenRE.FindStringSubmatch(in.logs())
	if m == nil {
		t.Fatalf("serve printed no admin token:\n%s", in.logs())
	}
	token := m[1]
	key := newTenantKey(t, in, token, "acme")
	proxy := in.proxy

	t.Run("PathBypass", func(t *testing.T) {
		for _, target := range []string{
			"/api/../public/x", "/api/..%2fpublic/x", "/api/%2e%2e/public/x", "/api%2f..%2fpublic/x",
			"/public/../api/x", "//api/x", "/public;x/../api", `/public\..\api`,
		} {
			req := "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
			if a := send(t, proxy, req); a.status != 400 || a.code() != "ambiguous_path" {
				t.Errorf("%q: got %s, want 400 ambiguous_path", req, a)
			}
		}
		req := "GET /public/%61bc HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
		if a := send(t, proxy, req); a.status != 200 {
			t.Errorf("%q: got %s, want 200", req, a)
		} else if p := a.echoed(t).Path; p != "/public/abc" {
			t.Errorf("%q: backend path %q, want /public/abc", req, p)
		}
		// With a key: refused, and not counted.
		k := newTenantKey(t, in, token, "bypass")
		req = "GET /api/%2e%2e/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: " + k + "\r\n\r\n"
		if a := send(t, proxy, req); a.status != 400 || a.code() != "ambiguous_path" {
			t.Errorf("GET /api/%%2e%%2e/x with a key: got %s, want 400 ambiguous_path", a)
		}
		if used := usedBy(t, in, token, "bypass"); used != 0 {
			t.Errorf("usage after refused requests: %d, want 0", used)
		}
	})

	t.Run("AbsoluteFormHost", func(t *testing.T) {
		req := "GET http://private.test/secret HTTP/1.1\r\nHost: public.test\r\n\r\n"
		if a := send(t, proxy, req); a.status != 401 || a.code() != "credential_missing" {
			t.Errorf("%q: got %s, want 401 credential_missing", req, a)
		}
		req = "GET http://private.test/secret HTTP/1.1\r\nHost: public.test\r\nX-API-Key: " + key + "\r\n\r\n"
		if a := send(t, proxy, req); a.status != 200 {
			t.Errorf("absolute private.test, Host public.test, with key: got %s, want 200", a)
		} else if h := a.echoed(t).Headers["Host"]; h != "private.test" {
			t.Errorf("absolute private.test, Host public.test, with key: backend Host %q, want private.test", h)
		}
		req = "GET http://public.test/x HTTP/1.1\r\nHost: private.test\r\n\r\n"
		if a := send(t, proxy, req); a.status != 200 {
			t.Errorf("%q: got %s, want 200", req, a)
		} else if h := a.echoed(t).Headers["Host"]; h != "public.test" {
			t.Errorf("%q: backend Host %q, want public.test", req, h)
		}
		req = "GET http://u@private.test/ HTTP/1.1\r\nHost: private.test\r\n\r\n"
		if a := send(t, proxy, req); a.status != 400 {
			t.Errorf("%q: got %s, want 400", req, a)
		}
	})

	t.Run("DuplicatedTrustedHeaders", func(t *testing.T) {
		dup := "X-API-Key: " + key + "\r\n" +
			"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\n" +
			"X-Forwarded-Host: evil\r\nX-Forwarded-Host: evil\r\n" +
			"X-Tollgate-Tenant: evil\r\nX-Tollgate-Tenant: evil\r\n" +
			"X-Request-Id: aaa\r\nX-Request-Id: bbb\r\n\r\n"
		a := send(t, proxy, "GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n"+dup)
		if a.status != 200 {
			t.Fatalf("duplicated headers to echo: got %s, want 200", a)
		}
		h := a.echoed(t).Headers
		if v := h["X-Forwarded-For"]; v != "127.0.0.1" {
			t.Errorf("echo X-Forwarded-For %q, want 127.0.0.1", v)
		}
		if v := h["X-Tollgate-Tenant"]; v != "acme" {
			t.Errorf("echo X-Tollgate-Tenant %q, want acme", v)
		}
		if v := h["X-Forwarded-Host"]; v == "evil" {
			t.Errorf("echo X-Forwarded-Host %q, want not evil", v)
		}
		if v := h["X-Request-Id"]; v == "aaa" || v == "bbb" || strings.Contains(v, ",") || v == "" {
			t.Errorf("echo X-Request-Id %q, want a single id that is neither aaa nor bbb", v)
		}

		raw.drain()
		a = send(t, proxy, "GET /raw/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"+dup)
		if a.status != 200 {
			t.Fatalf("duplicated headers to the raw backend: got %s, want 200", a)
		}
		got := raw.next(t)
		for name, check := range map[string]func(string) bool{
			"X-Forwarded-For":   func(v string) bool { return v == "127.0.0.1" },
			"X-Tollgate-Tenant": func(v string) bool { return v == "acme" },
			"X-Request-Id":      func(v string) bool { return v != "aaa" && v != "bbb" && !strings.Contains(v, ",") },
		} {
			if vs := headerLines(got, name); len(vs) != 1 || !check(vs[0]) {
				t.Errorf("raw backend got %s lines %q, want exactly one good one; request:\n%s", name, vs, got)
			}
		}
		for _, v := range headerLines(got, "X-Forwarded-Host") {
			if v == "evil" {
				t.Errorf("raw backend got X-Forwarded-Host: evil; request:\n%s", got)
			}
		}

		// Trailers are not forwarded as headers, nor at all.
		raw.drain()
		req := "POST /raw/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: " + key + "\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"5\r\nhello\r\n0\r\nX-Tollgate-Tenant: evil\r\nX-Evil: 1\r\n\r\n"
		if a := send(t, proxy, req); a.status != 200 {
			t.Fatalf("chunked POST with trailers: got %s, want 200", a)
		}
		got = raw.next(t)
		if bytes.Contains(bytes.ToLower(got), []byte("evil")) {
			t.Errorf("the raw backend received trailer content:\n%s", got)
		}
		if !bytes.Contains(got, []byte("hello")) {
			t.Errorf("the raw backend did not receive the body:\n%s", got)
		}
	})

	t.Run("FramingErrors", func(t *testing.T) {
		k := newTenantKey(t, in, token, "framing")
		head := "POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: " + k + "\r\n"
		ok2xx := 0
		count := func(a answer) {
			if a.err == nil && a.status/100 == 2 {
				ok2xx++
			}
		}
		for _, size := range []string{"zz", "ffffffffffffffffff", "-5"} {
			a := send(t, proxy, head+"Transfer-Encoding: chunked\r\n\r\n"+size+"\r\nhello\r\n0\r\n\r\n")
			count(a)
			if a.status != 400 || a.code() != "invalid_framing" {
				t.Errorf("chunk size %q: got %s, want 400 invalid_framing", size, a)
			}
		}

		rc := dialRaw(t, proxy)
		rc.write(t, head+"Transfer-Encoding: identity\r\n\r\nhello")
		a := rc.read()
		count(a)
		if a.status != 400 {
			t.Errorf("Transfer-Encoding: identity: got %s, want 400", a)
		}
		if a.err == nil {
			_ = rc.c.SetReadDeadline(time.Now().Add(2 * time.Second))
			var one [1]byte
			n, err := rc.br.Read(one[:])
			var ne net.Error
			switch {
			case errors.Is(err, io.EOF):
			case errors.Is(err, syscall.ECONNRESET):
				t.Logf("Transfer-Encoding: identity: closed with a reset, not a FIN")
			case errors.As(err, &ne) && ne.Timeout():
				t.Errorf("Transfer-Encoding: identity: the connection stayed open after the 400, want closed")
			default:
				t.Errorf("Transfer-Encoding: identity: read after the answer: %d bytes %q, %v; want EOF", n, one[:n], err)
			}
		}
		rc.c.Close()

		a = send(t, proxy, head+"Connection: Content-Length\r\nContent-Length: 5\r\n\r\nhello")
		count(a)
		if a.status != 400 {
			t.Errorf("Connection: Content-Length: got %s, want 400", a)
		}

		if a := send(t, proxy, "GET /x HTTP/1.0\r\n\r\n"); a.status != 400 || a.code() != "invalid_host" {
			t.Errorf("GET /x HTTP/1.0 without Host: got %s, want 400 invalid_host", a)
		}

		// A body that stalls: 408 after read_timeout (2s).
		rc = dialRaw(t, proxy)
		rc.write(t, head+"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		start := time.Now()
		_ = rc.c.SetDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(rc.br, nil)
		took := time.Since(start)
		if err != nil {
			t.Errorf("stalled chunked body: %v after %v, want 408 within ~4s", err, took.Round(time.Millisecond))
		} else {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			sa := answer{status: resp.StatusCode, header: resp.Header, body: b}
			count(sa)
			t.Logf("stalled chunked body answered %d after %v", sa.status, took.Round(time.Millisecond))
			if sa.status != 408 || took > 4500*time.Millisecond {
				t.Errorf("stalled chunked body: got %s after %v, want 408 within ~4s", sa, took.Round(time.Millisecond))
			}
		}
		rc.c.Close()

		if used := usedBy(t, in, token, "framing"); used != int64(ok2xx) {
			t.Errorf("usage after the framing errors: %d, want %d (the 2xx answers)", used, ok2xx)
		}
	})

	t.Run("PipelinePoisoning", func(t *testing.T) {
		client := &http.Client{Timeout: rawTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 8, MaxConnsPerHost: 8}}
		defer client.CloseIdleConnections()
		var failed atomic.Int64
		var mu sync.Mutex
		var samples []string
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 50; i++ {
					// A bodiless POST is pipelined and, not being idempotent,
					// never retried: a broken shared connection fails it.
					req, _ := http.NewRequest("POST", "http://"+proxy+"/piped/x", nil)
					req.Header.Set("X-API-Key", key)
					resp, err := client.Do(req)
					msg := ""
					if err != nil {
						msg = err.Error()
					} else {
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						var r echo.Reply
						if resp.StatusCode != 200 || json.Unmarshal(b, &r) != nil || r.Path != "/piped/x" {
							msg = fmt.Sprintf("%d %s", resp.StatusCode, b)
						}
					}
					if msg != "" {
						failed.Add(1)
						mu.Lock()
						if len(samples) < 5 {
							samples = append(samples, msg)
						}
						mu.Unlock()
					}
				}
			}()
		}
		bad := []string{
			"GET /piped/x HTTP/1.0\r\n\r\n",
			"GET /piped/x HTTP/1.0\r\nHost: x\r\nX-API-Key: " + key + "\r\n\r\n",
			"POST /piped/x HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key + "\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello",
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				for _, req := range bad {
					c, err := net.DialTimeout("tcp", proxy, rawTimeout)
					if err != nil {
						continue
					}
					_ = c.SetDeadline(time.Now().Add(rawTimeout))
					_, _ = c.Write([]byte(req))
					if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					c.Close()
				}
			}
		}()
		wg.Wait()
		if n := failed.Load(); n != 0 {
			t.Errorf("%d of 400 good pipelined requests failed; first: %q", n, samples)
		}
	})

	t.Run("BareLFHead", func(t *testing.T) {
		rc := dialRaw(t, proxy)
		start := time.Now()
		rc.write(t, "GET /public/x HTTP/1.1\nHost: x\n\n")
		a := rc.read()
		took := time.Since(start)
		if a.status != 400 || took > time.Second {
			t.Errorf("head ending in bare LF: got %s after %v, want 400 within 1s", a, took.Round(time.Millisecond))
		}
	})

	t.Run("HeaderNameWithSpace", func(t *testing.T) {
		req := "GET /public/x HTTP/1.1\r\nHost: x\r\nX Foo: 1\r\n\r\n"
		if a := send(t, proxy, req); a.status != 400 {
			t.Errorf("%q: got %s, want 400", req, a)
		}
	})

	t.Run("UnsupportedVersion", func(t *testing.T) {
		for _, v := range []string{"HTTP/2.0", "HTTP/1.2"} {
			req := "GET /public/x " + v + "\r\nHost: x\r\n\r\n"
			if a := send(t, proxy, req); a.status != 505 {
				t.Errorf("%q: got %s, want 505", req, a)
			}
		}
	})

	t.Run("ExpectContinueRefusedFirst", func(t *testing.T) {
		req := "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
		if a := send(t, proxy, req); a.status != 401 {
			t.Errorf("%q: first answer %s, want 401 (no 100 Continue)", req, a)
		}
		req = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: " + key + "\r\nExpect: 100-continue\r\nContent-Length: 20000000\r\n\r\n"
		if a := send(t, proxy, req); a.status != 413 {
			t.Errorf("Expect: 100-continue, Content-Length: 20000000, with key: first answer %s, want 413 (no 100 Continue)", a)
		}
	})

	t.Run("ConnectionNamesRequestID", func(t *testing.T) {
		req := "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: " + key + "\r\nConnection: X-Request-Id\r\nX-Request-Id: abc123\r\n\r\n"
		a := send(t, proxy, req)
		if a.status != 200 {
			t.Fatalf("Connection: X-Request-Id: got %s, want 200", a)
		}
		if v := a.echoed(t).Headers["X-Request-Id"]; v != "abc123" {
			t.Errorf("Connection: X-Request-Id, X-Request-Id: abc123: backend saw X-Request-Id %q, want abc123", v)
		}
	})

	t.Run("UnparseableRequestLog", func(t *testing.T) {
		from := len(in.logs())
		if a := send(t, proxy, "GET\r\n\r\n"); a.status != 400 {
			t.Errorf(`"GET\r\n\r\n": got %s, want 400`, a)
		}
		var lines []string
		checkFor(t, 2*time.Second, 50*time.Millisecond, func() error {
			lines = lines[:0]
			for _, l := range strings.Split(in.logs()[from:], "\n") {
				if strings.Contains(l, `"logger":"access"`) && strings.Contains(l, `"status":400`) {
					lines = append(lines, l)
				}
			}
			if len(lines) == 0 {
				return fmt.Errorf("no access log line for the unparseable request:\n%s", in.logs()[from:])
			}
			return nil
		})
		for _, l := range lines {
			if strings.Contains(l, `"method":"GET","path":"/"`) {
				t.Errorf("the access log invents a request for unparseable input: %s", l)
			}
		}
	})

	t.Run("TooLargeReadableWhileSending", func(t *testing.T) {
		rc := dialRaw(t, proxy)
		rc.write(t, "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: "+key+"\r\nContent-Length: 20000000\r\n\r\n")
		// A client writes its body before it reads; most stop at a
		// failed write. A server that closes at once with unread data
		// resets the connection: the client's writes then fail.
		done := make(chan error, 1)
		go func() {
			chunk := bytes.Repeat([]byte("x"), 32<<10)
			for sent := 0; sent < 6<<20; sent += len(chunk) {
				if _, err := rc.c.Write(chunk); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		if err := <-done; err != nil {
			t.Errorf("sending 6 MiB of a 20 MB body after the answer: %v; want the server to read and drop it", err)
		}
		a := rc.read()
		if a.err != nil || a.status != 413 {
			t.Errorf("Content-Length: 20000000 after 6 MiB were sent: got %s, want 413", a)
		}
		rc.c.Close()
	})

	t.Run("AdminBody", func(t *testing.T) {
		post := func(body []byte) (int, string) {
			req, _ := http.NewRequest("POST", "http://"+in.admin+"/v1/tenants", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := (&http.Client{Timeout: rawTimeout}).Do(req)
			if err != nil {
				return 0, err.Error()
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		big := []byte(`{"id":"big","plan":"pro"}`)
		big = append(big, bytes.Repeat([]byte(" "), 1<<20+1-len(big))...)
		if st, b := post(big); st != 413 {
			t.Errorf("POST /v1/tenants with a 1 MiB + 1 byte body: got %d %s, want 413", st, b)
		}
		if st, b := post([]byte(`{"id":"zz","plan":"pro"}{"x":1}`)); st != 400 {
			t.Errorf(`POST /v1/tenants {"id":"zz","plan":"pro"}{"x":1}: got %d %s, want 400`, st, b)
		}
	})
}
