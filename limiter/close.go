package limiter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Returning leases on Close.
//
// Each tenant whose lease has unused tokens costs three writes: its lease
// record is lowered to what was spent and names the message id of the
// return, the tokens go back to the ledger under that id, and the record
// is deleted. Written in that order, stopping anywhere is safe: until the
// record is lowered it still covers the tokens (a sweeper returns what is
// above its spending bound once it expires, as after a crash); once it is
// lowered, a sweeper sends the same return under the same id, which the
// ledger applies at most once. A record is never deleted before its
// tokens are back.
//
// With a store that takes atomic batches, the writes of up to closeChunk
// tenants go in one batch each (one fsync with nats.sync_always, where
// single writes on one stream run at one to three thousand a second
// whatever the concurrency), closeBatchWorkers chunks at a time; otherwise
// (and for what a batch could not do) closeWorkers tenants are returned at
// a time, one write after the other.
const (
	closeChunk        = 500
	closeBatchWorkers = 4
	closeWorkers      = 32
)

// closeTally counts what Close did.
type closeTally struct {
	// sem bounds the tenants returned one by one at once.
	sem             chan struct{}
	tenants, tokens atomic.Int64 // returned, or with nothing to return
	// left: tenants whose tokens were not returned, and those tokens;
	// uncovered: of them, tokens that no lease record covers either.
	leftTenants, leftTokens, uncovered atomic.Int64
}

func (t *closeTally) done(n int64) { t.tenants.Add(1); t.tokens.Add(n) }

// leftLocked counts st as not returned, untouched. st.mu must be held.
func (t *closeTally) leftLocked(st *tenantState) { t.left(max(st.avail.Load(), 0), st.rev != 0) }

func (t *closeTally) left(n int64, covered bool) {
	t.leftTenants.Add(1)
	t.leftTokens.Add(n)
	if !covered {
		t.uncovered.Add(n)
	}
}

// Close returns every unused token to the ledger and deletes this
// replica's lease records, working on many tenants at once, and sends the
// ledger operations still queued. It stops when ctx ends: what it could
// not return stays covered by lease records, which other replicas sweep
// once they expire (quota.lease_ttl), and the count is logged. Close is
// final: afterwards Admit reserves nothing more.
func (q *Quotas) Close(ctx context.Context) error {
	start := time.Now()
	q.closing.Store(true)
	q.settleOpen()
	q.flushRefunded()
	flushed := make(chan bool, 1)
	go func() { flushed <- q.flushUntil(ctx) }()

	// Not under tenants.Range: st.mu may be held by a refill waiting on
	// NATS (see tenantsWhere).
	var sts []*tenantState
	for _, st := range q.tenantsWhere(nil) {
		st.mu.Lock()
		if st.avail.Load() > 0 || st.rev != 0 {
			sts = append(sts, st)
		}
		st.mu.Unlock()
	}
	t := closeTally{sem: make(chan struct{}, closeWorkers)}
	bl, _ := q.o.Ledger.(BatchLedger)
	bb, _ := q.o.Leases.(BatchLeaseBook)
	if bl != nil && (q.o.Leases == nil || bb != nil) {
		q.retireBatched(ctx, sts, bl, bb, &t)
	} else {
		q.retireEach(ctx, sts, &t)
	}
	q.closeDaysMu.Lock()
	days := q.closeDays
	q.closeDays = nil
	q.closeDaysMu.Unlock()
	q.addDays(ctx, days)
	sent := <-flushed
	if sent {
		sent = q.flushUntil(ctx)
	}
	took := time.Since(start)
	q.o.Log.Info("quota leases returned", zap.Int64("tenants", t.tenants.Load()), zap.Int64("tokens", t.tokens.Load()),
		zap.Duration("took", took))
	if n := t.leftTenants.Load(); n > 0 {
		q.o.Log.Warn("quota tokens not returned: lease records return them when they expire, less what each record allowed to be spent",
			zap.Int64("tenants", n), zap.Int64("tokens", t.leftTokens.Load()),
			zap.Int64("tokens_without_record", t.uncovered.Load()), zap.Duration("took", took), zap.Error(ctx.Err()))
	}
	if t.leftTenants.Load() > 0 || !sent {
		err := ctx.Err()
		if err == nil {
			err = ErrUnavailable
		}
		return fmt.Errorf("limiter: tokens of %d tenants not returned (%d tokens), %d ledger operations not sent: %w",
			t.leftTenants.Load(), t.leftTokens.Load(), q.Pending(), err)
	}
	return nil
}

// flushUntil sends queued ledger operations until none is left or ctx
// ends, and reports whether none is left.
func (q *Quotas) flushUntil(ctx context.Context) bool {
	for {
		if q.flushPending(ctx) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// each runs f(i) for i in [0, n), as many at once as t.sem allows.
func (t *closeTally) each(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		t.sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-t.sem; wg.Done() }()
			f(i)
		}()
	}
	wg.Wait()
}

