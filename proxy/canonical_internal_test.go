package proxy

import (
	"bufio"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkCanonicalHead measures what the canonical request adds to a
// typical request: the raw header scan, the host check and the path.
func BenchmarkCanonicalHead(b *testing.B) {
	const head = "GET /api/v1/invoices/12345?expand=lines HTTP/1.1\r\nHost: api.example.com\r\n" +
		"User-Agent: bench/1.0\r\nAccept: application/json\r\nX-API-Key: tg_abcdefghijkl_0123456789abcdef0123456789abcdefxyzxyz\r\n" +
		"Accept-Encoding: gzip\r\nX-Request-Id: 0123456789abcdef\r\n\r\n"
	var req fasthttp.Request
	if err := req.Read(bufio.NewReader(strings.NewReader(head))); err != nil {
		b.Fatal(err)
	}
	tab := &table{hReqID: []byte("X-Request-Id"), hTenant: []byte("X-Tollgate-Tenant"),
		hCred: []byte("X-Tollgate-Credential"), hAuth: []byte("X-Tollgate-Auth")}
	b.ReportAllocs()
	var buf [1024]byte
	for b.Loop() {
		if _, _, msg := tab.checkHead(&req.Header); msg != "" {
			b.Fatal(msg)
		}
		if !validHost(req.Header.Host()) {
			b.Fatal("host")
		}
		if _, why := canonicalPath(buf[:0], []byte("/api/v1/invoices/12345")); why != "" {
			b.Fatal(why)
		}
	}
}

func TestCanonicalPath(t *testing.T) {
	tests := []struct{ in, want, why string }{
		{"/", "/", ""},
		{"/a/b/", "/a/b/", ""},
		{"/%7Euser/%41%2d%5F", "/~user/A-_", ""},
		{"/a%2cb%3Bc", "/a%2Cb%3Bc", ""},
		{"/a%2e%2e", "/a..", ""},
		{"/a/..", "", "dot"},
		{"/a/%2E", "", "dot"},
		{"/a/%2e%2E/", "", "dot"},
		{"/a//b", "", "empty"},
		{"//", "", "empty"},
		{"/a%2fb", "", "encoded"},
		{"/a%5Cb", "", "encoded"},
		{"/a\\b", "", "'\\'"},
		{"/a;b", "", "';'"},
		{"/a%00", "", "control"},
		{"/a%", "", "malformed"},
		{"/a%4", "", "malformed"},
		{"/a%g0", "", "malformed"},
		{"/a\x80", "", "not allowed"},
		{"/a b", "", "not allowed"},
		{"a", "", "begin"},
	}
	for _, tt := range tests {
		got, why := canonicalPath(nil, []byte(tt.in))
		switch {
		case tt.why == "" && (why != "" || string(got) != tt.want):
			t.Errorf("canonicalPath(%q) = %q, %q; want %q", tt.in, got, why, tt.want)
		case tt.why != "" && !strings.Contains(why, tt.why):
			t.Errorf("canonicalPath(%q) refused with %q; want a reason with %q", tt.in, why, tt.why)
		}
	}
}

func TestValidHost(t *testing.T) {
	for h, want := range map[string]bool{
		"a": true, "example.com": true, "example.com:8080": true, "127.0.0.1:1": true, "[::1]": true, "[::1]:80": true,
		"": false, ":80": false, "a:": false, "a:123456": false, "a:8o": false, "u@a": false, "a/b": false, "a b": false,
		"[::1": false, "[]": false, "[g::1]": false, "a%20b": false, "a,b": false,
		"a.b.": true, "a.b.:80": true, "a..b": false, ".a": false, "a..": false, "a..:80": false, ".": false,
	} {
		if got := validHost([]byte(h)); got != want {
			t.Errorf("validHost(%q) = %v, want %v", h, got, want)
		}
	}
}

// FuzzRemoveHopHeaders: after removeHopHeaders no hop-by-hop header is
// left (but "Te: trailers"), nor any header a Connection line names, on
// any line and at any length, and headers nobody named are kept.
func FuzzRemoveHopHeaders(f *testing.F) {
	for _, s := range []string{
		"Connection: close\r\nX-A: 1\r\n",
		"Connection: X-A\r\nConnection: X-B, X-C\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\n",
		"Connection: keep-alive, " + strings.Repeat("X-Pad-", 60) + ", X-Late\r\nX-Late: 1\r\n",
		"Te: trailers\r\nKeep-Alive: 5\r\nUpgrade: h2c\r\nProxy-Authorization: x\r\n",
		"Te: gzip\r\nTrailer: X-A\r\nProxy-Connection: keep-alive\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, lines string) {
		var h fasthttp.RequestHeader
		if err := h.Read(bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\nHost: a\r\n" + lines + "\r\n"))); err != nil {
			return
		}
		var named []string
		for _, c := range h.PeekAll("Connection") {
			for _, tok := range strings.Split(string(c), ",") {
				if tok = strings.TrimSpace(tok); tok != "" && !strings.EqualFold(tok, "close") && !strings.EqualFold(tok, "keep-alive") {
					named = append(named, tok)
				}
			}
		}
		te := strings.EqualFold(strings.TrimSpace(string(h.Peek("Te"))), "trailers")
		var kept []string
		for k := range h.All() {
			if !isHopHeader(k) && !isNamed(named, string(k)) {
				kept = append(kept, string(k))
			}
		}
		removeHopHeaders(&h)
		for k, v := range h.All() {
			if isNamed(named, string(k)) && !(te && strings.EqualFold(string(k), "Te")) {
				t.Fatalf("%q: %s was named by Connection and kept", lines, k)
			}
			if isHopHeader(k) && !(strings.EqualFold(string(k), "Te") && string(v) == "trailers") {
				t.Fatalf("%q: hop-by-hop %s: %s kept", lines, k, v)
			}
		}
		for _, k := range kept {
			found := false
			for k2 := range h.All() {
				found = found || string(k2) == k
			}
			if !found {
				t.Fatalf("%q: %s removed though nothing named it", lines, k)
			}
		}
	})
}

func isNamed(named []string, k string) bool {
	for _, n := range named {
		if strings.EqualFold(n, k) {
			return true
		}
	}
	return false
}
