// Package limiter owns the limits: calendar periods, monthly quotas spent
// from leases reserved in a shared ledger, and the decisions the proxy
// turns into headers and 429s. It knows nothing of NATS or HTTP: the
// ledger is an interface that the composition root fills in.
package limiter

import (
	"strconv"
	"time"
)

// Period is one quota period: [Start, End).
type Period struct {
	Start, End time.Time
	// Key names the period in the ledger: "2026-11" for calendar months,
	// "2026-11-15" for a tenant billed from the 15th.
	Key string
}

// PeriodAt returns the period containing t in loc. anchor is the day of
// the month the period starts on (1–31, clamped to the month's last day);
// 0 or 1 means calendar months. Periods are computed with time.Date, so
// months have their real 28–31 days and DST changes are respected.
func PeriodAt(t time.Time, loc *time.Location, anchor int) Period {
	if loc == nil {
		loc = time.UTC
	}
	if anchor < 1 {
		anchor = 1
	}
	t = t.In(loc)
	y, m, _ := t.Date()
	start := anchorDate(y, m, anchor, loc)
	if t.Before(start) {
		y, m = addMonth(y, m, -1)
		start = anchorDate(y, m, anchor, loc)
	}
	ny, nm := addMonth(y, m, 1)
	end := anchorDate(ny, nm, anchor, loc)
	sy, sm, sd := start.Date()
	key := make([]byte, 0, 10)
	key = strconv.AppendInt(key, int64(sy), 10)
	key = append(key, '-')
	key = append2(key, int(sm))
	if anchor > 1 {
		key = append(key, '-')
		key = append2(key, sd)
	}
	return Period{Start: start, End: end, Key: string(key)}
}

func append2(b []byte, n int) []byte {
	return append(b, byte('0'+n/10), byte('0'+n%10))
}

func addMonth(y int, m time.Month, d int) (int, time.Month) {
	m += time.Month(d)
	for m > 12 {
		m -= 12
		y++
	}
	for m < 1 {
		m += 12
		y--
	}
	return y, m
}

// anchorDate is midnight of day anchor of month m, clamped to the month.
func anchorDate(y int, m time.Month, anchor int, loc *time.Location) time.Time {
	last := time.Date(y, m+1, 0, 0, 0, 0, 0, loc).Day()
	return time.Date(y, m, min(anchor, last), 0, 0, 0, 0, loc)
}
