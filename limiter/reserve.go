package limiter

// reserve.go owns a tenant's lease: reserving it from the ledger (one
// increment, keeping what fits under the limit), sizing it to the
// tenant's traffic, giving unused tokens back, and moving to a new period.

import (
	"context"
	"math"
	"time"
)

// reserveLocked reserves the next lease from the ledger and adds what was
// granted to avail. st.mu must be held.
//
// The ledger cannot increment conditionally, so we add the whole lease,
// read the total it returns, keep only what fits under the limit and refund
// the rest. Each grant is at most the limit minus everything reserved
// before it (including others' reservations not yet refunded), so grants
// over all replicas never add up to more than the limit.
func (q *Quotas) reserveLocked(st *tenantState, need int64) (int64, error) {
	limit := st.limit.Load()
	now := q.o.Now()
	if !st.leaseAt.IsZero() && st.leaseUsed > 0 {
		// Size this lease to LeaseHorizon of the tenant's rate over the
		// last one (measured now, not at the next reservation: a growing
		// tenant reaches its size a lease sooner).
		el := max(now.Sub(st.leaseAt), time.Millisecond)
		rate := float64(st.leaseUsed) / el.Seconds()
		st.lease = int64(min(max(rate*q.o.LeaseHorizon.Seconds(), 1), float64(q.leaseCap(limit)), float64(max(st.lease, 1)*leaseGrowth)))
		// What must stay ahead of spending, in the lease and under the
		// recorded bound, to ride out a failover (lowWater, margin).
		st.cover.Store(int64(min(rate*q.o.FailoverHorizon.Seconds(), float64(st.lease))))
	}
	size := max(q.nextLease(st), need)
	if limit != math.MaxInt64 {
		// Near the limit, take a quarter of what seems left so the last
		// tokens are shared between replicas, down to one at a time.
		size = max(min(size, (limit-st.total.Load())/4), need)
	}
	period, day := st.period.Key, st.day
	id := q.msgID()
	total, _, err := q.add(context.Background(), st.id, period, day, size, id)
	if err != nil {
		q.stats.reserveFailures.Add(1)
		// Unknown whether it was applied: settle it in the background by
		// re-sending the same id (exactly once), then refund it whole.
		dl := q.resendDeadline(q.o.Now())
		q.enqueue(&ledgerOp{tenant: st.id, period: period, day: day, id: id, delta: size, deadline: dl,
			then: &ledgerOp{tenant: st.id, period: period, day: day, id: q.msgID(), delta: -size, deadline: dl}})
		return 0, err
	}
	// total-size is what was reserved before us. After a duplicate the
	// total may include later reservations of others: the grant is then a
	// lower bound, and we refund the rest, so the ledger still holds
	// exactly what we may spend.
	granted := min(max(limit-(total-size), 0), size)
	if over := size - granted; over > 0 {
		q.stats.returned(ReturnExcess, over)
		// Refund at once, not in the background: until it lands, our own
		// over-reservation would make the next grant smaller than it can be.
		id := q.msgID()
		if _, _, err := q.add(context.Background(), st.id, period, day, -over, id); err != nil {
			q.enqueue(&ledgerOp{tenant: st.id, period: period, day: day, id: id, delta: -over,
				deadline: q.resendDeadline(q.o.Now()), st: st})
			st.refunding.Add(over)
		}
		total -= over
	}
	st.total.Store(total)
	st.granted.Add(granted) // before avail: spent = granted - avail never reads low
	st.avail.Add(granted)
	st.leaseAt, st.leaseUsed = now, granted
	q.stats.reserved(granted)
	if granted > 0 {
		st.leaseHint.Store(granted)
		if q.o.Leases != nil && st.rev == 0 && st.granted.Load() == granted && granted <= firstLease {
			// The tenant's first lease in the period, small: spent
			// without a record, which would cost a second fsync'd write
			// before its first request is answered, for every tenant at
			// once after a start. A crash strands it whole: 10 tokens.
			st.spentMax.Store(granted)
		} else {
			_ = q.recordLocked(st, need) // on failure the new tokens wait for the record
		}
	}
	if granted < need {
		st.exhausted.Store(true)
		st.recheck.Store(now.Add(time.Second).UnixNano())
	} else {
		st.exhausted.Store(false)
	}
	return granted, nil
}

// leaseGrowth bounds how much larger than the last a lease may be.
const leaseGrowth = 4

// firstLease is the size of a tenant's first lease in a period.
const firstLease = 10

// leaseShare and leaseShareFloor bound a lease by the tenant's limit: no
// more than a thousandth of it, unless that is under leaseShareFloor
// tokens. A crash strands at most half a lease (a lease and a half if it
// falls between a reservation and its record; see step), so for a big
// tenant that is at most 0.05 % (0.15 %) of its month, while a busy
// tenant of a big plan costs few ledger and record writes (each one
// fsync'd, and on the replica's own CPU with the embedded server): at
// 5,000 requests/s a lease of 1,000 meant 5 ledger and about 14 record
// writes a second, and they showed in the proxy's p99 (bench/RESULTS.md).
const (
	leaseShare      = 1000
	leaseShareFloor = 1000
)

