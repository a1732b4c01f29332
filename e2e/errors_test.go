package e2e

import (
	"encoding/json"
	"fmt"
	"testing"
)

// TestUpstreamErrorsThroughTheBinary: each class of backend error comes
// out of the real binary in the problems shape, with its messages and the
// limit headers.
func TestUpstreamErrorsThroughTheBinary(t *testing.T) {
	in := newInstance(t, backend(t), 1000)
	in.start()
	token := tokenRE.FindStringSubmatch(in.logs())[1]
	created := struct{ Key string }{newTenantKey(t, in, token, "acme")}
	type problem struct{ Level, Code, Field, Message string }
	tests := []struct {
		name   string
		status int
		want   []problem
	}{
		{"html", 502, []problem{{"SEVERE", "upstream_error", "", "Bad Gateway"}}},
		{"errors", 422, []problem{{"SEVERE", "upstream_error", "email", "is invalid"}, {"SEVERE", "upstream_error", "", "name is required"}}},
		{"problem", 400, []problem{{"SEVERE", "upstream_error", "", "amount must be positive"}}},
		{"text", 503, []problem{{"SEVERE", "upstream_error", "", "database is down"}}},
		{"gzip", 500, []problem{{"SEVERE", "upstream_error", "", "it broke"}}},
		{"spring", 404, []problem{{"SEVERE", "upstream_error", "", "Not Found"}}},
		{"problems", 409, []problem{{"WARNING", "", "name", "taken"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get(t, "http://"+in.proxy+"/error/"+tt.name, map[string]string{"X-API-Key": created.Key})
			if r.status != tt.status || r.header.Get("Content-Type") != "application/json" {
				t.Fatalf("%d %q: %s", r.status, r.header.Get("Content-Type"), r.body)
			}
			if r.header.Get("X-RateLimit-Limit") != "1000" || r.header.Get("Content-Encoding") != "" {
				t.Errorf("headers: limit %q, encoding %q", r.header.Get("X-RateLimit-Limit"), r.header.Get("Content-Encoding"))
			}
			var body struct {
				OK       bool
				Status   int
				Problems []problem
			}
			if err := json.Unmarshal(r.body, &body); err != nil {
				t.Fatalf("%s: %v", r.body, err)
			}
			if body.OK || body.Status != tt.status || fmt.Sprint(body.Problems) != fmt.Sprint(tt.want) {
				t.Errorf("body %s, want problems %v", r.body, tt.want)
			}
		})
	}
}
