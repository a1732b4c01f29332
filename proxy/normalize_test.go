package proxy_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/proxy"
	"github.com/valyala/fasthttp"
)

type upstreamError struct {
	status int
	ctype  string
	enc    string
	body   []byte
}

func gz(s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	io.WriteString(w, s)
	w.Close()
	return b.Bytes()
}

// errorBackend answers /e/<name> with the named upstream error.
func errorBackend(t *testing.T, cases map[string]upstreamError) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		c, ok := cases[strings.TrimPrefix(string(ctx.Path()), "/e/")]
		if !ok {
			ctx.SetStatusCode(200)
			ctx.SetBodyString("fine")
			return
		}
		ctx.SetStatusCode(c.status)
		if c.ctype != "" {
			ctx.SetContentType(c.ctype)
		}
		if c.enc != "" {
			ctx.Response.Header.Set("Content-Encoding", c.enc)
		}
		ctx.Response.Header.Set("ETag", `"abc"`)
		ctx.SetBody(c.body)
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return "http://" + ln.Addr().String()
}

func TestUpstreamErrorsAreNormalized(t *testing.T) {
	already := `{"ok":false,"status":409,"problems":[{"level":"WARNING","field":"name","message":"taken"}]}`
	cases := map[string]upstreamError{
		"html":    {502, "text/html", "", []byte("<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>")},
		"errors":  {422, "application/json", "", []byte(`{"errors":[{"field":"email","message":"is invalid"},"name is required"]}`)},
		"rfc9457": {400, "application/problem+json", "", []byte(`{"type":"about:blank","title":"Bad Request","status":400,"detail":"amount must be positive"}`)},
		"text":    {503, "text/plain", "", []byte("  database   is down\n")},
		"gzip":    {500, "application/json", "gzip", gz(`{"error":"boom","message":"it broke"}`)},
		"already": {409, "application/json", "", []byte(already)},
		"huge":    {500, "text/plain", "", bytes.Repeat([]byte("x"), 1<<20)},
	}
	up := errorBackend(t, cases)
	h := start(t, func(c *config.Config) {
		f := false
		c.Routes = append(c.Routes,
			config.Route{PathPrefix: "/n", Upstream: up, StripPrefix: true},
			config.Route{PathPrefix: "/raw", Upstream: up, StripPrefix: true, Errors: config.RouteErrors{Normalize: &f}},
			config.Route{PathPrefix: "/rfc", Upstream: up, StripPrefix: true, Errors: config.RouteErrors{Format: "rfc9457"}},
		)
	}, proxy.Options{})
	tests := []struct {
		path   string
		accept string
		status int
		want   []problems.Problem
		raw    string // exact body expected instead
		ctype  string
	}{
		{path: "/n/e/html", status: 502, want: []problems.Problem{{Level: "SEVERE", Code: "upstream_error", Message: "Bad Gateway"}}},
		{path: "/n/e/errors", status: 422, want: []problems.Problem{
			{Level: "SEVERE", Code: "upstream_error", Field: "email", Message: "is invalid"},
			{Level: "SEVERE", Code: "upstream_error", Message: "name is required"}}},
		{path: "/n/e/rfc9457", status: 400, want: []problems.Problem{{Level: "SEVERE", Code: "upstream_error", Message: "amount must be positive"}}},
		{path: "/n/e/text", status: 503, want: []problems.Problem{{Level: "SEVERE", Code: "upstream_error", Message: "database is down"}}},
		{path: "/n/e/gzip", status: 500, want: []problems.Problem{{Level: "SEVERE", Code: "upstream_error", Message: "it broke"}}},
		{path: "/n/e/already", status: 409, raw: already, ctype: "application/json"},
		{path: "/raw/e/text", status: 503, raw: "  database   is down\n", ctype: "text/plain"},
		{path: "/n/e/none", status: 200, raw: "fine"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp := h.do(t, "GET", tt.path, map[string]string{"Accept": tt.accept})
			if resp.StatusCode() != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode(), tt.status)
			}
			if tt.raw != "" {
				if string(resp.Body()) != tt.raw {
					t.Errorf("body = %q, want it unchanged: %q", resp.Body(), tt.raw)
				}
				if tt.ctype != "" && string(resp.Header.ContentType()) != tt.ctype {
					t.Errorf("Content-Type = %q, want %q", resp.Header.ContentType(), tt.ctype)
				}
				return
			}
			if ct := string(resp.Header.ContentType()); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			for _, h := range []string{"Content-Encoding", "ETag"} {
				if v := resp.Header.Peek(h); v != nil {
					t.Errorf("%s = %q left on a rewritten body", h, v)
				}
			}
			var body problems.Body
			if err := json.Unmarshal(resp.Body(), &body); err != nil {
				t.Fatalf("body %q: %v", resp.Body(), err)
			}
			if body.OK || body.Status != tt.status || fmt.Sprint(body.Problems) != fmt.Sprint(tt.want) {
				t.Errorf("body = %+v, want status %d problems %+v", body, tt.status, tt.want)
			}
		})
	}
	t.Run("huge body is read only up to the bound", func(t *testing.T) {
		resp := h.do(t, "GET", "/n/e/huge", nil)
		var body problems.Body
		if err := json.Unmarshal(resp.Body(), &body); err != nil || resp.StatusCode() != 500 || len(body.Problems) != 1 {
			t.Fatalf("%d %q", resp.StatusCode(), resp.Body())
		}
		if n := len(body.Problems[0].Message); n > 1100 {
			t.Errorf("message of %d bytes, want it cut", n)
		}
	})
	t.Run("problem+json by Accept", func(t *testing.T) {
		resp := h.do(t, "GET", "/n/e/text", map[string]string{"Accept": "application/problem+json"})
		checkRFC9457(t, resp, 503, "database is down")
	})
	t.Run("problem+json by route", func(t *testing.T) {
		checkRFC9457(t, h.do(t, "GET", "/rfc/e/html", nil), 502, "Bad Gateway")
	})
	t.Run("own errors as problem+json by Accept", func(t *testing.T) {
		checkRFC9457(t, h.do(t, "GET", "/api/x", map[string]string{"Accept": "application/problem+json"}), 401, "a credential is required")
	})
	t.Run("limit headers on a normalized error", func(t *testing.T) {
		// The /api route is authenticated: its upstream errors carry limits.
		resp := h.do(t, "GET", "/api/x", map[string]string{"X-API-Key": goodKey})
		if resp.StatusCode() != 200 || string(resp.Header.Peek("X-RateLimit-Limit")) != "16000" {
			t.Errorf("%d %q", resp.StatusCode(), resp.Header.Peek("X-RateLimit-Limit"))
		}
	})
}

