package admin_test

import (
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/admin"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

const decodeToken = "tga_test_token_0123456789"

// startAdmin serves the admin API over HTTP against a real embedded NATS.
func startAdmin(t *testing.T) *httptest.Server {
	t.Helper()
	cfg := &config.Config{Plans: map[string]config.Plan{"pro": {MonthlyRequests: 1000}}}
	a := admin.New(admin.Options{
		Store:         storetest.Open(t),
		Tenants:       store.NewTenantMirror(),
		LimitRequests: store.NewJSONMirror[store.LimitRequest](),
		Config:        func() *config.Config { return cfg },
		TokenDigest:   sha256.Sum256([]byte(decodeToken)),
	})
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return srv
}

// pad returns s followed by spaces up to n bytes.
func pad(s string, n int) string { return s + strings.Repeat(" ", n-len(s)) }

// The JSON body is one value of at most 1 MiB: larger bodies answer 413,
// data after the value 400, both in the problems shape; whitespace after
// the value is fine.
func TestDecodeBody(t *testing.T) {
	const limit = 1 << 20
	srv := startAdmin(t)
	tests := []struct {
		name      string
		body      string
		status    int
		code      problems.Code
		field     string
		inMessage string
	}{
		{name: "one value", body: `{"id":"t1","plan":"pro"}`, status: 201},
		{name: "trailing whitespace", body: "{\"id\":\"t2\",\"plan\":\"pro\"} \n\t\r\n ", status: 201},
		{name: "exactly 1 MiB", body: pad(`{"id":"t3","plan":"pro"}`, limit), status: 201},
		{name: "second value", body: `{"id":"a","plan":"pro"}{"x":1}`, status: 400,
			code: problems.CodeInvalidField, field: "body", inMessage: "after the JSON value"},
		{name: "trailing garbage", body: `{"id":"a","plan":"pro"} garbage`, status: 400,
			code: problems.CodeInvalidField, field: "body", inMessage: "after the JSON value"},
		{name: "value over 1 MiB", body: `{"id":"a","plan":"` + strings.Repeat("p", limit+1-len(`{"id":"a","plan":""}`)) + `"}`,
			status: 413, code: problems.CodeBodyTooLarge, field: "body", inMessage: "1048576 bytes"},
		{name: "whitespace past 1 MiB", body: pad(`{"id":"a","plan":"pro"}`, limit+1), status: 413,
			code: problems.CodeBodyTooLarge, field: "body", inMessage: "1048576 bytes"},
		{name: "empty", body: "", status: 400,
			code: problems.CodeInvalidField, field: "body", inMessage: "a JSON body is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if strings.Contains(tt.name, "1 MiB") {
				want := limit
				if tt.status == 413 {
					want = limit + 1
				}
				if len(tt.body) != want {
					t.Fatalf("body is %d bytes, want %d", len(tt.body), want)
				}
			}
			req, err := http.NewRequest("POST", srv.URL+"/v1/tenants", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+decodeToken)
			req.Header.Set("Content-Type", "application/json")
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tt.status, b)
			}
			if tt.status < 400 {
				return
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			var pb problems.Body
			if err := json.Unmarshal(b, &pb); err != nil {
				t.Fatalf("not a problems body: %v: %s", err, b)
			}
			if pb.OK || pb.Status != tt.status || len(pb.Problems) != 1 {
				t.Fatalf("body %s, want ok false, status %d, one problem", b, tt.status)
			}
			p := pb.Problems[0]
			if p.Code != tt.code || p.Field != tt.field || !strings.Contains(p.Message, tt.inMessage) {
				t.Errorf("problem %+v, want code %q field %q message containing %q", p, tt.code, tt.field, tt.inMessage)
			}
		})
	}
}
