package admin_test

import (
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tollgate/tollgate/internal/admin"
)

// The profiles are served only when admin.pprof is on, and only with the
// admin token.
func TestPprofBehindToken(t *testing.T) {
	const token = "tga_test_token_0123456789"
	get := func(a *admin.API, auth string) int {
		req := httptest.NewRequest("GET", "/debug/pprof/", nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, req)
		return rec.Code
	}
	on := admin.New(admin.Options{TokenDigest: sha256.Sum256([]byte(token)), Pprof: true})
	if c := get(on, ""); c != http.StatusUnauthorized {
		t.Errorf("without the token: %d, want 401", c)
	}
	if c := get(on, "tga_wrong_token_0123456789"); c != http.StatusUnauthorized {
		t.Errorf("with a wrong token: %d, want 401", c)
	}
	if c := get(on, token); c != http.StatusOK {
		t.Errorf("with the token: %d, want 200", c)
	}
	off := admin.New(admin.Options{TokenDigest: sha256.Sum256([]byte(token))})
	if c := get(off, token); c != http.StatusNotFound {
		t.Errorf("admin.pprof off: %d, want 404", c)
	}
}
