package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/tollgate/tollgate/limiter"
)

// TestDailyCounts: day additions count once per message id, in batches
// too, and each tenant and day has its own count.
func TestDailyCounts(t *testing.T) {
	l := storetest.Open(t).Ledger
	ctx := context.Background()
	for i, a := range []struct {
		tenant, day string
		delta       int64
		id          string
	}{
		{"acme", "2026-11-30", 100, "r.1"}, {"acme", "2026-11-30", 100, "r.1"}, {"acme", "2026-11-30", -40, "r.2"},
		{"acme", "2026-12-01", 7, "r.3"}, {"globex", "2026-11-30", 5, "r.4"},
	} {
		if err := l.AddDay(ctx, a.tenant, a.day, a.delta, a.id); err != nil {
			t.Fatalf("addition %d: %v", i, err)
		}
	}
	adds := []limiter.Addition{
		{Tenant: "acme", Day: "2026-12-01", Delta: -2, MsgID: "r.5"},
		{Tenant: "acme", Day: "2026-12-01", Delta: -2, MsgID: "r.5"}, // a duplicate: once
		{Tenant: "acme", Delta: -1000, MsgID: "r.6"},                 // no day: not counted
	}
	if err := l.AddDays(ctx, adds[:1]); err != nil {
		t.Fatal(err)
	}
	if err := l.AddDays(ctx, adds[1:]); err != nil {
		t.Fatal(err)
	}
	got, err := l.Days(ctx, "acme", "2026-11-29", "2026-12-02")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["2026-11-30"] != 60 || got["2026-12-01"] != 5 {
		t.Errorf("acme's days %v: want 60 on 30 November and 5 on 1 December", got)
	}
	if g, _ := l.Days(ctx, "globex", "2026-11-30", "2026-11-30"); g["2026-11-30"] != 5 {
		t.Errorf("globex's days %v", g)
	}
}

// TestCompactDays: the history of days that can no longer change is
// reduced to each day's last message, and their counts stay; recent days
// keep theirs (a retried addition must still be recognised).
func TestCompactDays(t *testing.T) {
	s := storetest.Open(t)
	l := s.Ledger
	ctx := context.Background()
	now := time.Date(2026, 12, 10, 5, 0, 0, 0, time.UTC)
	old, recent := "2026-12-06", "2026-12-09"
	for i := range 30 {
		for _, day := range []string{old, recent} {
			for _, tenant := range []string{"acme", "globex"} {
				if err := l.AddDay(ctx, tenant, day, int64(i), fmt.Sprintf("%s.%s.%d", tenant, day, i)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	removed, err := l.CompactDays(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if removed != 2*29 {
		t.Errorf("removed %d messages: want 29 of each tenant's old day", removed)
	}
	for _, tenant := range []string{"acme", "globex"} {
		got, err := l.Days(ctx, tenant, old, recent)
		if err != nil {
			t.Fatal(err)
		}
		if got[old] != 435 || got[recent] != 435 {
			t.Errorf("%s after compaction: %v: want 435 on both days", tenant, got)
		}
	}
	// A retried addition of a recent day is still recognised.
	if err := l.AddDay(ctx, "acme", recent, 1, "acme."+recent+".0"); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.Days(ctx, "acme", recent, recent); got[recent] != 435 {
		t.Errorf("a re-sent addition counted again: %v", got)
	}
	if again, _ := l.CompactDays(ctx, now); again != 0 {
		t.Errorf("a second compaction removed %d", again)
	}
}