// workers runs f(i) for i in [0, n) on up to w goroutines.
func workers(n, w int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, w) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		}()
	}
	wg.Wait()
}

// retireEach returns the tenants' leases one tenant at a time, closeWorkers
// at once.
func (q *Quotas) retireEach(ctx context.Context, sts []*tenantState, t *closeTally) {
	t.each(len(sts), func(i int) {
		st := sts[i]
		st.mu.Lock()
		defer st.mu.Unlock()
		if ctx.Err() != nil {
			t.leftLocked(st)
			return
		}
		q.retireLocked(ctx, st, t)
	})
}

// returned books n tokens of st as given back to the ledger. st.mu must
// be held.
func (q *Quotas) returned(st *tenantState, n int64) {
	g := st.granted.Add(-n)
	st.total.Add(-n)
	if q.o.Leases != nil && st.spentMax.Load() > g {
		st.spentMax.Store(g)
	}
}

// retireLocked returns st's unused tokens and deletes its lease record,
// in the order described above. st.mu must be held.
func (q *Quotas) retireLocked(ctx context.Context, st *tenantState, t *closeTally) {
	n := st.takeAvail()
	period := st.period.Key
	if q.o.Leases == nil || st.rev == 0 {
		if n > 0 {
			if _, _, err := q.add(ctx, st.id, period, st.day, -n, q.msgID()); err != nil {
				t.left(n, false)
				return
			}
			q.stats.returned(ReturnShutdown, n)
			q.returned(st, n)
		}
		t.done(n)
		return
	}
	if n == 0 {
		// Everything held is spent: the record protects nothing.
		q.deleteRecordLocked(ctx, st)
		t.done(0)
		return
	}
	g := st.granted.Load()
	now := q.o.Now()
	id := q.msgID()
	rec := LeaseRecord{Reserved: g, SpentMax: g - n, Expires: now.Add(q.o.LeaseTTL), ReturnID: id, ReturnAt: now, Day: st.day}
	for try := 0; ; try++ {
		if try == 2 {
			q.o.Log.Warn("lease record keeps vanishing", zap.String("tenant", st.id))
			t.left(n, false)
			return
		}
		wctx, cancel := context.WithTimeout(ctx, q.o.Timeout)
		q.recordOps.Add(1)
		rev, gone, err := q.o.Leases.Put(wctx, st.id, period, q.o.ReplicaID, rec, st.rev)
		cancel()
		if err != nil {
			// Written or not, a record covers the tokens: the old one,
			// or the new one naming a return nobody has sent.
			st.rev = 0
			t.left(n, true)
			return
		}
		if !gone {
			st.rev, st.recExp, st.recReserved, st.recBound = rev, rec.Expires, rec.Reserved, rec.SpentMax
			st.pendReturn = 0
			break
		}
		// A sweeper took us for dead and returned what our record held
		// above its spending bound: those tokens are no longer ours. They
		// were taken from avail with the rest of n above.
		swept := q.sweptLocked(st, false)
		n, g = n-swept, g-swept
		if n <= 0 {
			t.done(0)
			return
		}
		rec.Reserved, rec.SpentMax = g, g-n
	}
	if _, _, err := q.add(ctx, st.id, period, st.day, -n, id); err != nil {
		// The record names this return: a sweeper sends it again.
		st.rev = 0
		t.left(n, true)
		return
	}
	q.returned(st, n)
	q.stats.returned(ReturnShutdown, n)
	q.deleteRecordLocked(ctx, st)
	t.done(n)
}

// deleteRecordLocked deletes st's lease record, which must cover no
// token that is not spent or back in the ledger. Left behind, it is
// harmless: a sweeper finds nothing to return, or re-sends a return the
// ledger recognises.
func (q *Quotas) deleteRecordLocked(ctx context.Context, st *tenantState) {
	ctx, cancel := context.WithTimeout(ctx, q.o.Timeout)
	defer cancel()
	_ = q.o.Leases.Delete(ctx, st.id, st.period.Key, q.o.ReplicaID, st.rev)
	st.rev, st.recExp = 0, time.Time{}
}

// retiring is one tenant's part in a batched return.
type retiring struct {
	st       *tenantState
	n        int64  // unused tokens taken from the lease
	id       string // message id of the return; "" when there is none
	rec      bool   // a record covers the tokens: lower it first
	del      bool   // delete the record at the end
	recorded bool   // the lowered record is written
	returned bool   // the tokens are back in the ledger
	skip     bool   // dealt with, or given up
}

// retireBatched returns the tenants' leases closeChunk tenants at a time,
// with one batch per step, closeBatchWorkers chunks at once.
func (q *Quotas) retireBatched(ctx context.Context, sts []*tenantState, bl BatchLedger, bb BatchLeaseBook, t *closeTally) {
	chunks := (len(sts) + closeChunk - 1) / closeChunk
	workers(chunks, closeBatchWorkers, func(c int) {
		chunk := sts[c*closeChunk : min((c+1)*closeChunk, len(sts))]
		if ctx.Err() != nil {
			for _, st := range chunk {
				st.mu.Lock()
				t.leftLocked(st)
				st.mu.Unlock()
			}
			return
		}
		q.retireChunk(ctx, chunk, bl, bb, t)
	})
}

