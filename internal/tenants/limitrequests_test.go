package tenants_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/tollgate/tollgate/internal/tenants"
)

// newService returns a Service over a real embedded NATS, with tenant
// "acme" on plan "basic" (3 a month, auto-approved up to 5) and "big" on
// plan "manual" (no auto-approval).
func newService(t *testing.T) *tenants.Service {
	t.Helper()
	cfg := &config.Config{Plans: map[string]config.Plan{
		"basic":  {MonthlyRequests: 3, AutoApproveUpTo: 5},
		"manual": {MonthlyRequests: 1000},
	}}
	s := &tenants.Service{
		Store: storetest.Open(t), Tenants: store.NewTenantMirror(), Requests: store.NewJSONMirror[store.LimitRequest](),
		Config: func() *config.Config { return cfg },
	}
	for id, plan := range map[string]string{"acme": "basic", "big": "manual"} {
		rec := &store.Tenant{ID: id, Plan: plan, Created: time.Now().UTC()}
		if _, err := store.Create(context.Background(), s.Store.Tenants, id, rec); err != nil {
			t.Fatal(err)
		}
		s.Tenants.Set(id, rec)
	}
	return s
}

func ptr[T any](v T) *T { return &v }

// storedTenant reads the tenant's record from the store, not the mirror.
func storedTenant(t *testing.T, s *tenants.Service, id string) store.Tenant {
	t.Helper()
	var rec store.Tenant
	if _, err := store.Get(context.Background(), s.Store.Tenants, id, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func storedRequest(t *testing.T, s *tenants.Service, id string) store.LimitRequest {
	t.Helper()
	var rec store.LimitRequest
	if _, err := store.Get(context.Background(), s.Store.LimitRequests, id, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func status(err error) int {
	if err == nil {
		return 0
	}
	return problems.From(err).Status
}

func TestLimit(t *testing.T) {
	c := &config.Config{Plans: map[string]config.Plan{
		"pro":  {MonthlyRequests: 8000, Addons: map[string]int64{"mcal": 8000}},
		"free": {},
	}}
	tests := []struct {
		name   string
		tenant store.Tenant
		want   int64
	}{
		{"plan", store.Tenant{Plan: "pro"}, 8000},
		{"plan and add-ons", store.Tenant{Plan: "pro", Addons: map[string]int64{"mcal": 2}}, 24000},
		{"granted replaces the plan", store.Tenant{Plan: "pro", Addons: map[string]int64{"mcal": 2}, Granted: 100}, 100},
		{"unlimited plan", store.Tenant{Plan: "free"}, 0},
		{"unknown plan", store.Tenant{Plan: "gone"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tenants.Limit(c, &tt.tenant); got != tt.want {
				t.Errorf("Limit = %d, want %d", got, tt.want)
			}
		})
	}
}

// Up to the plan's auto_approve_up_to a request is granted at once and
// the tenant's limit set; above it, or on a plan without auto-approval,
// it waits and the limit is unchanged.
func TestCreateAutoApproves(t *testing.T) {
	tests := []struct {
		name        string
		tenant      string
		requested   int64
		wantStatus  string
		wantLimit   int64
		wantGranted int64
	}{
		{"below the threshold", "acme", 4, store.RequestGranted, 4, 4},
		{"at the threshold", "acme", 5, store.RequestGranted, 5, 5},
		{"above the threshold", "acme", 6, store.RequestPending, 3, 0},
		{"plan without auto-approval", "big", 2, store.RequestPending, 1000, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newService(t)
			r, err := s.CreateLimitRequest(context.Background(), tt.tenant, tenants.LimitRequestInput{Requested: ptr(tt.requested), Reason: ptr("  growth ")})
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != tt.wantStatus || r.Granted != tt.wantGranted || r.Reason != "growth" {
				t.Errorf("request %+v, want status %s, granted %d, reason trimmed", r, tt.wantStatus, tt.wantGranted)
			}
			if auto := r.Status == store.RequestGranted; auto != (r.DecidedBy == "auto" && r.DecidedAt != nil) {
				t.Errorf("decided_by %q decided_at %v for status %s", r.DecidedBy, r.DecidedAt, r.Status)
			}
			if got := storedRequest(t, s, r.ID); got.Status != r.Status || got.Granted != r.Granted {
				t.Errorf("stored request %+v, want %+v", got, r)
			}
			if got := s.Requests.Get(r.ID); got == nil || got.Status != r.Status {
				t.Errorf("mirrored request %+v, want status %s", got, r.Status)
			}
			c := s.Config()
			if got := tenants.Limit(c, s.Tenants.Get(tt.tenant)); got != tt.wantLimit {
				t.Errorf("mirrored limit %d, want %d", got, tt.wantLimit)
			}
			rec := storedTenant(t, s, tt.tenant)
			if got := tenants.Limit(c, &rec); got != tt.wantLimit {
				t.Errorf("stored limit %d, want %d", got, tt.wantLimit)
			}
		})
	}
}

func TestCreateRefusesBadInput(t *testing.T) {
	s := newService(t)
	tests := []struct {
		name   string
		tenant string
		in     tenants.LimitRequestInput
		status int
		field  string
	}{
		{"unknown tenant", "nobody", tenants.LimitRequestInput{Requested: ptr[int64](1)}, 404, "id"},
		{"no requested", "acme", tenants.LimitRequestInput{}, 400, "requested"},
		{"zero", "acme", tenants.LimitRequestInput{Requested: ptr[int64](0)}, 400, "requested"},
		{"negative", "acme", tenants.LimitRequestInput{Requested: ptr[int64](-1)}, 400, "requested"},
		{"reason too long", "acme", tenants.LimitRequestInput{Requested: ptr[int64](1), Reason: ptr(strings.Repeat("x", 1001))}, 400, "reason"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.CreateLimitRequest(context.Background(), tt.tenant, tt.in)
			pe := problems.From(err)
			if err == nil || pe.Status != tt.status || pe.Problems[0].Field != tt.field {
				t.Errorf("err %v, want %d on field %q", err, tt.status, tt.field)
			}
		})
	}
	if got := storedTenant(t, s, "acme"); got.Granted != 0 {
		t.Errorf("granted %d after refused requests, want 0", got.Granted)
	}
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name        string
		d           tenants.Decision
		status      int // of the error, 0 for none
		wantStatus  string
		wantGranted int64 // the request's and the tenant's
	}{
		{"approve", tenants.Decision{Approve: true}, 0, store.RequestGranted, 100},
		{"approve less", tenants.Decision{Approve: true, Granted: ptr[int64](50)}, 0, store.RequestGranted, 50},
		{"approve more than requested", tenants.Decision{Approve: true, Granted: ptr[int64](101)}, 400, store.RequestPending, 0},
		{"approve zero", tenants.Decision{Approve: true, Granted: ptr[int64](0)}, 400, store.RequestPending, 0},
		{"deny", tenants.Decision{}, 0, store.RequestDenied, 0},
		{"deny with granted", tenants.Decision{Granted: ptr[int64](5)}, 400, store.RequestPending, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newService(t)
			ctx := context.Background()
			r, err := s.CreateLimitRequest(ctx, "acme", tenants.LimitRequestInput{Requested: ptr[int64](100)})
			if err != nil || r.Status != store.RequestPending {
				t.Fatalf("create: %+v %v", r, err)
			}
			got, err := s.Decide(ctx, r.ID, tt.d)
			if status(err) != tt.status {
				t.Fatalf("Decide: %v, want status %d", err, tt.status)
			}
			if err == nil && (got.Status != tt.wantStatus || got.Granted != tt.wantGranted || got.DecidedBy != "admin" || got.DecidedAt == nil) {
				t.Errorf("decided %+v, want %s granted %d by admin", got, tt.wantStatus, tt.wantGranted)
			}
			if rec := storedRequest(t, s, r.ID); rec.Status != tt.wantStatus || rec.Granted != tt.wantGranted {
				t.Errorf("stored request %+v, want %s granted %d", rec, tt.wantStatus, tt.wantGranted)
			}
			if rec := storedTenant(t, s, "acme"); rec.Granted != tt.wantGranted {
				t.Errorf("tenant granted %d, want %d", rec.Granted, tt.wantGranted)
			}
			if tt.status != 0 {
				return
			}
			// Decided once; every later decision is a 409.
			for _, again := range []tenants.Decision{{Approve: true}, {}} {
				if _, err := s.Decide(ctx, r.ID, again); status(err) != 409 {
					t.Errorf("deciding again (%+v): %v, want 409", again, err)
				}
			}
		})
	}
	s := newService(t)
	if _, err := s.Decide(context.Background(), "lr_nothing", tenants.Decision{Approve: true}); status(err) != 404 {
		t.Errorf("unknown request: %v, want 404", err)
	}
}

