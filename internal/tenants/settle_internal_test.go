package tenants

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// An approval that crashed after its claim and its grant, before its
// record: the request still shows pending; it cannot be denied (its limit
// is set); while the claim is fresh nobody else decides; once it is stale,
// approving again finishes it and sets the limit once, not twice.
func TestCrashBetweenGrantAndRecord(t *testing.T) {
	cfg := &config.Config{Plans: map[string]config.Plan{"basic": {MonthlyRequests: 3}}}
	s := &Service{
		Store: storetest.Open(t), Tenants: store.NewTenantMirror(), Requests: store.NewJSONMirror[store.LimitRequest](),
		Config: func() *config.Config { return cfg },
	}
	ctx := context.Background()
	ten := &store.Tenant{ID: "acme", Plan: "basic", Created: time.Now().UTC()}
	if _, err := store.Create(ctx, s.Store.Tenants, ten.ID, ten); err != nil {
		t.Fatal(err)
	}
	s.Tenants.Set(ten.ID, ten)
	const want = 100
	r, err := s.CreateLimitRequest(ctx, "acme", LimitRequestInput{Requested: new(int64(want))})
	if err != nil {
		t.Fatal(err)
	}

	// What the crashed approval left: its claim, and its grant.
	claim := func(deadline time.Time) {
		t.Helper()
		var lr store.LimitRequest
		rev, err := store.Get(ctx, s.Store.LimitRequests, r.ID, &lr)
		if err != nil {
			t.Fatal(err)
		}
		lr.Granted, lr.DecidedBy, lr.DecidedAt = want, "admin", &deadline
		if _, err := store.Update(ctx, s.Store.LimitRequests, r.ID, &lr, rev); err != nil {
			t.Fatal(err)
		}
		s.Requests.Set(r.ID, &lr)
	}
	claim(time.Now().Add(time.Minute))
	if _, err := s.Update(ctx, "acme", func(t *store.Tenant) error { t.Granted = want; return nil }); err != nil {
		t.Fatal(err)
	}

	got, err := s.LimitRequest(r.ID)
	if err != nil || got.Status != store.RequestPending || got.Granted != 0 || got.DecidedBy != "" || got.DecidedAt != nil {
		t.Errorf("claimed request shows %+v (%v), want plainly pending", got, err)
	}
	l, err := s.LimitRequests("", store.RequestPending, Page{Size: 50, OrderBy: "created"})
	if err != nil || l.Total != 1 || l.Items[0].Granted != 0 || l.Items[0].DecidedAt != nil {
		t.Errorf("pending list %+v (%v), want the request plainly pending", l, err)
	}
	for _, d := range []Decision{{Approve: true}, {}} {
		if _, err := s.Decide(ctx, r.ID, d); problems.From(err).Status != 409 {
			t.Errorf("deciding (%+v) while the claim is fresh: %v, want 409", d, err)
		}
	}

	claim(time.Now().Add(-time.Minute)) // the claimant is long gone
	if _, err := s.Decide(ctx, r.ID, Decision{}); problems.From(err).Status != 409 {
		t.Errorf("denying an interrupted approval: %v, want 409", err)
	}
	got, err = s.Decide(ctx, r.ID, Decision{Approve: true})
	if err != nil || got.Status != store.RequestGranted || got.Granted != want || got.DecidedBy != "admin" {
		t.Fatalf("finishing the approval: %+v %v", got, err)
	}
	var lr store.LimitRequest
	if _, err := store.Get(ctx, s.Store.LimitRequests, r.ID, &lr); err != nil || lr.Status != store.RequestGranted || lr.Granted != want {
		t.Errorf("stored request %+v (%v), want granted %d", lr, err, want)
	}
	var tr store.Tenant
	if _, err := store.Get(ctx, s.Store.Tenants, "acme", &tr); err != nil || Limit(cfg, &tr) != want {
		t.Errorf("tenant %+v (%v), want limit %d (set, not added to)", tr, err, want)
	}
}
