package limiter

// outbox.go owns the ledger operations: the message ids that make them
// idempotent, sending one with retries, and the outbox of operations
// (refunds, unsettled reservations, sweeps) that are re-sent in order
// under the same id until the ledger acknowledges them or the duplicate
// window ends.

import (
	"context"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// ledgerOp is a ledger addition to (re)send with a fixed message id until
// the ledger acknowledges it, then its follow-up. Past its deadline (the
// ledger's duplicate window) a re-send could apply twice, so it is dropped
// instead: an unacknowledged reservation then strands its tokens
// (under-admission), never the reverse.
type ledgerOp struct {
	tenant, period, id string
	// day is the day the addition counts on in a DayLedger ("": none);
	// dayOnly says it is an addition to that day alone (a move of a
	// lease's unused tokens at midnight, or a day addition that failed
	// after its period's went through).
	day      string
	dayOnly  bool
	delta    int64
	deadline time.Time
	then     *ledgerOp
	// st, when set, counts this refund in st.refunding until it is sent.
	st *tenantState
}

// DuplicateWindow is the default of QuotaOptions.DuplicateWindow: how
// long the ledger recognises a message id. The store creates its streams
// with the same default (store.DefaultDuplicateWindow).
const DuplicateWindow = 5 * time.Minute

// resendMargin is how long before the end of the duplicate window a
// message id stops being sent: a send started just before the deadline
// may still be retried for a few seconds, and a sweeper's deadline is
// reckoned from a time that another replica's clock wrote (ReturnAt).
const resendMargin = 30 * time.Second

// resendDeadline is the last moment at which a ledger operation first
// sent (or, for a sweep, named) at from may still be sent under its
// message id: the ledger would recognise it as a duplicate if it applied
// it already. Past it, the operation is dropped rather than risk applying
// it twice.
func (q *Quotas) resendDeadline(from time.Time) time.Time {
	return from.Add(q.o.DuplicateWindow - resendMargin)
}

func (q *Quotas) msgID() string {
	return q.o.ReplicaID + "." + strconv.FormatUint(q.seq.Add(1), 36)
}

// add sends one ledger addition, retrying with the same id within the
// timeout and ctx.
//
// The same addition is then made to day, when the ledger keeps days: under
// the same id, so that a re-sent operation counts once on its day too. If
// that fails it is queued and re-sent on its own: the period's count, on
// which admission depends, is not held back by the history.
func (q *Quotas) add(ctx context.Context, tenant, period, day string, delta int64, id string) (int64, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, q.o.Timeout)
	defer cancel()
	var err error
	for try := 0; ; try++ {
		q.ops.Add(1)
		var total int64
		var dup bool
		total, dup, err = q.o.Ledger.Add(ctx, tenant, period, delta, id)
		if err == nil {
			q.addDay(ctx, tenant, period, day, delta, id)
			if q.o.Totals != nil && !strings.HasSuffix(period, RefundedSuffix) {
				q.o.Totals(tenant, period, total)
			}
			return total, dup, nil
		}
		if ctx.Err() != nil || try == 2 {
			return 0, false, err
		}
		select {
		case <-ctx.Done():
			return 0, false, err
		case <-time.After(time.Duration(50*(try+1)) * time.Millisecond):
		}
	}
}

// refund returns n tokens of tenant's period in the background. st is
// given when period is st's current period, so Usage can discount tokens
// on their way back.
func (q *Quotas) refund(tenant, period, day string, n int64, st *tenantState) {
	if n <= 0 {
		return
	}
	q.stats.returned(ReturnUnused, n)
	if st != nil {
		st.refunding.Add(n)
	}
	q.enqueue(&ledgerOp{tenant: tenant, period: period, day: day, id: q.msgID(), delta: -n,
		deadline: q.resendDeadline(q.o.Now()), st: st})
}

