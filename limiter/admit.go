package limiter

// admit.go owns admission, the request path: the rate, concurrency and
// quota checks of AdmitRequest, spending from the local lease in Admit,
// the slow path that waits for a reservation, refunds of admitted
// requests, and the open policy's allowance while the ledger is
// unreachable.

import (
	"math"
	"time"

	"go.uber.org/zap"
)

// AdmitRequest applies every limit of tenant's plan to one request of the
// given credential: the short-window rate, then concurrency, then the
// monthly quota, so that a request refused by a limit is not counted. A
// decision with Acquired set must be followed by Release(tenant).
//
// In shadow mode (mode, or the plan's when mode is ModePlan) no limit
// refuses: every one is evaluated and counts what it admits, the first
// that would have refused is named in Decision.Shadow, and the request is
// admitted. A request past the monthly limit is not counted in the ledger
// then (there is nothing left to reserve); an unreachable ledger still
// refuses as the plan's on_store_unavailable says.
func (q *Quotas) AdmitRequest(tenant, credential string, cost int64, mode Mode) Decision {
	st := q.state(tenant)
	l := st.lim.Load()
	shadow := mode == ModeShadow || mode == ModePlan && l.Shadow
	var rd RateDecision
	var would Reason
	hasRate := l.Rate.Requests > 0
	if hasRate {
		key := credential
		if l.RateByTenant {
			key = tenant
		}
		if rd = q.rates.Allow(key, l.Rate, cost); !rd.Allowed {
			if !shadow {
				d := q.decide(st, q.o.Now(), false, nil)
				d.Reason, d.Rate, d.HasRate = ReasonRate, rd.State(), true
				return d
			}
			would = ReasonRate
		}
	}
	acquired := false
	if l.Concurrency > 0 {
		if _, ok := q.conc.Acquire(tenant, l.Concurrency); ok {
			acquired = true
		} else if !shadow {
			d := q.decide(st, q.o.Now(), false, nil)
			d.Reason, d.Rate, d.HasRate = ReasonConcurrency, rd.State(), hasRate
			return d
		} else if would == ReasonNone {
			would = ReasonConcurrency
		}
	}
	d := q.Admit(tenant, cost)
	d.Rate, d.HasRate, d.RefundOn = rd.State(), hasRate, l.RefundOn
	if !d.Allowed {
		if d.Err == nil && shadow {
			// Past the limit: admitted, not counted.
			if would == ReasonNone {
				would = ReasonQuota
			}
			d.Allowed, d.Uncounted = true, true
		} else {
			if acquired {
				q.conc.Release(tenant)
			}
			if d.Err == nil {
				d.Reason = ReasonQuota
			}
			return d
		}
	}
	if would != ReasonNone {
		d.Shadow = would
	}
	d.Acquired = acquired
	return d
}

// Refund gives back the cost tokens of an admitted request that never
// reached the upstream whole (the client's body broke off or was malformed),
// so that it does not count. The tokens return to this replica's lease,
// where the ledger already holds them: exactness is kept, and they are
// spent again or returned with the lease. A refund from another period
// than the current one (d.PeriodEnd) is dropped: that period is closed.
// It does no I/O and takes no lock.
func (q *Quotas) Refund(tenant string, cost int64, d Decision) {
	if !d.Allowed || d.Unlimited || d.Uncounted || cost <= 0 {
		return
	}
	st := q.state(tenant)
	if st.periodEnd.Load() != d.PeriodEnd {
		return
	}
	q.stats.refunded(cost)
	st.refunded.Add(cost)
	if d.Open {
		// Admitted on the outage allowance: not yet in the ledger, so it
		// is taken off what is owed, if that was not sent meanwhile.
		for {
			owed := st.openOwed.Load()
			if owed < cost {
				return
			}
			if st.openOwed.CompareAndSwap(owed, owed-cost) {
				st.openUsed.Add(-cost)
				return
			}
		}
	}
	st.avail.Add(cost)
}

// Release returns the concurrency slot of an admitted request.
func (q *Quotas) Release(tenant string) { q.conc.Release(tenant) }

// Admit spends cost tokens of tenant's quota. For a tenant with tokens
// left in its lease it does no I/O, takes no lock and does not allocate.
func (q *Quotas) Admit(tenant string, cost int64) Decision {
	st := q.state(tenant)
	now := q.o.Now()
	nowNano := now.UnixNano()
	if nowNano >= st.dayEnd.Load() {
		q.rollover(st, now)
	}
	if !st.known.Load() {
		return Decision{Err: ErrUnknownTenant}
	}
	if sec := nowNano / 1e9; st.lastUse.Load() != sec {
		st.lastUse.Store(sec)
	}
	if Policy(st.policy.Load()) == PolicyClosed && !q.o.Available() {
		return q.decide(st, now, false, ErrUnavailable)
	}
	if left := st.avail.Add(-cost); left >= 0 {
		// Never spend past the bound recorded in our lease record (read
		// granted before it changes only upward while avail is raised).
		g := st.granted.Load()
		spent, bound := g-left, st.spentMax.Load()
		if spent > bound {
			st.avail.Add(cost)
			return q.slow(st, cost, now)
		}
		// Refill the lease, or raise the bound, in the background while
		// what is left of either still lasts FailoverHorizon: then no
		// request waits for the cluster, not even through a leader
		// election (issue 14). A bound that is already the whole of what
		// is held can only move with the next lease, which the low-water
		// mark asks for.
		if (left <= st.lowWater() || bound < g && spent >= bound-st.margin()) && st.queued.CompareAndSwap(false, true) {
			select {
			case q.refill <- st:
			default:
				st.queued.Store(false)
			}
		}
		return q.decide(st, now, true, nil)
	}
	st.avail.Add(cost)
	if st.exhausted.Load() && nowNano < st.recheck.Load() {
		return q.decide(st, now, false, nil)
	}
	return q.slow(st, cost, now)
}

