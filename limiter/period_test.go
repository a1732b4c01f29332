package limiter

import (
	"testing"
	"time"
)

func TestPeriodAt(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name       string
		at         time.Time
		loc        *time.Location
		anchor     int
		key        string
		start, end time.Time
	}{
		{"november", utc("2026-11-23T17:00:00Z"), time.UTC, 0, "2026-11", utc("2026-11-01T00:00:00Z"), utc("2026-12-01T00:00:00Z")},
		{"december to january", utc("2026-12-31T23:59:59Z"), time.UTC, 1, "2026-12", utc("2026-12-01T00:00:00Z"), utc("2027-01-01T00:00:00Z")},
		{"first instant of a month", utc("2027-01-01T00:00:00Z"), time.UTC, 0, "2027-01", utc("2027-01-01T00:00:00Z"), utc("2027-02-01T00:00:00Z")},
		{"jan 31 is january", utc("2027-01-31T12:00:00Z"), time.UTC, 0, "2027-01", utc("2027-01-01T00:00:00Z"), utc("2027-02-01T00:00:00Z")},
		{"february 28 days", utc("2027-02-28T23:00:00Z"), time.UTC, 0, "2027-02", utc("2027-02-01T00:00:00Z"), utc("2027-03-01T00:00:00Z")},
		{"leap february 29", utc("2028-02-29T10:00:00Z"), time.UTC, 0, "2028-02", utc("2028-02-01T00:00:00Z"), utc("2028-03-01T00:00:00Z")},
		{"march after leap day", utc("2028-03-01T00:00:00Z"), time.UTC, 0, "2028-03", utc("2028-03-01T00:00:00Z"), utc("2028-04-01T00:00:00Z")},
		// 23:30 UTC on Oct 31 is already November 1st in Berlin.
		{"zone moves the boundary", utc("2026-10-31T23:30:00Z"), berlin, 0, "2026-11", utc("2026-10-31T23:00:00Z"), utc("2026-11-30T23:00:00Z")},
		// March 2027 in Berlin: starts at UTC+1, ends at UTC+2 (DST on Mar 28).
		{"DST change inside the month", utc("2027-03-15T12:00:00Z"), berlin, 0, "2027-03", utc("2027-02-28T23:00:00Z"), utc("2027-03-31T22:00:00Z")},
		{"DST in New York", utc("2026-11-02T12:00:00Z"), ny, 0, "2026-11", utc("2026-11-01T04:00:00Z"), utc("2026-12-01T05:00:00Z")},
		{"anchor 15 mid-month", utc("2026-11-20T00:00:00Z"), time.UTC, 15, "2026-11-15", utc("2026-11-15T00:00:00Z"), utc("2026-12-15T00:00:00Z")},
		{"anchor 15 before the day", utc("2026-11-10T00:00:00Z"), time.UTC, 15, "2026-10-15", utc("2026-10-15T00:00:00Z"), utc("2026-11-15T00:00:00Z")},
		{"anchor 31 clamps in february", utc("2027-02-28T12:00:00Z"), time.UTC, 31, "2027-02-28", utc("2027-02-28T00:00:00Z"), utc("2027-03-31T00:00:00Z")},
		{"anchor 31 before feb 28", utc("2027-02-27T12:00:00Z"), time.UTC, 31, "2027-01-31", utc("2027-01-31T00:00:00Z"), utc("2027-02-28T00:00:00Z")},
		{"anchor 30 in leap february", utc("2028-02-29T12:00:00Z"), time.UTC, 30, "2028-02-29", utc("2028-02-29T00:00:00Z"), utc("2028-03-30T00:00:00Z")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := PeriodAt(tt.at, tt.loc, tt.anchor)
			if p.Key != tt.key || !p.Start.Equal(tt.start) || !p.End.Equal(tt.end) {
				t.Errorf("PeriodAt = %s [%v, %v), want %s [%v, %v)", p.Key, p.Start.UTC(), p.End.UTC(), tt.key, tt.start, tt.end)
			}
			if tt.at.Before(p.Start) || !tt.at.Before(p.End) {
				t.Errorf("%v not in its period [%v, %v)", tt.at, p.Start, p.End)
			}
		})
	}
}

func TestPeriodsTileTime(t *testing.T) {
	// Consecutive periods meet exactly, over four years, for every anchor.
	for _, anchor := range []int{0, 1, 15, 28, 29, 30, 31} {
		at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		p := PeriodAt(at, time.UTC, anchor)
		for i := 0; i < 48; i++ {
			n := PeriodAt(p.End, time.UTC, anchor)
			if !n.Start.Equal(p.End) || n.Key == p.Key {
				t.Fatalf("anchor %d: period %s ends %v but next %s starts %v", anchor, p.Key, p.End, n.Key, n.Start)
			}
			if d := n.End.Sub(n.Start); d < 28*24*time.Hour || d > 31*24*time.Hour {
				t.Fatalf("anchor %d: period %s lasts %v", anchor, n.Key, d)
			}
			p = n
		}
	}
}
