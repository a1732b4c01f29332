package limiter

import (
	"context"
	"time"
)

// LeaseRecord is what a replica records about its lease of one tenant and
// period: how many tokens it holds from the ledger, the most of them it
// may have spent (it never spends past this bound without first raising
// it here), and when the record expires unless refreshed. If the replica
// dies, Reserved − SpentMax tokens were provably never spent and may be
// returned to the ledger.
type LeaseRecord struct {
	Reserved int64     `json:"reserved"`
	SpentMax int64     `json:"spent_max"`
	Expires  time.Time `json:"expires"`
}

// ExpiredLease is an expired record of some replica.
type ExpiredLease struct {
	Tenant, Period, Replica string
	Rev                     uint64
	Record                  LeaseRecord
}

// LeaseBook stores lease records; the composition root provides one over
// a NATS key-value bucket.
type LeaseBook interface {
	// Put writes the record of tenant, period and replica if its revision
	// is still rev (0: create it). gone reports that the record was
	// removed or changed by someone else (a sweeper).
	Put(ctx context.Context, tenant, period, replica string, r LeaseRecord, rev uint64) (newRev uint64, gone bool, err error)
	// Delete removes the record if its revision is still rev.
	Delete(ctx context.Context, tenant, period, replica string, rev uint64) error
	// Expired lists the records that expired before t.
	Expired(ctx context.Context, t time.Time) ([]ExpiredLease, error)
	// Sweep removes an expired record if it is unchanged; won reports
	// that this call removed it, and so owns returning its tokens.
	Sweep(ctx context.Context, e ExpiredLease) (won bool, err error)
}
