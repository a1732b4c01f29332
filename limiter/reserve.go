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
		st.lease = int64(min(max(rate*q.o.LeaseHorizon.Seconds(), 1), float64(q.leaseCap(st)), float64(max(st.lease, 1)*leaseGrowth)))
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
			// once after a start. A crash strands it whole: 10 tokens,
			// or 5 of a plan under 2,000 (leaseCap).
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

// firstLease is the size of a tenant's first lease in a period (or the
// lease cap, if smaller).
const firstLease = 10

// leaseShare and leaseShareFloor bound a lease by the tenant's limit: no
// more than a thousandth of it, unless that is under leaseShareFloor
// tokens, so that a busy tenant of a big plan costs few ledger and record
// writes (each one fsync'd, and on the replica's own CPU with the embedded
// server): at 5,000 requests/s a lease of 1,000 meant 5 ledger and about
// 14 record writes a second, and they showed in the proxy's p99
// (bench/RESULTS.md). strandShare bounds it further for plans under
// 200,000 requests a month.
const (
	leaseShare      = 1000
	leaseShareFloor = 1000
)

// What a crash strands (issue 18). A replica that dies holding a lease
// leaves in the ledger tokens that no one spent, and a sweeper returns of
// them only what its last lease record held above its spending bound.
// For one tenant the rest is, with G the tokens it holds from the ledger,
// S those spent (requests admitted), R and W the record's reserved and
// bound:
//
//   - W − S, the bound's lead over spending: up to step and one request,
//     and all of what the record holds for a busy tenant, whose step is a
//     whole lease;
//   - G − R, tokens reserved but not (yet) in a record: the first lease of
//     the period (it has none: firstLease), a lease between its
//     reservation in the ledger and the record write that follows it, or
//     one whose record write failed;
//   - and ledger operations the replica had not sent yet: a return of an
//     idle lease (its record is lowered first), or, in an outage, a
//     reservation whose answer was lost and its refund.
//
// A record never says more was reserved than is held, nor a bound under
// what was spent (W ≤ R ≤ G, S ≤ W), so the first two together are at
// most G − S: what the replica holds unspent. It reserves only when what
// it holds falls to the low-water mark (at most the last lease) or below
// one request, so it holds at most two leases and a request. The lease
// cap is therefore half of strandMax: with NATS reachable, a crash strands
// at most strandMax, plus a request's cost above one. Measured before
// this cap (TestCrashStrandsAtMostOnePercent, leases of up to 1,000
// tokens, a quarter of what was left near the limit): 132-206 tokens of a
// 1,000 plan, 514-1,000 of a 10,000 plan.
//
// The price: what a replica can spend without NATS is what a crash can
// strand, so where 1% of a plan is less than its traffic through a leader
// election, its leases no longer ride one out (FailoverHorizon). In
// e2e's TestClusterFailover (a 5,000 plan, about 40 requests/s per
// replica, a NATS node killed with -9) admissions waited up to 3.7-5.3 s
// and some were refused as unavailable, where they took at most 70 ms
// with leases of up to 1,000 tokens.
const (
	strandShare = 100
	strandFloor = 10
)

// strandMax is the most tokens of a tenant's month that a crash of one
// replica may strand: a hundredth of its monthly limit, or strandFloor
// tokens if that is more.
func strandMax(monthly int64) int64 { return max(monthly/strandShare, strandFloor) }

// leaseCap is the largest lease for st: max_lease, a thousandth of its
// limit (or leaseShareFloor), and half of strandMax of its monthly limit
// (without the overage allowance).
func (q *Quotas) leaseCap(st *tenantState) int64 {
	limit := st.limit.Load()
	if limit == math.MaxInt64 {
		return q.o.MaxLease
	}
	monthly := limit
	if l := st.lim.Load(); l != nil && l.Monthly > 0 {
		monthly = l.Monthly
	}
	return max(min(q.o.MaxLease, max(limit/leaseShare, leaseShareFloor), strandMax(monthly)/2), 1)
}

func (q *Quotas) nextLease(st *tenantState) int64 {
	if st.lease == 0 {
		st.lease = min(firstLease, q.leaseCap(st))
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
		q.queueRefundedLocked(st)
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
