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
	b.ReportAllocs()
	var buf [1024]byte
	for b.Loop() {
		if _, msg := checkHead(&req.Header); msg != "" {
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
	} {
		if got := validHost([]byte(h)); got != want {
			t.Errorf("validHost(%q) = %v, want %v", h, got, want)
		}
	}
}
