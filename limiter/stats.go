package limiter

// stats.go owns the counters of lease work that metrics export:
// reservations, refunds, returns and sweeps. Each is counted with an
// atomic add where the work is done, none of it on the request path but
// Refund's (a request that failed through the client's fault).

import "sync/atomic"

// Why unused tokens go back to the ledger: the index of LeaseStats'
// Returns and ReturnedTokens.
const (
	// ReturnExcess: a reservation got more than fits under the limit, and
	// the rest is refunded at once.
	ReturnExcess = iota
	// ReturnUnused: a lease idle for lease_idle, or left at the end of its
	// period.
	ReturnUnused
	// ReturnShutdown: Close returns every lease.
	ReturnShutdown
	numReturnReasons
)

// ReturnReasons names the reasons for returns, by index.
var ReturnReasons = [numReturnReasons]string{"excess", "unused", "shutdown"}

// LeaseStats counts a Quotas' lease work since it was made.
type LeaseStats struct {
	// Reservations are the leases reserved from the ledger (acknowledged
	// increments), ReservedTokens the tokens they granted.
	Reservations, ReservedTokens int64
	// ReserveFailures are the reservations the ledger did not
	// acknowledge: re-sent and refunded in the background.
	ReserveFailures int64
	// Refunds are the admitted requests given back to the lease because
	// they failed through the client's fault (Refund), RefundedTokens
	// their cost.
	Refunds, RefundedTokens int64
	// Returns are the returns of unused tokens to the ledger (sent or
	// queued), and ReturnedTokens their tokens, by reason (ReturnExcess,
	// ReturnUnused, ReturnShutdown).
	Returns, ReturnedTokens [numReturnReasons]int64
	// Sweeps are the expired lease records of other replicas this replica
	// swept, SweptTokens the tokens it returned for them.
	Sweeps, SweptTokens int64
	// LostRecords are this replica's lease records that another replica
	// swept (it took this one for dead), LostTokens the tokens it returned
	// for this replica, which this one then dropped.
	LostRecords, LostTokens int64
}

// leaseStats are the counters behind LeaseStats.
type leaseStats struct {
	reservations, reservedTokens, reserveFailures atomic.Int64
	refunds, refundedTokens                       atomic.Int64
	returns, returnedTokens                       [numReturnReasons]atomic.Int64
	sweeps, sweptTokens                           atomic.Int64
	lostRecords, lostTokens                       atomic.Int64
}

func (s *leaseStats) reserved(n int64) { s.reservations.Add(1); s.reservedTokens.Add(n) }

func (s *leaseStats) refunded(n int64) { s.refunds.Add(1); s.refundedTokens.Add(n) }

func (s *leaseStats) returned(why int, n int64) { s.returns[why].Add(1); s.returnedTokens[why].Add(n) }

func (s *leaseStats) swept(n int64) { s.sweeps.Add(1); s.sweptTokens.Add(n) }

func (s *leaseStats) lost(n int64) { s.lostRecords.Add(1); s.lostTokens.Add(n) }

// LeaseStats returns the lease work counted so far.
func (q *Quotas) LeaseStats() LeaseStats {
	s := &q.stats
	out := LeaseStats{
		Reservations: s.reservations.Load(), ReservedTokens: s.reservedTokens.Load(), ReserveFailures: s.reserveFailures.Load(),
		Refunds: s.refunds.Load(), RefundedTokens: s.refundedTokens.Load(),
		Sweeps: s.sweeps.Load(), SweptTokens: s.sweptTokens.Load(),
		LostRecords: s.lostRecords.Load(), LostTokens: s.lostTokens.Load(),
	}
	for i := range s.returns {
		out.Returns[i], out.ReturnedTokens[i] = s.returns[i].Load(), s.returnedTokens[i].Load()
	}
	return out
}
