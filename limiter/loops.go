package limiter

// loops.go owns the manager's background work, started by Run: refills of
// leases running low, the outbox's sender, and the periodic returns of
// idle leases, settling of the open policy, heartbeats and sweeps.

import (
	"context"
	"sync"
	"time"
)

// Run refills leases in the background, returns idle leases and retries
// pending ledger operations until ctx ends.
func (q *Quotas) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	// Refills run on goroutines of their own: a busy tenant must never
	// wait behind the bulk work below (returning thousands of idle leases).
	wg.Add(1)
	go func() {
		defer wg.Done()
		q.refillLoop(ctx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		q.pendingLoop(ctx)
	}()
	tick := time.NewTicker(max(min(q.o.LeaseIdle/4, q.o.LeaseTTL/6), 50*time.Millisecond))
	defer tick.Stop()
	var nextSweep time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if q.closing.Load() {
				continue // Close returns and records everything itself
			}
			q.returnIdle(false)
			q.flushRefunded()
			if q.o.Available() {
				q.settleOpen()
			}
			q.heartbeat()
			if now := q.o.Now(); now.After(nextSweep) {
				q.sweep()
				nextSweep = now.Add(q.o.LeaseTTL / 3)
			}
		}
	}
}

// maxRefills bounds the refills in flight. Each waits on a fsync'd ledger
// write and a lease record write, which on a saturated core take tens of
// milliseconds each (measured: 20-90 ms with 1,000 tenants on one core),
// so it takes many at once to keep up with tenants whose leases run low
// together, as they do after a start; and the store sends writes made at
// the same time in one batch, one fsync. (Four refill workers let 2-10%
// of requests wait 35-60 ms on average: TestQuotaManyActiveTenants.)
const maxRefills = 64

// refillLoop starts a refill for each tenant queued, up to maxRefills at
// once, until ctx ends.
func (q *Quotas) refillLoop(ctx context.Context) {
	sem := make(chan struct{}, maxRefills)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		var st *tenantState
		select {
		case <-ctx.Done():
			return
		case st = <-q.refill:
		}
		select {
		case <-ctx.Done():
			st.queued.Store(false)
			return
		case sem <- struct{}{}:
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			q.refillOne(st)
		}()
	}
}

// refillOne reserves st's next lease if it runs low and raises its
// recorded spending bound.
func (q *Quotas) refillOne(st *tenantState) {
	// Clear queued when done, not before: requests that pass the low-water
	// mark meanwhile must not start more refills of the same tenant, which
	// would each write its lease record as spending moves on.
	defer st.queued.Store(false)
	if !q.o.Available() || q.closing.Load() {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.avail.Load() <= st.lowWater() && !st.exhausted.Load() {
		_, _ = q.reserveLocked(st, 1)
	}
	_ = q.recordLocked(st, 1)
}

// pendingLoop sends queued ledger operations (refunds, retries).
func (q *Quotas) pendingLoop(ctx context.Context) {
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-q.kick:
		case <-retry.C:
		}
		if !q.flushPending(ctx) {
			retry.Reset(500 * time.Millisecond)
		}
	}
}

// returnIdle refunds the unused tokens of leases idle for LeaseIdle, or of
// all leases when all is set.
func (q *Quotas) returnIdle(all bool) {
	idleBefore := q.o.Now().Add(-q.o.LeaseIdle).Unix()
	for _, st := range q.tenantsWhere(func(st *tenantState) bool {
		return (all || st.lastUse.Load() <= idleBefore) && st.avail.Load() > 0
	}) {
		if q.closing.Load() {
			return
		}
		st.mu.Lock()
		q.giveBackLocked(st, all)
		st.mu.Unlock()
	}
}

// tenantsWhere returns the tenants for which keep, which may read only
// atomics, says yes (all of them when keep is nil). Work that may wait
// on NATS, or on a tenant's lock (which a refill holds while it waits on
// NATS), runs over this list, never inside tenants.Range: Range holds a
// shard's read lock while it calls back, and a tenant's first request
// waiting there for the write lock (GetOrCreate) blocks every later
// reader of the shard, the requests of a 64th of all tenants, until the
// callback is done: for a heartbeat's record write lost with its leader,
// Timeout.
func (q *Quotas) tenantsWhere(keep func(st *tenantState) bool) []*tenantState {
	var out []*tenantState
	q.tenants.Range(func(_ string, st *tenantState) bool {
		if keep == nil || keep(st) {
			out = append(out, st)
		}
		return true
	})
	return out
}

// RefundedSuffix ends the ledger period key under which a tenant's
// refunded requests are counted ("2026-12.refunded"): a counter of its
// own beside the period's, which refunds do not change (the tokens go
// back to the lease and are spent again or returned with it).
const RefundedSuffix = ".refunded"

// flushRefunded queues the refunds counted since the last flush as
// additions to each tenant's refunded counter, each with its message id:
// counted once whatever replica refunded and however often it is sent.
func (q *Quotas) flushRefunded() {
	for _, st := range q.tenantsWhere(func(st *tenantState) bool { return st.refunded.Load() != 0 }) {
		st.mu.Lock()
		q.queueRefundedLocked(st)
		st.mu.Unlock()
	}
}

// queueRefundedLocked queues st's refunds of its current period; st.mu
// must be held (a new period starts under it).
func (q *Quotas) queueRefundedLocked(st *tenantState) {
	if n := st.refunded.Swap(0); n != 0 && st.period.Key != "" {
		q.enqueue(&ledgerOp{tenant: st.id, period: st.period.Key + RefundedSuffix, id: q.msgID(), delta: n,
			deadline: q.resendDeadline(q.o.Now())})
	}
}
