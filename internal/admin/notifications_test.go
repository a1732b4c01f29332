package admin_test

import (
	"crypto/sha256"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/admin"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/notify"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/internal/tenants"
)

type fakeNotifications []*notify.Record

func (f fakeNotifications) List(keep func(*notify.Record) bool) []*notify.Record {
	var out []*notify.Record
	for _, r := range f {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

const notifyToken = "tga_notifications_0123456789"

func TestListNotifications(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	recs := fakeNotifications{
		{Body: notify.Body{ID: "usage.acme.2026-12.80.200", Kind: notify.KindUsage, Tenant: "acme", Created: t0}, Status: notify.StatusDelivered},
		{Body: notify.Body{ID: "usage.acme.2026-12.100.200", Kind: notify.KindUsage, Tenant: "acme", Created: t0.Add(time.Minute)},
			Status: notify.StatusPending, Attempts: 2, LastError: "the receiver answered 500"},
		{Body: notify.Body{ID: "limit_request.lr_1.filed", Kind: notify.KindRequestFiled, Tenant: "globex", Created: t0.Add(2 * time.Minute)},
			Status: notify.StatusPending},
	}
	a := admin.New(admin.Options{TokenDigest: sha256.Sum256([]byte(notifyToken)), Notifications: recs})
	get := func(query string) (int, []byte) {
		req := httptest.NewRequest("GET", "/v1/notifications"+query, nil)
		req.Header.Set("Authorization", "Bearer "+notifyToken)
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, req)
		return rec.Code, rec.Body.Bytes()
	}
	for _, tt := range []struct {
		query string
		ids   []string
	}{
		{"", []string{"limit_request.lr_1.filed", "usage.acme.2026-12.100.200", "usage.acme.2026-12.80.200"}},
		{"?status=pending", []string{"limit_request.lr_1.filed", "usage.acme.2026-12.100.200"}},
		{"?status=pending&tenant=acme", []string{"usage.acme.2026-12.100.200"}},
		{"?status=delivered", []string{"usage.acme.2026-12.80.200"}},
		{"?kind=limit_request_filed", []string{"limit_request.lr_1.filed"}},
		{"?tenant=acme&desc=false", []string{"usage.acme.2026-12.80.200", "usage.acme.2026-12.100.200"}},
		{"?tenant=nobody", []string{}},
	} {
		t.Run(tt.query, func(t *testing.T) {
			code, body := get(tt.query)
			if code != 200 {
				t.Fatalf("status %d: %s", code, body)
			}
			var l tenants.List[notify.Record]
			if err := json.Unmarshal(body, &l); err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, r := range l.Items {
				ids = append(ids, r.ID)
			}
			if strings.Join(ids, ",") != strings.Join(tt.ids, ",") || l.Total != len(tt.ids) {
				t.Errorf("got %v (total %d), want %v", ids, l.Total, tt.ids)
			}
		})
	}
	for _, tt := range []struct{ query, field string }{
		{"?status=sent", "status"},
		{"?tenant=a.b", "tenant"},
		{"?kind=usage", "kind"},
		{"?orderBy=bogus", "orderBy"},
		{"?size=0", "size"},
	} {
		t.Run(tt.query, func(t *testing.T) {
			code, body := get(tt.query)
			var pb problems.Body
			if err := json.Unmarshal(body, &pb); err != nil || code != 400 || len(pb.Problems) != 1 || pb.Problems[0].Field != tt.field {
				t.Errorf("status %d, body %s: want 400 naming field %s", code, body, tt.field)
			}
		})
	}
}

// A plan's webhook secret is not shown by GET /v1/config; its URL and
// thresholds are.
func TestConfigRedactsNotifySecret(t *testing.T) {
	c, err := config.Parse(strings.NewReader(`plans:
  pro: {monthly_requests: 200, notify: {at: ["80%"], url: "https://billing.internal/hooks/tollgate", secret: "${HOOK_SECRET}"}}
routes:
  - {upstream: "http://127.0.0.1:3000"}
`), "c.yaml", func(string) string { return "whsec_s3cr3t_0123456789" })
	if err != nil {
		t.Fatal(err)
	}
	a := admin.New(admin.Options{TokenDigest: sha256.Sum256([]byte(notifyToken)), Config: func() *config.Config { return c }})
	code, body := getConfig(t, a, notifyToken)
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	if strings.Contains(body, "whsec_s3cr3t") {
		t.Errorf("the secret is shown: %s", body)
	}
	for _, want := range []string{"https://billing.internal/hooks/tollgate", `"80%"`, admin.Redacted} {
		if !strings.Contains(body, want) {
			t.Errorf("%s is not shown: %s", want, body)
		}
	}
}