// leaseCap is the largest lease for a tenant whose limit is limit.
func (q *Quotas) leaseCap(limit int64) int64 {
	if limit == math.MaxInt64 {
		return q.o.MaxLease
	}
	return min(q.o.MaxLease, max(limit/leaseShare, leaseShareFloor))
}

func (q *Quotas) nextLease(st *tenantState) int64 {
	if st.lease == 0 {
		st.lease = min(firstLease, q.o.MaxLease)
	}
	return st.lease
}

// rollover moves st into the day containing now, and into its period,
// returning the unused tokens of the old period.
func (q *Quotas) rollover(st *tenantState, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if now.UnixNano() < st.dayEnd.Load() {
		return
	}
	l, _ := q.o.Limits(st.id)
	loc := l.Location
	if loc == nil {
		loc = q.o.Location
	}
	newPeriod := now.UnixNano() >= st.periodEnd.Load()
	if newPeriod {
		q.newPeriodLocked(st, now, loc, l.Anchor)
	}
	q.newDayLocked(st, now, loc, !newPeriod)
}

// newDayLocked moves st to the day containing now. The unused tokens of
// the lease were reserved on the old day and counted on it: they are
// moved to the new one, where they will be spent (or returned from), so
// that each day counts what was spent on it, up to what a lease's
// requests in flight across midnight spend. st.mu must be held.
func (q *Quotas) newDayLocked(st *tenantState, now time.Time, loc *time.Location, samePeriod bool) {
	local := now.In(loc)
	day := local.Format(DayLayout)
	if old := st.day; old != "" && old != day && samePeriod {
		if n := st.avail.Load(); n > 0 {
			if _, ok := q.o.Ledger.(DayLedger); ok {
				dl := q.resendDeadline(q.o.Now())
				q.enqueue(&ledgerOp{tenant: st.id, period: st.period.Key, day: old, dayOnly: true, id: q.msgID(), delta: -n, deadline: dl,
					then: &ledgerOp{tenant: st.id, period: st.period.Key, day: day, dayOnly: true, id: q.msgID(), delta: n, deadline: dl}})
			}
		}
	}
	st.day = day
	y, m, d := local.Date()
	st.dayEnd.Store(min(time.Date(y, m, d+1, 0, 0, 0, 0, loc).UnixNano(), st.periodEnd.Load()))
	if st.rev != 0 && q.o.Leases != nil {
		// The record names the day a sweeper takes unused tokens off.
		_ = q.putRecordLocked(st, LeaseRecord{Reserved: st.recReserved, SpentMax: st.recBound, Expires: q.o.Now().Add(q.o.LeaseTTL)})
	}
}

// DayLayout names days in the daily usage history (DayLedger).
const DayLayout = "2006-01-02"

// newPeriodLocked moves st into the period containing now, returning the
// unused tokens of the old one. st.mu must be held.
func (q *Quotas) newPeriodLocked(st *tenantState, now time.Time, loc *time.Location, anchor int) {
	p := PeriodAt(now, loc, anchor)
	if old := st.period.Key; old != "" && old != p.Key {
		q.giveBackLocked(st, true)
	}
	st.period = p
	st.granted.Store(0)
	st.rev, st.recExp = 0, time.Time{}
	if q.o.Leases != nil {
		st.spentMax.Store(0)
	}
	st.total.Store(0)
	st.exhausted.Store(false)
	st.lease, st.leaseUsed, st.leaseAt = 0, 0, time.Time{}
	ctx, cancel := context.WithTimeout(context.Background(), q.o.Timeout)
	defer cancel()
	if t, err := q.o.Ledger.Total(ctx, st.id, p.Key); err == nil {
		st.total.Store(t)
	}
	st.resetAt.Store(p.End.Unix())
	st.periodEnd.Store(p.End.UnixNano())
}

// giveBackLocked returns st's unused tokens to the ledger. With a lease
// book the record is lowered first, so that a sweeper can never return
// the same tokens again; if that write fails the tokens are kept. final
// also deletes the record (on Close and at the end of a period). st.mu
// must be held.
func (q *Quotas) giveBackLocked(st *tenantState, final bool) {
	n := st.takeAvail()
	g := st.granted.Load() - n
	if q.o.Leases != nil && (n > 0 || final) && st.rev != 0 {
		rec := LeaseRecord{Reserved: g, SpentMax: min(st.spentMax.Load(), g), Expires: q.o.Now().Add(q.o.LeaseTTL)}
		if err := q.putRecordLocked(st, rec); err != nil {
			st.avail.Add(n) // keep them: returning would risk returning twice
			return
		}
	}
	if n > 0 {
		st.granted.Store(g)
		if q.o.Leases != nil && st.spentMax.Load() > g {
			st.spentMax.Store(g)
		}
		st.total.Add(-n)
		owner := st // Usage discounts tokens on their way back in this period
		if final {
			owner = nil
		}
		q.refund(st.id, st.period.Key, st.day, n, owner)
	}
	if final && q.o.Leases != nil && st.rev != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), q.o.Timeout)
		// The record now says reserved = spending bound: even if this
		// delete is lost, a sweeper has nothing to return.
		if q.o.Leases.Delete(ctx, st.id, st.period.Key, q.o.ReplicaID, st.rev) == nil {
			st.rev = 0
		}
		cancel()
	}
}
