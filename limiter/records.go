package limiter

// records.go owns this replica's lease records, which bound what a crash
// can strand: raising the recorded spending bound ahead of spending,
// writing a record with compare-and-set, recovering when a sweeper took
// ours for dead, refreshing records (heartbeat), and sweeping the expired
// records of other replicas.

import (
	"context"
	"errors"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// step is how far the recorded spending bound moves ahead of spending: half
// a lease, or the whole lease up to minStep tokens, or what the tenant
// spends in 4/3 FailoverHorizon up to the whole lease (so that margin
// covers the horizon). A crash strands what the bound is ahead of spending
// and what no record covers yet, together at most what the replica holds
// (see strandShare): the step is never more than a lease, and for a busy
// tenant it is the whole lease. The bound is raised, off the request path, when
// spending comes within margin of it: for a slow tenant a quarter step, so
// about three record writes per lease (two for a small one); for a busy
// one up to four per step.
func (st *tenantState) step() int64 {
	h := st.leaseHint.Load()
	return max(h/2, min(h, minStep), min(st.cover.Load()*4/3, h), 1)
}

// margin is how close spending may come to the recorded bound before a
// background write raises it: what the tenant spends in FailoverHorizon,
// up to three quarters of a step, or a quarter step if that is more. The
// raise must be written before spending reaches the bound, or requests
// wait for it; through a leader election that takes the election plus,
// for a write on its way to the old leader (or queued in the store behind
// one), Timeout before it is sent again. Three quarters of a step leave
// the bound where it was (a step ahead) and every raise a quarter step.
//
// Issue 14's stall: the margin was a quarter step alone, 125 tokens of a
// lease of 1,000, about a second of traffic at 100-250 requests/s. When
// the ledger's leader stopped, a write of the replica's was on its way to
// it and timed out after 2 s, and the store sent the replica's later
// writes to that stream after it: a raise (or refill) waited that long
// while holding st.mu, spending reached the bound, and every request then
// waited in slow for st.mu and a record write of its own: up to 0.5-1.3 s
// in TestLeaderFailoverKeepsAdmitting.
func (st *tenantState) margin() int64 {
	s := st.step()
	return max(s/4, min(st.cover.Load(), s*3/4))
}

// minStep: the spending bound runs at least this many tokens ahead (or a
// whole lease, if smaller). Half of a small lease is only seconds of a
// tenant's traffic, and while leases grow after a start (10, 40, 160
// tokens) a thousand tenants raising their bounds every few requests made
// requests wait for record writes queued behind each other: in
// TestQuotaManyActiveTenants's 2-10 s window 7.9 requests in 1,000 waited
// (p99.9 73 ms) with half a lease, 1.0 (p99.9 1.8 ms) with this, and
// record writes per 1,000 requests fell from 61 to 30. The step is still
// at most a lease, whose cap keeps what a crash strands within 1% of the
// month (strandShare).
const minStep = 100

// recordLocked raises the recorded spending bound so that need more
// tokens may be spent, half a lease ahead, writing the lease record.
func (q *Quotas) recordLocked(st *tenantState, need int64) error {
	if q.o.Leases == nil {
		return nil
	}
	g := st.granted.Load()
	spent := g - st.avail.Load()
	w := min(g, max(st.spentMax.Load(), spent+need+st.step()))
	// Skip the write only if the record says all of it already: a lease
	// granted since the last write must be recorded too, or a sweeper
	// after a crash would return only the tokens of the older leases.
	if w == st.spentMax.Load() && g == st.recReserved && st.rev != 0 && q.o.Now().Add(q.o.LeaseTTL/2).Before(st.recExp) {
		return nil
	}
	if err := q.putRecordLocked(st, LeaseRecord{Reserved: g, SpentMax: w, Expires: q.o.Now().Add(q.o.LeaseTTL)}); err != nil {
		return err
	}
	st.spentMax.Store(w)
	return nil
}

// putRecordLocked writes st's lease record with compare-and-set. If a
// sweeper removed it (we were taken for dead), it already returned what
// the record held beyond its spending bound: those tokens are dropped here
// before the record is written anew.
func (q *Quotas) putRecordLocked(st *tenantState, rec LeaseRecord) error {
	rec.Day = st.day
	ctx, cancel := context.WithTimeout(context.Background(), q.o.Timeout)
	defer cancel()
	for try := 0; try < 2; try++ {
		q.recordOps.Add(1)
		rev, gone, err := q.o.Leases.Put(ctx, st.id, st.period.Key, q.o.ReplicaID, rec, st.rev)
		if err != nil {
			// Applied or not: a sweeper may find either record.
			st.pendReturn = max(st.pendReturn, rec.Reserved-rec.SpentMax)
			return err
		}
		if !gone {
			st.rev, st.recExp, st.recReserved, st.recBound = rev, rec.Expires, rec.Reserved, rec.SpentMax
			st.pendReturn = 0
			return nil
		}
		swept := q.sweptLocked(st, true)
		rec.Reserved -= swept
		rec.SpentMax = min(rec.SpentMax, rec.Reserved)
	}
	return errors.New("limiter: lease record keeps vanishing")
}

// sweptLocked books what a sweeper did when it took st's lease record for
// dead (a write found the record gone): it returned to the ledger every
// token the record held above its spending bound, so those tokens are no
// longer ours. It drops them from granted and total, forgets the record
// (st.rev = 0: the next write creates it anew) and returns how many were
// dropped. st.mu must be held.
//
// What the sweeper returned is what the record it deleted said: reserved −
// bound as we last wrote it, not as we hold it now. Tokens reserved since
// (a lease granted while the record could not be written, which is how
// the record came to expire) are still ours and in the ledger; dropping
// them too burned 612 of a tenant's 5,000 in issue 14's cluster test,
// when the leases bucket's leader was killed. If a write whose outcome is
// unknown came last, the record was either; the larger return is dropped,
// so that nothing is spent twice (at worst its difference is stranded).
//
// The tokens are unspent, so they are also in the lease's avail, unless
// the caller took them out of avail already: putRecordLocked leaves them
// there (fromAvail: they are taken here, before granted, so that Admit's
// spent = granted − avail never reads low), while retireLocked took the
// whole of avail first and deducts them from what it returns itself.
func (q *Quotas) sweptLocked(st *tenantState, fromAvail bool) int64 {
	swept := min(max(st.recReserved-st.recBound, st.pendReturn, 0), st.granted.Load()-st.spentMax.Load())
	st.pendReturn = 0
	q.stats.lost(swept)
	q.o.Log.Warn("our lease record was swept; dropping the tokens returned for us",
		zap.String("tenant", st.id), zap.Int64("tokens", swept))
	if fromAvail {
		st.avail.Add(-swept)
	}
	q.returned(st, swept)
	st.rev = 0
	return swept
}

// sweep returns, for lease records of other replicas that expired (their
// replica stopped refreshing them: crashed, or cut off), the tokens above
// their spending bound. A compare-and-set delete makes one sweeper win.
func (q *Quotas) sweep() {
	if q.o.Leases == nil || !q.o.Available() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*q.o.Timeout)
	defer cancel()
	expired, err := q.o.Leases.Expired(ctx, q.o.Now())
	if err != nil {
		return
	}
	for _, e := range expired {
		if e.Replica == q.o.ReplicaID || q.closing.Load() {
			continue
		}
		won, err := q.o.Leases.Sweep(ctx, e)
		if err != nil || !won {
			continue
		}
		n := e.Record.Reserved - e.Record.SpentMax
		if n <= 0 {
			continue
		}
		id := "sweep." + e.Replica + "." + e.Tenant + "." + e.Period + "." + strconv.FormatUint(e.Rev, 10)
		deadline := q.resendDeadline(q.o.Now())
		if e.Record.ReturnID != "" {
			// Its replica was returning them itself when it stopped: send
			// the same message, which the ledger applies at most once
			// while it remembers the id.
			id, deadline = e.Record.ReturnID, q.resendDeadline(e.Record.ReturnAt)
			if q.o.Now().After(deadline) {
				q.o.Log.Warn("tokens of an expired lease left stranded: its replica may have returned them and the ledger no longer recognises the return",
					zap.String("tenant", e.Tenant), zap.String("replica", e.Replica), zap.Int64("tokens", n))
				continue
			}
		}
		q.stats.swept(n)
		q.o.Log.Info("returning tokens of an expired lease", zap.String("tenant", e.Tenant),
			zap.String("replica", e.Replica), zap.Int64("tokens", n))
		day := e.Record.Day
		if day == "" {
			day = q.dayOf(e.Tenant)
		}
		q.enqueue(&ledgerOp{tenant: e.Tenant, period: e.Period, day: day, id: id, delta: -n, deadline: deadline})
	}
}

// heartbeat refreshes lease records about to expire while their tokens
// are still held.
func (q *Quotas) heartbeat() {
	if q.o.Leases == nil || !q.o.Available() {
		return
	}
	soon := q.o.Now().Add(q.o.LeaseTTL / 2)
	for _, st := range q.tenantsWhere(nil) {
		if q.closing.Load() {
			return
		}
		st.mu.Lock()
		switch {
		case st.rev == 0 || !st.recExp.Before(soon):
		case st.avail.Load() <= 0 && st.spentMax.Load() >= st.granted.Load():
			// Every token held is spent: the record protects nothing.
			// Delete it instead of refreshing it forever.
			ctx, cancel := context.WithTimeout(context.Background(), q.o.Timeout)
			if q.o.Leases.Delete(ctx, st.id, st.period.Key, q.o.ReplicaID, st.rev) == nil {
				st.rev, st.recExp = 0, time.Time{}
			}
			cancel()
		default:
			_ = q.putRecordLocked(st, LeaseRecord{Reserved: st.granted.Load(), SpentMax: st.spentMax.Load(),
				Expires: q.o.Now().Add(q.o.LeaseTTL)})
		}
		st.mu.Unlock()
	}
}