// The grant comes before the record: a grant that cannot be applied (the
// tenant is gone) leaves the request pending, never granted without its
// limit.
func TestGrantFailureLeavesRequestPending(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	r, err := s.CreateLimitRequest(ctx, "acme", tenants.LimitRequestInput{Requested: ptr[int64](100)})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(ctx, s.Store.Tenants, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Decide(ctx, r.ID, tenants.Decision{Approve: true}); status(err) != 404 {
		t.Fatalf("approving for a deleted tenant: %v, want 404", err)
	}
	if rec := storedRequest(t, s, r.ID); rec.Status != store.RequestPending {
		t.Errorf("stored request %+v, want still pending", rec)
	}
	if got, err := s.LimitRequest(r.ID); err != nil || got.Status != store.RequestPending || got.Granted != 0 {
		t.Errorf("request shows %+v (%v), want still pending", got, err)
	}
}

// Admins deciding one request at once: exactly one wins, and the tenant's
// limit is the winner's (a losing decision sets nothing).
func TestConcurrentDecisionsOneWins(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	for round := range 8 {
		r, err := s.CreateLimitRequest(ctx, "acme", tenants.LimitRequestInput{Requested: ptr[int64](1000)})
		if err != nil {
			t.Fatal(err)
		}
		before := storedTenant(t, s, "acme").Granted
		decisions := []tenants.Decision{
			{Approve: true, Granted: ptr[int64](100 + int64(round))},
			{Approve: true, Granted: ptr[int64](200 + int64(round))},
			{Approve: true},
			{},
		}
		var wg sync.WaitGroup
		errs := make([]error, len(decisions))
		outs := make([]*store.LimitRequest, len(decisions))
		for i, d := range decisions {
			wg.Go(func() { outs[i], errs[i] = s.Decide(ctx, r.ID, d) })
		}
		wg.Wait()
		var won *store.LimitRequest
		for i, err := range errs {
			switch {
			case err == nil && won == nil:
				won = outs[i]
			case err == nil:
				t.Fatalf("round %d: two decisions won: %+v and %+v", round, won, outs[i])
			case status(err) != 409:
				t.Fatalf("round %d: a losing decision answered %v, want 409", round, err)
			}
		}
		if won == nil {
			t.Fatalf("round %d: no decision won: %v", round, errs)
		}
		rec := storedRequest(t, s, r.ID)
		if rec.Status != won.Status || rec.Granted != won.Granted {
			t.Errorf("round %d: stored request %+v, want the winner %+v", round, rec, won)
		}
		want := before
		if won.Status == store.RequestGranted {
			want = won.Granted
		}
		if got := storedTenant(t, s, "acme").Granted; got != want {
			t.Errorf("round %d: tenant granted %d, want %d (winner %s %d)", round, got, want, won.Status, won.Granted)
		}
		if got := s.Tenants.Get("acme").Granted; got != want {
			t.Errorf("round %d: mirrored tenant granted %d, want %d", round, got, want)
		}
	}
}

func TestListLimitRequests(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	for _, in := range []struct {
		tenant    string
		requested int64
	}{{"acme", 4}, {"acme", 100}, {"big", 2000}, {"acme", 50}} {
		if _, err := s.CreateLimitRequest(ctx, in.tenant, tenants.LimitRequestInput{Requested: ptr(in.requested)}); err != nil {
			t.Fatal(err)
		}
	}
	page := func(orderBy string, desc bool) tenants.Page {
		return tenants.Page{Size: 50, OrderBy: orderBy, Desc: desc}
	}
	tests := []struct {
		name           string
		own            bool
		tenant, status string
		page           tenants.Page
		err            int
		want           []int64 // requested, in order
		total          int
	}{
		{"all", false, "", "", page("requested", false), 0, []int64{4, 50, 100, 2000}, 4},
		{"one tenant, desc", false, "acme", "", page("requested", true), 0, []int64{100, 50, 4}, 3},
		{"pending", false, "", store.RequestPending, page("requested", false), 0, []int64{50, 100, 2000}, 3},
		{"a page", false, "", "", tenants.Page{Position: 1, Size: 2, OrderBy: "requested"}, 0, []int64{50, 100}, 4},
		{"past the end", false, "", "", tenants.Page{Position: 9, Size: 2, OrderBy: "requested"}, 0, []int64{}, 4},
		{"unknown tenant", false, "nobody", "", page("created", false), 404, nil, 0},
		{"unknown status", false, "", "maybe", page("created", false), 400, nil, 0},
		{"unknown order", false, "", "", page("size", false), 400, nil, 0},
		{"own", true, "big", "", page("created", false), 0, []int64{2000}, 1},
		{"own granted", true, "acme", store.RequestGranted, page("created", false), 0, []int64{4}, 1},
		{"own, unknown status matches nothing", true, "acme", "maybe", page("created", false), 0, []int64{}, 0},
		{"own, no single tenant", true, "", "", page("created", false), 403, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			list := s.LimitRequests
			if tt.own {
				list = s.OwnLimitRequests
			}
			l, err := list(tt.tenant, tt.status, tt.page)
			if status(err) != tt.err {
				t.Fatalf("err %v, want status %d", err, tt.err)
			}
			if err != nil {
				return
			}
			got := make([]int64, len(l.Items))
			for i, r := range l.Items {
				got[i] = r.Requested
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) || l.Total != tt.total {
				t.Errorf("requested %v total %d, want %v total %d", got, l.Total, tt.want, tt.total)
			}
		})
	}
}

func TestParsePage(t *testing.T) {
	tests := []struct {
		query string
		want  tenants.Page
		field string // of the error, "" for none
	}{
		{"", tenants.Page{Size: 50, OrderBy: "created"}, ""},
		{"position=3&size=7&desc=true&orderBy=tenant", tenants.Page{Position: 3, Size: 7, Desc: true, OrderBy: "tenant"}, ""},
		{"position=-1", tenants.Page{}, "position"},
		{"size=0", tenants.Page{}, "size"},
		{"size=1001", tenants.Page{}, "size"},
		{"desc=maybe", tenants.Page{}, "desc"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tenants.ParsePage(q, "created")
			if tt.field != "" {
				if pe := problems.From(err); err == nil || pe.Status != 400 || pe.Problems[0].Field != tt.field {
					t.Errorf("err %v, want 400 on %q", err, tt.field)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParsePage = %+v, %v, want %+v", got, err, tt.want)
			}
		})
	}
}
