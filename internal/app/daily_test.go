package app_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
)

// TestDailyUsageEndpoint: GET /v1/tenants/{id}/usage/daily answers every
// day of the range, today's count moves with requests and adds up with the
// month's usage, and bad ranges are a 400 naming the field.
func TestDailyUsageEndpoint(t *testing.T) {
	r := startApp(t, t.TempDir(), func(c *config.Config) {})
	key := r.newKey(t, "acme", "pro")
	for i := range 7 {
		if resp := call(t, r, "GET", "/x", key, ""); resp.StatusCode() != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode(), resp.Body())
		}
	}
	today := time.Now().UTC()
	from := today.AddDate(0, 0, -2).Format("2006-01-02")
	var d struct {
		Tenant, From, To string
		Days             []struct {
			Date string
			Used int64
		}
	}
	if s := r.admin(t, "GET", "/v1/tenants/acme/usage/daily?from="+from+"&to="+today.Format("2006-01-02"), "", &d); s != 200 {
		t.Fatalf("daily: %d", s)
	}
	if d.Tenant != "acme" || len(d.Days) != 3 || d.Days[0].Date != from || d.Days[2].Date != today.Format("2006-01-02") {
		t.Fatalf("daily answer %+v", d)
	}
	var u struct{ Used int64 }
	r.admin(t, "GET", "/v1/tenants/acme/usage", "", &u)
	if d.Days[2].Used != 7 || u.Used != 7 {
		t.Errorf("today %d, month %d: want 7 requests on both", d.Days[2].Used, u.Used)
	}
	// The default range: the previous period's first day to today.
	if s := r.admin(t, "GET", "/v1/tenants/acme/usage/daily", "", &d); s != 200 || d.To != today.Format("2006-01-02") || !strings.HasSuffix(d.From, "-01") {
		t.Errorf("default range: %d %s..%s", s, d.From, d.To)
	}
	for q, field := range map[string]string{
		"?from=yesterday":                 "from",
		"?from=2026-11-01&to=2026-10-01":  "to",
		"?from=2020-01-01&to=2026-11-30":  "from",
		"?from=2026-11-01&to=2026-11-31x": "to",
	} {
		var p struct {
			Problems []struct{ Field string }
		}
		if s := r.admin(t, "GET", "/v1/tenants/acme/usage/daily"+q, "", &p); s != 400 || len(p.Problems) != 1 || p.Problems[0].Field != field {
			t.Errorf("%s: %d %+v: want 400 naming %s", q, s, p, field)
		}
	}
	if s := r.admin(t, "GET", "/v1/tenants/nobody/usage/daily", "", nil); s != 404 {
		t.Errorf("unknown tenant: %d", s)
	}
}