// lowWater is the level at which a background refill starts: what the
// tenant spends in FailoverHorizon, up to a whole lease, or a quarter of
// the lease if that is more, so that a steady tenant never waits for the
// ledger, even while the cluster elects a leader and a reservation lost
// with the old one times out (Timeout) and is sent again. A replica thus
// holds at most two leases.
//
// Issue 14's cluster test: with at most half a lease (5 s of traffic at
// the default lease_horizon) and a horizon of Timeout + 1s, every replica
// ran dry 3.3 s after the ledger leader's node was killed with -9 and
// waited 2.1-2.8 s, until the cluster had elected a new leader 6.1 s after
// the kill.
func (st *tenantState) lowWater() int64 {
	h := st.leaseHint.Load()
	return max(h/4, min(st.cover.Load(), h), 0)
}

func (q *Quotas) decide(st *tenantState, now time.Time, ok bool, err error) Decision {
	d := Decision{Allowed: ok, Err: err, Reset: max(st.resetAt.Load()-now.Unix(), 0), PeriodEnd: st.periodEnd.Load()}
	limit := st.limit.Load()
	if limit == math.MaxInt64 {
		d.Unlimited = true
		return d
	}
	// What the tenant has used as far as this replica knows: the ledger
	// total at our last operation less our unspent lease (other
	// replicas' unspent leases count as used), or everything once the
	// ledger had nothing left.
	used := limit
	if !st.exhausted.Load() || st.avail.Load() > 0 {
		used = st.total.Load() - st.avail.Load()
	}
	soft := st.soft.Load()
	d.Limit = soft
	d.Remaining = min(max(soft-used, 0), soft)
	if soft < limit {
		d.HasOverage = true
		d.Overage = min(max(used-soft, 0), limit-soft)
	}
	return d
}

// slow reserves a lease synchronously: the local lease is spent.
func (q *Quotas) slow(st *tenantState, cost int64, now time.Time) Decision {
	start := time.Now()
	defer func() { q.waited(time.Since(start)) }()
	st.mu.Lock()
	defer st.mu.Unlock()
	for tries := 0; tries < 3; tries++ {
		if left := st.avail.Add(-cost); left >= 0 {
			if st.granted.Load()-left <= st.spentMax.Load() {
				return q.decide(st, now, true, nil)
			}
			st.avail.Add(cost)
			if q.closing.Load() {
				return q.decide(st, now, false, ErrUnavailable)
			}
			// Tokens are there but not yet recorded as spendable.
			if err := q.recordLocked(st, cost); err != nil {
				return q.unavailable(st, cost, now)
			}
			continue
		}
		st.avail.Add(cost)
		if st.exhausted.Load() && now.UnixNano() < st.recheck.Load() {
			return q.decide(st, now, false, nil)
		}
		if q.closing.Load() {
			// Close is returning every lease: reserve nothing more.
			return q.decide(st, now, false, ErrUnavailable)
		}
		if !q.o.Available() {
			return q.unavailable(st, cost, now)
		}
		granted, err := q.reserveLocked(st, cost)
		if err != nil {
			return q.unavailable(st, cost, now)
		}
		if granted == 0 {
			return q.decide(st, now, false, nil)
		}
	}
	return q.decide(st, now, false, nil)
}

// unavailable decides a request that needs the ledger while it cannot be
// reached: refused, unless the plan is open and its allowance for this
// outage is not used up. What open admits is owed to the ledger and sent
// (once, with a message id) when the ledger is back.
func (q *Quotas) unavailable(st *tenantState, cost int64, now time.Time) Decision {
	l := st.lim.Load()
	if Policy(st.policy.Load()) != PolicyOpen || st.openUsed.Add(cost) > l.OpenAllowance {
		if Policy(st.policy.Load()) == PolicyOpen {
			st.openUsed.Add(-cost)
		}
		return q.decide(st, now, false, ErrUnavailable)
	}
	st.openOwed.Add(cost)
	d := q.decide(st, now, true, nil)
	d.Open = true
	return d
}

// settleOpen sends what the open policy admitted during an outage to the
// ledger, once it is reachable again, and resets the allowance.
func (q *Quotas) settleOpen() {
	for _, st := range q.tenantsWhere(func(st *tenantState) bool { return st.openUsed.Load() != 0 }) {
		st.mu.Lock()
		if owed := st.openOwed.Swap(0); owed > 0 {
			q.enqueue(&ledgerOp{tenant: st.id, period: st.period.Key, day: st.day, id: q.msgID(), delta: owed,
				deadline: q.resendDeadline(q.o.Now())})
			st.total.Add(owed)
			q.o.Log.Info("counting requests admitted while the ledger was unreachable",
				zap.String("tenant", st.id), zap.Int64("requests", owed))
		}
		st.openUsed.Store(0)
		st.mu.Unlock()
	}
}
