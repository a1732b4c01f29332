package app_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/notify"
	"github.com/tollgate/tollgate/internal/poll"
)

// hookReceiver acknowledges webhooks whose signature is valid and keeps
// their bodies.
type hookReceiver struct {
	mu     sync.Mutex
	got    []notify.Body
	at     map[string]time.Time
	badSig int
}

func newHookReceiver(t *testing.T, secret string) (*hookReceiver, string) {
	h := &hookReceiver{at: map[string]time.Time{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		defer h.mu.Unlock()
		if notify.Verify(secret, r.Header.Get(notify.HeaderSignature), body, 5*time.Minute, time.Now()) != nil {
			h.badSig++
			w.WriteHeader(401)
			return
		}
		var b notify.Body
		_ = json.Unmarshal(body, &b)
		h.got = append(h.got, b)
		h.at[b.ID] = time.Now()
		w.WriteHeader(200)
	}))
	t.Cleanup(srv.Close)
	return h, srv.URL
}

func (h *hookReceiver) ids() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ids []string
	for _, b := range h.got {
		ids = append(ids, b.ID)
	}
	slices.Sort(ids)
	return ids
}

// Through the whole app: usage crosses 80% and 100% of a plan's limit,
// a limit request raises it (filed and decided at once), and the new
// limit's 80% is crossed again; each webhook once, signed, and listed by
// GET /v1/notifications.
func TestNotificationsThroughTheApp(t *testing.T) {
	const secret = "whsec_app_0123456789abcdef"
	h, url := newHookReceiver(t, secret)
	r := startApp(t, t.TempDir(), func(c *config.Config) {
		c.Plans["hooked"] = config.Plan{MonthlyRequests: 20, AutoApproveUpTo: 100,
			Notify: &config.Notify{At: []string{"80%", "100%"}, URL: url, Secret: secret}}
	})
	key := r.newKey(t, "acme", "hooked")
	for i := range 20 {
		if resp := call(t, r, "GET", "/x", key, ""); resp.StatusCode() != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode())
		}
	}
	crossed := time.Now()
	period := time.Now().UTC().Format("2006-01")
	want := []string{notify.UsageKey("acme", period, 100, 20), notify.UsageKey("acme", period, 80, 20)}
	poll.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := h.ids(); !slices.Equal(got, want) {
			return fmt.Errorf("received %v, want %v", got, want)
		}
		return nil
	})
	h.mu.Lock()
	t.Logf("100%% webhook %v after the 20th request", h.at[want[0]].Sub(crossed).Round(time.Millisecond))
	h.mu.Unlock()

	var lr struct{ ID, Status string }
	if s := r.admin(t, "POST", "/v1/tenants/acme/limit-requests", `{"requested": 50}`, &lr); s != 201 || lr.Status != "granted" {
		t.Fatalf("limit request: %d %+v", s, lr)
	}
	for i := range 20 {
		if resp := call(t, r, "GET", "/x", key, ""); resp.StatusCode() != 200 {
			t.Fatalf("request %d after the grant: %d", 20+i, resp.StatusCode())
		}
	}
	want = append(want, notify.RequestKey(lr.ID, "decided"), notify.RequestKey(lr.ID, "filed"), notify.UsageKey("acme", period, 80, 50))
	slices.Sort(want)
	poll.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := h.ids(); !slices.Equal(got, want) {
			return fmt.Errorf("received %v, want %v", got, want)
		}
		return nil
	})
	// One above auto-approval waits for an admin: filed now, decided
	// when approved.
	var big struct{ ID, Status string }
	if s := r.admin(t, "POST", "/v1/tenants/acme/limit-requests", `{"requested": 500}`, &big); s != 201 || big.Status != "pending" {
		t.Fatalf("limit request: %d %+v", s, big)
	}
	want = append(want, notify.RequestKey(big.ID, "filed"))
	slices.Sort(want)
	poll.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := h.ids(); !slices.Equal(got, want) {
			return fmt.Errorf("received %v, want %v", got, want)
		}
		return nil
	})
	if s := r.admin(t, "POST", "/v1/limit-requests/"+big.ID+"/approve", `{"granted": 200}`, &big); s != 200 || big.Status != "granted" {
		t.Fatalf("approve: %d %+v", s, big)
	}
	want = append(want, notify.RequestKey(big.ID, "decided"))
	slices.Sort(want)
	poll.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := h.ids(); !slices.Equal(got, want) {
			return fmt.Errorf("received %v, want %v", got, want)
		}
		return nil
	})
	h.mu.Lock()
	for _, b := range h.got {
		if b.ID == notify.RequestKey(big.ID, "decided") && (b.LimitRequest == nil || b.LimitRequest.Granted != 200 || b.Kind != notify.KindRequestDecided) {
			t.Errorf("decided webhook %+v", b)
		}
	}
	h.mu.Unlock()
	var l struct {
		Total int
		Items []notify.Record
	}
	poll.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if s := r.admin(t, "GET", "/v1/notifications?status=delivered&tenant=acme", "", &l); s != 200 || l.Total != len(want) {
			return fmt.Errorf("GET /v1/notifications: %d, %d delivered, want %d", s, l.Total, len(want))
		}
		return nil
	})
	if s := r.admin(t, "GET", "/v1/notifications?status=pending", "", &l); s != 200 || l.Total != 0 {
		t.Errorf("pending: %d %+v", s, l)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.badSig != 0 {
		t.Errorf("%d webhooks with a bad signature", h.badSig)
	}
}
