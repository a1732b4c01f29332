package admin_test

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/admin"
	"github.com/tollgate/tollgate/internal/problems"
)

type refusal struct{ problems []string }

func (r *refusal) Error() string            { return "refused: " + strings.Join(r.problems, "; ") }
func (r *refusal) ReloadProblems() []string { return r.problems }

// POST /v1/reload calls Options.Reload: a refusal is a 422 naming each
// problem, another error a 500; without Reload the endpoint is absent.
func TestReload(t *testing.T) {
	const token = "tga_test_token_0123456789"
	tests := []struct {
		name     string
		reload   func() error
		status   int
		body     string   // exact, for a success
		problems []string // messages, for a refusal
	}{
		{name: "reloaded", reload: func() error { return nil }, status: 200, body: `{"ok":true,"reloaded":true}` + "\n"},
		{name: "refused", reload: func() error { return &refusal{[]string{"listen: cannot change", "routes[0].upstream: bad"}} },
			status: 422, problems: []string{"listen: cannot change", "routes[0].upstream: bad"}},
		{name: "refused, wrapped", reload: func() error { return fmt.Errorf("reload: %w", &refusal{[]string{"x"}}) },
			status: 422, problems: []string{"x"}},
		{name: "failed", reload: func() error { return errors.New("boom") }, status: 500},
		{name: "not served", status: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := admin.New(admin.Options{TokenDigest: sha256.Sum256([]byte(token)), Reload: tt.reload})
			req := httptest.NewRequest("POST", "/v1/reload", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			rec := httptest.NewRecorder()
			a.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			if tt.body != "" && rec.Body.String() != tt.body {
				t.Errorf("body %q, want %q", rec.Body, tt.body)
			}
			if tt.problems == nil {
				return
			}
			var pb problems.Body
			if err := json.Unmarshal(rec.Body.Bytes(), &pb); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range pb.Problems {
				if p.Code != problems.CodeInvalidField || p.Field != "config" {
					t.Errorf("problem %+v, want code %s on field config", p, problems.CodeInvalidField)
				}
				got = append(got, p.Message)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.problems) {
				t.Errorf("problems %q, want %q", got, tt.problems)
			}
		})
	}
}
