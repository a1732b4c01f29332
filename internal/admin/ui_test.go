package admin_test

import (
	"crypto/sha256"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/admin"
)

// The web page is served without the token, with headers that allow no
// script or style but its own files, no framing and no Referer.
func TestUIServesPage(t *testing.T) {
	a := admin.New(admin.Options{TokenDigest: sha256.Sum256([]byte("tga_test_token_0123456789"))})
	get := func(path string, hdr ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, req)
		return rec
	}
	if rec := get("/ui"); rec.Code != 301 || rec.Header().Get("Location") != "/ui/" {
		t.Errorf("/ui: %d Location %q, want 301 to /ui/", rec.Code, rec.Header().Get("Location"))
	}
	for _, tc := range []struct{ path, ctype, contains string }{
		{"/ui/", "text/html; charset=utf-8", `<script src="app.js" defer></script>`},
		{"/ui/index.html", "text/html; charset=utf-8", "<title>tollgate</title>"},
		{"/ui/app.js", "text/javascript; charset=utf-8", "sessionStorage"},
		{"/ui/app.css", "text/css; charset=utf-8", "svg.bar"},
		{"/ui/icon.svg", "image/svg+xml", "<svg"},
	} {
		rec := get(tc.path)
		if rec.Code != 200 || rec.Header().Get("Content-Type") != tc.ctype || !strings.Contains(rec.Body.String(), tc.contains) {
			t.Errorf("%s: %d %q, want 200 %q containing %q", tc.path, rec.Code, rec.Header().Get("Content-Type"), tc.ctype, tc.contains)
			continue
		}
		h := rec.Header()
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", tc.path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") || strings.Contains(csp, "http") {
			t.Errorf("%s: CSP %q allows inline code or another origin", tc.path, csp)
		}
		for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"} {
			if h.Get(k) != v {
				t.Errorf("%s: %s %q, want %q", tc.path, k, h.Get(k), v)
			}
		}
		// Revalidated by digest: an unchanged file is a 304.
		if etag := h.Get("ETag"); etag == "" {
			t.Errorf("%s: no ETag", tc.path)
		} else if rec := get(tc.path, "If-None-Match", etag); rec.Code != 304 {
			t.Errorf("%s with If-None-Match: %d, want 304", tc.path, rec.Code)
		}
	}
	if rec := get("/ui/nope.js"); rec.Code != 404 || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("/ui/nope.js: %d %q, want 404 in the problems shape", rec.Code, rec.Header().Get("Content-Type"))
	}
	// The API behind it still wants the token.
	if rec := get("/v1/tenants"); rec.Code != 401 {
		t.Errorf("/v1/tenants without the token: %d, want 401", rec.Code)
	}
}

// The page's files: nothing inline (the CSP would refuse it), nothing
// from another origin, and the token kept in sessionStorage only.
func TestUIAssetsRules(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile("ui/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	html := read("index.html")
	for _, re := range []string{`<script(?:\s[^>]*)?>\s*[^<\s]`, `<style`, `\sstyle=`, `\son[a-z]+=`, `https?://`, `javascript:`} {
		if m := regexp.MustCompile(re).FindString(html); m != "" {
			t.Errorf("index.html has %q (rule %s)", m, re)
		}
	}
	if regexp.MustCompile(`<input[^>]*id="token-input"[^>]*\sname=`).MatchString(html) {
		t.Error("the token input has a name: a form submission would carry it")
	}
	// The SVG namespace is a name, not a place anything is loaded from.
	js := strings.ReplaceAll(read("app.js"), "'http://www.w3.org/2000/svg'", "")
	for _, banned := range []string{"localStorage", "document.cookie", "console.", "innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function", "http://", "https://", ".style", "'style'"} {
		if strings.Contains(js, banned) {
			t.Errorf("app.js uses %q", banned)
		}
	}
	if strings.Count(js, "sessionStorage.setItem(") != 1 {
		t.Error("app.js should store the token in exactly one place, sessionStorage")
	}
	css := read("app.css")
	if strings.Contains(css, "@import") || strings.Contains(css, "url(") {
		t.Error("app.css loads something")
	}
}