func (q *Quotas) retireChunk(ctx context.Context, chunk []*tenantState, bl BatchLedger, bb BatchLeaseBook, t *closeTally) {
	// Hold every tenant of the chunk until it is done: nothing else may
	// write its record or reserve for it meanwhile.
	for _, st := range chunk {
		st.mu.Lock()
	}
	defer func() {
		for _, st := range chunk {
			st.mu.Unlock()
		}
	}()
	now := q.o.Now()
	items := make([]retiring, 0, len(chunk))
	var writes []LeaseWrite
	for _, st := range chunk {
		it := retiring{st: st, n: st.takeAvail()}
		switch {
		case q.o.Leases == nil || st.rev == 0:
			if it.n == 0 {
				t.done(0)
				continue
			}
			it.id = q.msgID()
		case it.n == 0:
			it.del = true
		default:
			it.id, it.rec, it.del = q.msgID(), true, true
			g := st.granted.Load()
			writes = append(writes, LeaseWrite{Tenant: st.id, Period: st.period.Key, Replica: q.o.ReplicaID, Rev: st.rev,
				Record: LeaseRecord{Reserved: g, SpentMax: g - it.n, Expires: now.Add(q.o.LeaseTTL), ReturnID: it.id, ReturnAt: now, Day: st.day}})
		}
		items = append(items, it)
	}

	// 1. Lower the records and name the returns.
	if len(writes) > 0 {
		q.recordOps.Add(int64(len(writes)))
		wctx, cancel := context.WithTimeout(ctx, q.o.Timeout)
		err := bb.PutAll(wctx, writes)
		cancel()
		var single []*tenantState
		for i := range items {
			it := &items[i]
			switch {
			case !it.rec:
			case err == nil:
				it.recorded = true
				it.st.rev = 0 // deleted below whatever its revision
			case errors.Is(err, ErrRejected) && ctx.Err() == nil:
				// Nothing was written (a record was swept, or the store
				// took no batch): one by one instead.
				it.st.avail.Add(it.n)
				single = append(single, it.st)
				it.skip = true
			default:
				// Written or not, a record covers the tokens.
				it.st.rev = 0
				t.left(it.n, true)
				it.skip = true
			}
		}
		// This goroutine holds their locks for them.
		t.each(len(single), func(k int) { q.retireLocked(ctx, single[k], t) })
	}

	// 2. Return the tokens.
	var adds []Addition
	for _, it := range items {
		if !it.skip && it.id != "" {
			adds = append(adds, Addition{Tenant: it.st.id, Period: it.st.period.Key, Delta: -it.n, MsgID: it.id, Day: it.st.day})
		}
	}
	if len(adds) > 0 {
		q.ops.Add(int64(len(adds)))
		actx, cancel := context.WithTimeout(ctx, q.o.Timeout)
		err := bl.AddAll(actx, adds)
		cancel()
		var failed []int
		for i := range items {
			it := &items[i]
			if it.skip || it.id == "" {
				continue
			}
			if err == nil {
				it.returned = true
			} else {
				failed = append(failed, i)
			}
		}
		if err == nil {
			// Their days are sent once every lease is back: the
			// history does not hold up the returns.
			q.closeDaysMu.Lock()
			q.closeDays = append(q.closeDays, adds...)
			q.closeDaysMu.Unlock()
		}
		// Some may have been applied: re-send each under its id, which
		// the ledger applies at most once.
		t.each(len(failed), func(k int) {
			it := &items[failed[k]]
			if ctx.Err() != nil {
				return
			}
			if _, _, err := q.add(ctx, it.st.id, it.st.period.Key, it.st.day, -it.n, it.id); err == nil {
				it.returned = true
			}
		})
		for i := range items {
			it := &items[i]
			if it.skip || it.id == "" {
				continue
			}
			if !it.returned {
				// A lowered record names this return: a sweeper sends it
				// again. Without a record the tokens stay counted.
				t.left(it.n, it.recorded)
				it.skip = true
				continue
			}
			q.returned(it.st, it.n)
			q.stats.returned(ReturnShutdown, it.n)
		}
	}

	// 3. Delete the records whose tokens are spent or back.
	var dels []LeaseWrite
	for _, it := range items {
		if it.skip {
			continue
		}
		if it.del {
			dels = append(dels, LeaseWrite{Tenant: it.st.id, Period: it.st.period.Key, Replica: q.o.ReplicaID})
			it.st.rev, it.st.recExp = 0, time.Time{}
		}
		t.done(it.n)
	}
	if len(dels) > 0 && ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, q.o.Timeout)
		if err := bb.DeleteAll(dctx, dels); err != nil {
			q.o.Log.Info("lease records left to expire", zap.Int("records", len(dels)), zap.Error(err))
		}
		cancel()
	}
}
