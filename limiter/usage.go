package limiter

// usage.go owns reporting: a tenant's consumption in the current period.

import (
	"context"
	"fmt"
	"time"
)

// Usage is a tenant's consumption in the current period.
type Usage struct {
	Period    string    `json:"period"`
	Limit     int64     `json:"limit"` // 0: unlimited
	Used      int64     `json:"used"`
	Remaining int64     `json:"remaining"`
	Reset     time.Time `json:"reset"`
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
	if err == nil && st.period.Key == p.Key {
		total -= st.avail.Load() + st.refunding.Load()
	}
	st.mu.Unlock()
	if err != nil {
		return Usage{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	u := Usage{Period: p.Key, Limit: l.Monthly, Used: max(total, 0), Reset: p.End.UTC()}
	if l.Monthly > 0 {
		u.Remaining = max(l.Monthly-u.Used, 0)
	}
	return u, nil
}