func (q *Quotas) enqueue(op *ledgerOp) {
	q.pendingMu.Lock()
	q.pending = append(q.pending, op)
	q.pendingMu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// flushPending sends queued ledger operations in order; it stops at the
// first failure (or when ctx ends) and keeps the rest. It reports whether
// nothing is left.
func (q *Quotas) flushPending(ctx context.Context) bool {
	q.flushMu.Lock()
	defer q.flushMu.Unlock()
	for {
		q.pendingMu.Lock()
		if len(q.pending) == 0 {
			q.pendingMu.Unlock()
			return true
		}
		op := q.pending[0]
		q.pendingMu.Unlock()
		if q.o.Now().After(op.deadline) {
			q.o.Log.Warn("ledger operation dropped after the duplicate window; its tokens stay reserved",
				zap.String("tenant", op.tenant), zap.String("period", op.period), zap.Int64("delta", op.delta))
			op.done()
			q.popPending(nil)
			continue
		}
		if op.dayOnly {
			if err := q.addDayOnly(ctx, op); err != nil {
				return false
			}
		} else {
			// The period first, and the refund it settles is no longer
			// discounted by Usage as soon as the ledger has it; then the
			// day, which Daily discounts the same way.
			if _, _, err := q.add(ctx, op.tenant, op.period, "", op.delta, op.id); err != nil {
				return false
			}
			op.done()
			q.addDay(ctx, op.tenant, op.period, op.day, op.delta, op.id)
			q.popPending(op.then)
			continue
		}
		op.done()
		q.popPending(op.then)
	}
}

// addDay makes an addition that the period's count took to day as well,
// under the same id; if that fails it is queued and re-sent on its own.
func (q *Quotas) addDay(ctx context.Context, tenant, period, day string, delta int64, id string) {
	dl, ok := q.o.Ledger.(DayLedger)
	if !ok || day == "" || delta == 0 {
		return
	}
	q.dayOps.Add(1)
	ctx, cancel := context.WithTimeout(ctx, q.o.Timeout)
	defer cancel()
	if dl.AddDay(ctx, tenant, day, delta, id) != nil {
		q.enqueue(&ledgerOp{tenant: tenant, period: period, day: day, dayOnly: true, id: id, delta: delta,
			deadline: q.resendDeadline(q.o.Now())})
	}
}

// addDayOnly sends an addition to a day alone.
func (q *Quotas) addDayOnly(ctx context.Context, op *ledgerOp) error {
	dl, ok := q.o.Ledger.(DayLedger)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, q.o.Timeout)
	defer cancel()
	q.dayOps.Add(1)
	return dl.AddDay(ctx, op.tenant, op.day, op.delta, op.id)
}

func (op *ledgerOp) done() {
	if op.st != nil && !op.dayOnly {
		op.st.refunding.Add(op.delta) // delta is the negative refund
	}
}

func (q *Quotas) popPending(then *ledgerOp) {
	q.pendingMu.Lock()
	q.pending = q.pending[1:]
	if then != nil {
		q.pending = append([]*ledgerOp{then}, q.pending...)
	}
	q.pendingMu.Unlock()
}

// pendingRefunded is what queued additions to tenant's refunded counter
// of period add up to.
func (q *Quotas) pendingRefunded(tenant, period string) int64 {
	q.pendingMu.Lock()
	defer q.pendingMu.Unlock()
	var n int64
	for _, op := range q.pending {
		if op.tenant == tenant && op.period == period {
			n += op.delta
		}
	}
	return n
}

// Pending returns the number of ledger operations waiting to be sent.
func (q *Quotas) Pending() int {
	q.pendingMu.Lock()
	defer q.pendingMu.Unlock()
	return len(q.pending)
}

// addDays sends the day additions of a batch whose period additions the
// ledger applied; those it cannot send are queued and re-sent one by one.
func (q *Quotas) addDays(ctx context.Context, adds []Addition) {
	dl, ok := q.o.Ledger.(DayLedger)
	if !ok {
		return
	}
	q.dayOps.Add(int64(len(adds)))
	actx, cancel := context.WithTimeout(ctx, q.o.Timeout)
	err := dl.AddDays(actx, adds)
	cancel()
	if err == nil {
		return
	}
	dl2 := q.resendDeadline(q.o.Now())
	for _, a := range adds {
		if a.Day != "" {
			q.enqueue(&ledgerOp{tenant: a.Tenant, period: a.Period, day: a.Day, dayOnly: true, id: a.MsgID, delta: a.Delta, deadline: dl2})
		}
	}
}

// dayOf is the day it is now for tenant, in its time zone.
func (q *Quotas) dayOf(tenant string) string {
	l, _ := q.o.Limits(tenant)
	loc := l.Location
	if loc == nil {
		loc = q.o.Location
	}
	return q.o.Now().In(loc).Format(DayLayout)
}
