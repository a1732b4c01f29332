package limiter

// usage.go owns reporting: a tenant's consumption in the current period.

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Usage is a tenant's consumption in the current period.
type Usage struct {
	Period    string `json:"period"`
	Limit     int64  `json:"limit"` // 0: unlimited
	Used      int64  `json:"used"`
	Remaining int64  `json:"remaining"`
	// Refunded counts the requests given back to the quota in the period
	// (refund_on, and bodies the client broke off): not in Used.
	Refunded int64 `json:"refunded"`
	// Overage is how much of Used is past Limit, admitted on the plan's
	// over_limit allowance (OverageAllowed); Remaining is then 0.
	Overage        int64     `json:"overage"`
	OverageAllowed int64     `json:"overage_allowed,omitempty"`
	Reset          time.Time `json:"reset"`
}

// Usage reads the ledger for tenant's current period. Used counts tokens
// reserved by all replicas minus this replica's unused lease: other
// replicas' unused leases count as used until they are returned.
func (q *Quotas) Usage(ctx context.Context, tenant string) (Usage, error) {
	l, ok := q.o.Limits(tenant)
	if !ok {
		return Usage{}, ErrUnknownTenant
	}
	loc := l.Location
	if loc == nil {
		loc = q.o.Location
	}
	p := PeriodAt(q.o.Now(), loc, l.Anchor)
	// Under st.mu no reservation of ours runs, so the ledger total and
	// our unused lease are read consistently.
	st := q.state(tenant)
	st.mu.Lock()
	total, err := q.o.Ledger.Total(ctx, tenant, p.Key)
	var refunded int64
	if err == nil {
		refunded, err = q.o.Ledger.Total(ctx, tenant, p.Key+RefundedSuffix)
	}
	if err == nil && st.period.Key == p.Key {
		total -= st.avail.Load() + st.refunding.Load()
		refunded += st.refunded.Load() + q.pendingRefunded(tenant, p.Key+RefundedSuffix)
	}
	st.mu.Unlock()
	if err != nil {
		return Usage{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	u := Usage{Period: p.Key, Limit: l.Monthly, Used: max(total, 0), Refunded: refunded, Reset: p.End.UTC()}
	if l.Monthly > 0 {
		u.Remaining = max(l.Monthly-u.Used, 0)
		u.Overage = max(u.Used-l.Monthly, 0)
		u.OverageAllowed = max(l.Overage, 0)
	}
	return u, nil
}

// DayUsage is a tenant's count on one day of the usage history.
type DayUsage struct {
	Date string `json:"date"`
	Used int64  `json:"used"`
}

// DailyUsage is a tenant's usage history, one entry per day from From to
// To (inclusive), days without requests included.
type DailyUsage struct {
	Tenant string     `json:"tenant"`
	From   string     `json:"from"`
	To     string     `json:"to"`
	Days   []DayUsage `json:"days"`
}

// MaxDailyRange is the most days Daily answers at once.
const MaxDailyRange = 400

// ErrDailyRange is wrapped by Daily's errors about its range; each names
// the field at fault ("from" or "to") as a *RangeError.
var ErrDailyRange = errors.New("limiter: bad day range")

// RangeError is a bad bound of Daily's range.
type RangeError struct {
	Field, Reason string
}

func (e *RangeError) Error() string { return e.Field + ": " + e.Reason }
func (e *RangeError) Unwrap() error { return ErrDailyRange }

// Daily returns tenant's requests per day from from to to (YYYY-MM-DD in
// the tenant's time zone, inclusive); from defaults to the first day of
// the previous period, to to today. A day counts what was reserved on it
// and not returned, as Usage does for the period: the days of a period add
// up to its Used, and other replicas' unused leases count as used until
// they are returned.
func (q *Quotas) Daily(ctx context.Context, tenant, from, to string) (DailyUsage, error) {
	l, ok := q.o.Limits(tenant)
	if !ok {
		return DailyUsage{}, ErrUnknownTenant
	}
	loc := l.Location
	if loc == nil {
		loc = q.o.Location
	}
	now := q.o.Now().In(loc)
	if from == "" {
		p := PeriodAt(now, loc, l.Anchor)
		from = PeriodAt(p.Start.Add(-time.Hour), loc, l.Anchor).Start.Format(DayLayout)
	}
	if to == "" {
		to = now.Format(DayLayout)
	}
	f, err := time.Parse(DayLayout, from)
	if err != nil {
		return DailyUsage{}, &RangeError{"from", "not a date of the form 2026-11-01"}
	}
	t, err := time.Parse(DayLayout, to)
	if err != nil {
		return DailyUsage{}, &RangeError{"to", "not a date of the form 2026-11-30"}
	}
	if t.Before(f) {
		return DailyUsage{}, &RangeError{"to", "before from"}
	}
	n := int(t.Sub(f).Hours()/24) + 1
	if n > MaxDailyRange {
		return DailyUsage{}, &RangeError{"from", fmt.Sprintf("the range covers %d days; at most %d at once", n, MaxDailyRange)}
	}
	out := DailyUsage{Tenant: tenant, From: from, To: to, Days: make([]DayUsage, 0, n)}
	dl, ok := q.o.Ledger.(DayLedger)
	if !ok {
		for d := f; !d.After(t); d = d.AddDate(0, 0, 1) {
			out.Days = append(out.Days, DayUsage{Date: d.Format(DayLayout)})
		}
		return out, nil
	}
	// Under st.mu no reservation or day move of ours runs: the days and
	// our unused lease are read consistently.
	st := q.state(tenant)
	st.mu.Lock()
	days, err := dl.Days(ctx, tenant, from, to)
	if err == nil && st.day != "" {
		if _, in := days[st.day]; in || (st.day >= from && st.day <= to) {
			days[st.day] -= st.avail.Load() + st.refunding.Load()
		}
	}
	st.mu.Unlock()
	if err != nil {
		return DailyUsage{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	for d := f; !d.After(t); d = d.AddDate(0, 0, 1) {
		key := d.Format(DayLayout)
		out.Days = append(out.Days, DayUsage{Date: key, Used: max(days[key], 0)})
	}
	return out, nil
}
