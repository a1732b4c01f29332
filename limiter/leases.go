package limiter

import (
	"context"
	"errors"
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
	// ReturnID, when set, says that the replica is itself returning
	// Reserved − SpentMax (on Close) with this ledger message id, from
	// ReturnAt on. A sweeper returns them with the same id, which the
	// ledger applies at most once while it remembers the id (its duplicate
	// window); past that window it leaves them stranded rather than risk
	// returning them twice.
	ReturnID string    `json:"return_id,omitempty"`
	ReturnAt time.Time `json:"return_at,omitzero"`
	// Day is the day the replica's unused tokens count on (DayLedger):
	// a sweeper takes them off that day.
	Day string `json:"day,omitempty"`
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

// LeaseWrite is one record of a batch: write Record as the record of
// Tenant, Period and Replica if its revision is still Rev.
type LeaseWrite struct {
	Tenant, Period, Replica string
	Record                  LeaseRecord
	Rev                     uint64
}

// BatchLeaseBook is a LeaseBook that can write or delete many records in
// one atomic write (one fsync, one round trip). Close uses it so that
// thousands of tenants cost a few writes, not thousands.
type BatchLeaseBook interface {
	LeaseBook
	// PutAll writes every record or none. ErrRejected says that none was
	// written (one of them had another revision, or the store refused the
	// batch); any other error leaves it unknown which.
	PutAll(ctx context.Context, w []LeaseWrite) error
	// DeleteAll removes every record named (Record and Rev are ignored),
	// whatever its revision; deleting a record that is gone is not an
	// error.
	DeleteAll(ctx context.Context, w []LeaseWrite) error
}

// Addition is one ledger addition of a batch.
type Addition struct {
	Tenant, Period string
	Delta          int64
	MsgID          string
	// Day, when set, is the day (YYYY-MM-DD, the tenant's time zone) the
	// addition counts on in a DayLedger's history.
	Day string
}

// DayLedger is a Ledger that also keeps each tenant's count per day, for
// the usage history. The limiter adds to a day what it adds to the period
// (a lease's reservation on the day it is taken, its return on the day the
// lease counts on) and moves a lease's unused tokens from one day to the
// next at midnight, so that a month's days add up to its total once
// leases settle. Day additions take message ids like Add and are applied
// once each while the ledger remembers the id.
type DayLedger interface {
	AddDay(ctx context.Context, tenant, day string, delta int64, msgID string) error
	// AddDays applies the additions that name a Day.
	AddDays(ctx context.Context, adds []Addition) error
	// Days returns tenant's count of each day from from to to
	// (inclusive); days without a count may be absent.
	Days(ctx context.Context, tenant, from, to string) (map[string]int64, error)
}

// BatchLedger is a Ledger that can apply many additions in a few atomic
// writes. An addition carries its message id as with Add, so re-sending
// additions after an error, in a batch or one by one, applies each at
// most once within the duplicate window.
type BatchLedger interface {
	Ledger
	// AddAll applies every addition. On error some may have been applied
	// and others not.
	AddAll(ctx context.Context, adds []Addition) error
}

// ErrRejected is returned by batch writes that the store refused as a
// whole: nothing of the batch was applied.
var ErrRejected = errors.New("limiter: batch rejected")