func checkRFC9457(t *testing.T, resp *fasthttp.Response, status int, detail string) {
	t.Helper()
	if ct := string(resp.Header.ContentType()); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json", ct)
	}
	var pd struct {
		Type, Title, Detail string
		Status              int
		Problems            []problems.Problem
	}
	if err := json.Unmarshal(resp.Body(), &pd); err != nil {
		t.Fatalf("%q: %v", resp.Body(), err)
	}
	if pd.Status != status || pd.Detail != detail || pd.Title == "" || pd.Type == "" || len(pd.Problems) == 0 {
		t.Errorf("problem details = %+v, want status %d detail %q", pd, status, detail)
	}
}

func TestChunkedBodyOverLimit(t *testing.T) {
	h := start(t, nil, proxy.Options{})
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() {
		io.WriteString(conn, "POST /api/upload HTTP/1.1\r\nHost: x\r\nX-API-Key: "+goodKey+"\r\nTransfer-Encoding: chunked\r\n\r\n")
		chunk := fmt.Sprintf("%x\r\n%s\r\n", 64<<10, strings.Repeat("z", 64<<10))
		for i := 0; i < 40; i++ { // 2.5 MiB > the 1 MiB limit
			if _, err := io.WriteString(conn, chunk); err != nil {
				return
			}
		}
		io.WriteString(conn, "0\r\n\r\n")
	}()
	resp := fasthttp.AcquireResponse()
	if err := resp.Read(bufioReader(conn)); err != nil {
		t.Fatal(err)
	}
	checkProblem(t, resp, 413, problems.CodeBodyTooLarge)
}
