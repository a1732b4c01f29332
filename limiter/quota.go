package limiter

// quota.go owns the monthly quota manager's vocabulary and state: the
// Ledger it spends from, limits, policies and decisions, QuotaOptions and
// their defaults, the Quotas manager and each tenant's tenantState, and
// the counters it exposes. The rest of Quotas is split by responsibility:
// admit.go (the request path), reserve.go (leases from the ledger),
// outbox.go (ledger operations sent later), records.go (lease records and
// sweeps), loops.go (background work), close.go (shutdown), usage.go.

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/shardmap"
	"go.uber.org/zap"
)

// Ledger is the shared count of tokens reserved per tenant and period.
// Add must be idempotent per msgID within a duplicate window; when it
// recognises a duplicate it reports dup and a current total that may
// include later additions of others.
type Ledger interface {
	Add(ctx context.Context, tenant, period string, delta int64, msgID string) (total int64, dup bool, err error)
	Total(ctx context.Context, tenant, period string) (int64, error)
}

// Policy says what a plan does while the ledger cannot be reached.
type Policy uint8

// Policies for an unreachable ledger.
const (
	// PolicyLease serves what this replica has already reserved, then
	// refuses. The default.
	PolicyLease Policy = iota
	// PolicyClosed refuses at once.
	PolicyClosed
	// PolicyOpen, once the lease is spent, admits up to OpenAllowance more
	// requests per replica and outage; they are added to the ledger when it
	// is back, each exactly once.
	PolicyOpen
)

// Limit is what the quota of one tenant is made of.
type Limit struct {
	// Monthly is the number of requests per period; 0 means unlimited.
	Monthly int64
	// Anchor is the first day of the tenant's period (1–31); 0 or 1 for
	// calendar months.
	Anchor int
	// Location overrides the manager's time zone when set.
	Location *time.Location
	// Policy while the ledger is unreachable.
	Policy Policy
	// OpenAllowance bounds PolicyOpen.
	OpenAllowance int64
	// Rate is a short-window limit; RateByTenant counts it per tenant
	// rather than per credential.
	Rate         Rate
	RateByTenant bool
	// Concurrency caps requests in flight per tenant; 0: no cap.
	Concurrency int64
	// Overage is how many requests past Monthly are admitted and counted
	// as overage (over_limit: {allow: …}); 0: none, refuse at the limit.
	Overage int64
	// Shadow: no limit refuses, each says what it would have done
	// (mode: shadow).
	Shadow bool
	// RefundOn is the set of answers given back to the quota (refund_on).
	RefundOn *access.StatusSet
}

// Reason says which limit refused a request: access.Reason, the proxy's
// word for it too.
type Reason = access.Reason

// Mode is access.Mode: enforce or shadow, or the plan's.
type Mode = access.Mode

// Modes.
const (
	ModePlan    = access.ModePlan
	ModeEnforce = access.ModeEnforce
	ModeShadow  = access.ModeShadow
)

// Reasons for a refusal.
const (
	ReasonNone        = access.ReasonNone
	ReasonQuota       = access.ReasonQuota
	ReasonRate        = access.ReasonRate
	ReasonConcurrency = access.ReasonConcurrency
)

// Decision is the outcome of one admission, returned by value: an
// access.Decision, which the proxy takes as it is. Its Err is
// ErrUnavailable or ErrUnknownTenant (access's values) or nil.
type Decision = access.Decision

// Errors of admission: the values of package access, so that they keep
// their identity across the seam.
var (
	ErrUnavailable   = access.ErrLedgerUnavailable
	ErrUnknownTenant = access.ErrUnknownTenant
)

// QuotaOptions configure Quotas. Zero values take the documented defaults.
type QuotaOptions struct {
	Ledger Ledger
	// Limits returns a tenant's limit; ok false for an unknown tenant.
	Limits func(tenant string) (Limit, bool)
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Location of calendar periods. Default UTC.
	Location *time.Location
	// MaxLease is the most tokens reserved at once. Default 100. Leases
	// are also at most a thousandth of a tenant's limit (or 1,000 tokens)
	// and at most half of 1% of its monthly limit (or 5 tokens), so that a
	// crash strands at most 1% of its month, or 10 tokens (see Leases).
	MaxLease int64
	// LeaseIdle returns a lease's unused tokens when it has not been used
	// for this long. Default 30s.
	LeaseIdle time.Duration
	// LeaseHorizon sizes leases to this much of a tenant's traffic (up to
	// MaxLease): longer means fewer ledger operations per request for
	// quiet tenants, and more tokens held by each replica. Default 10s.
	LeaseHorizon time.Duration
	// Timeout bounds one ledger operation. Default 2s.
	Timeout time.Duration
	// FailoverHorizon is how long a replica must be able to go on
	// admitting from what it holds while the cluster cannot answer: a
	// leader election, and a write lost with the leader that goes away,
	// which the writer notices only after Timeout. Background refills of
	// the lease, and raises of the spending bound recorded in the lease
	// record, start once what is left of either would last less than this
	// at the tenant's rate, so that they are done, or retried, before a
	// request needs them. What is left is at most half a lease for the
	// lease (a replica holds at most a lease and a half) and three
	// quarters of the bound's step for the bound, which still runs one
	// step ahead: a crash strands no more than before, but a busy tenant
	// raises its bound up to three times as often. A lease shorter than
	// this (max_lease, a thousandth of the limit, half of 1% of the
	// monthly limit, the last tokens of a month) may still run dry during
	// a failover: what a replica can spend without NATS is what a crash
	// can strand, so a plan whose 1% is less than a failover's traffic
	// waits for the new leader. Default Timeout + 10s: a leader that steps
	// down (a node stopped or restarted) is replaced within a second, a
	// crashed one only after Raft's election timeout, 4-9 s in
	// nats-server, and a write lost with it is noticed after Timeout. A
	// replica then holds up to two leases, which a crash may strand (still
	// at most 1% of the month, see Leases): set it to Timeout + 1s to
	// cover step-downs only.
	FailoverHorizon time.Duration
	// ReplicaID prefixes message ids; it must be unique per process.
	ReplicaID string
	// Available reports whether the ledger is reachable. Default: always.
	Available func() bool
	// Leases, when set, records each replica's leases so that tokens a
	// crashed replica reserved but provably never spent are returned by
	// the others once its record expires. A crash strands, per tenant,
	// what the recorded spending bound is ahead of spending (up to the
	// bound's step, a whole lease for a busy tenant) and what no record
	// covers yet (a tenant's first lease of the period, which has none,
	// or a lease between its reservation and the record write that
	// follows it): together at most what the replica holds, two leases,
	// which the lease cap keeps within 1% of the tenant's monthly limit,
	// or 10 tokens if that is more, plus one request's cost above one
	// (strandShare in reserve.go). Ledger operations the replica had not
	// sent when it died (a return of an idle lease; in an outage, a
	// reservation whose answer was lost) may add to it. Without Leases a
	// crash strands what the replica holds, within the same bound.
	Leases LeaseBook
	// LeaseTTL is how long a lease record lives without being refreshed.
	// Default 30s.
	LeaseTTL time.Duration
	// DuplicateWindow is how long the ledger recognises a message id: the
	// ledger's own setting (store.Options.DuplicateWindow), which must
	// exceed 30s. Operations are re-sent under the same id until 30s
	// before it ends, then dropped. Default DuplicateWindow.
	DuplicateWindow time.Duration
	// Totals, when set, is told the ledger total of tenant's period after
	// every ledger operation that returned one (reservations, returns,
	// refunds of excess, settled outbox operations), whichever replica's
	// operation moved it: the notifier's view of usage crossing a
	// threshold. It runs on the limiter's goroutines, some of them holding
	// the tenant's lock: it must not block.
	Totals func(tenant, period string, total int64)
	Log    *zap.Logger
}

// Quotas admits requests against monthly quotas. A replica reserves a
// lease of tokens with one ledger increment and spends it locally, so a
// tenant far from its limit costs no network I/O per request. Leases
// shrink near the limit and unused tokens are returned when idle, on period
// rollover and on Close. The ledger total never exceeds the limit by more
// than reservations in flight, which are refunded at once, and the tokens
// granted over all replicas never exceed the limit.
type Quotas struct {
	o       QuotaOptions
	tenants *shardmap.Map[*tenantState] // never deleted from: a *tenantState lives as long as q
	seq     atomic.Uint64
	refill  chan *tenantState
	rates   *Rates
	conc    *Concurrency
	quit    chan struct{}
	// ops counts ledger operations, for metrics and the ≤10 per 1000 goal;
	// recordOps the lease record writes.
	ops, recordOps atomic.Int64
	// dayOps counts additions to a DayLedger's days.
	dayOps atomic.Int64
	// closeDays are the day additions of Close's batched returns, sent
	// once every lease is back.
	closeDaysMu sync.Mutex
	closeDays   []Addition
	// waits counts admissions that took the slow path (waited for a
	// reservation or a record write, their own or a refill's), by
	// duration; waitNanos is their total.
	waits     [len(WaitBuckets) + 1]atomic.Int64
	waitNanos atomic.Int64
	// stats counts lease work, for metrics (stats.go).
	stats leaseStats

	flushMu   sync.Mutex // serialises flushPending (Run and Close both flush); taken before pendingMu
	pendingMu sync.Mutex // protects pending
	pending   []*ledgerOp
	kick      chan struct{}

	// closing is set by Close: background work stops and no new lease is
	// reserved.
	closing atomic.Bool
}

// tenantState is one tenant's quota on this replica. The hot path reads
// and updates only atomics; mu serialises reservations.
type tenantState struct {
	id string

	avail     atomic.Int64 // tokens of the current lease not yet spent
	limit     atomic.Int64 // monthly limit plus overage allowance: the cap of reservations; math.MaxInt64 when unlimited
	soft      atomic.Int64 // monthly limit as shown: limit without the overage allowance
	refunded  atomic.Int64 // tokens refunded in the current period not yet added to the ledger's refunded count
	total     atomic.Int64 // ledger total as of our last operation
	periodEnd atomic.Int64 // unix nanoseconds
	dayEnd    atomic.Int64 // unix nanoseconds of the end of day, at most periodEnd
	resetAt   atomic.Int64 // unix seconds of periodEnd, for headers
	exhausted atomic.Bool  // the ledger had nothing left at our last try
	recheck   atomic.Int64 // unix nanoseconds before which exhausted is believed
	lastUse   atomic.Int64 // unix seconds
	queued    atomic.Bool  // a background refill is queued
	leaseHint atomic.Int64 // size of the last lease, for the low-water mark
	cover     atomic.Int64 // tokens the tenant spends in FailoverHorizon at its last rate, at most a lease
	refunding atomic.Int64 // tokens of the current period queued for refund
	granted   atomic.Int64 // tokens this replica holds from the ledger in the period (spent = granted - avail)
	spentMax  atomic.Int64 // W: the most tokens this replica may spend, as recorded in its lease record
	policy    atomic.Uint32
	known     atomic.Bool
	lim       atomic.Pointer[Limit] // the limit in force, for rate and concurrency
	openUsed  atomic.Int64          // admitted on the open allowance in this outage
	openOwed  atomic.Int64          // of which not yet sent to the ledger

	mu          sync.Mutex // serialises reservations; protects the fields below
	period      Period
	day         string    // the day the lease's unused tokens count on (DayLedger), YYYY-MM-DD
	lease       int64     // size of the next reservation
	leaseAt     time.Time // when the last reservation was granted
	leaseUsed   int64     // tokens granted by the last reservation
	rev         uint64    // revision of our lease record, 0 when there is none
	recExp      time.Time // expiry written in our lease record
	recReserved int64     // tokens reserved as written in our lease record
	recBound    int64     // spending bound as written in our lease record
	// A record write whose outcome is unknown (it failed, and may have
	// been applied all the same): what it would have returned to a
	// sweeper, reserved − bound; 0 when there is none.
	pendReturn int64
}

// NewQuotas returns a manager; call Run to start its background work and
// Close to return unused tokens.
func NewQuotas(o QuotaOptions) *Quotas {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Location == nil {
		o.Location = time.UTC
	}
	if o.MaxLease <= 0 {
		o.MaxLease = 100
	}
	if o.LeaseIdle <= 0 {
		o.LeaseIdle = 30 * time.Second
	}
	if o.LeaseHorizon <= 0 {
		o.LeaseHorizon = 10 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.FailoverHorizon <= 0 {
		o.FailoverHorizon = o.Timeout + 10*time.Second
	}
	if o.Available == nil {
		o.Available = func() bool { return true }
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.DuplicateWindow <= 0 {
		o.DuplicateWindow = DuplicateWindow
	}
	return &Quotas{o: o, tenants: shardmap.New[*tenantState](0), refill: make(chan *tenantState, 4096), quit: make(chan struct{}), kick: make(chan struct{}, 1),
		rates: NewRates(o.Now), conc: NewConcurrency()}
}

// LedgerOps returns the number of ledger operations made so far.
func (q *Quotas) LedgerOps() int64 { return q.ops.Load() }

// DayOps returns the number of additions sent to the days of a DayLedger.
func (q *Quotas) DayOps() int64 { return q.dayOps.Load() }

// RecordOps returns the number of lease record writes made so far.
func (q *Quotas) RecordOps() int64 { return q.recordOps.Load() }

// WaitBuckets are the upper bounds of the buckets of Waits.
var WaitBuckets = [...]time.Duration{
	100 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2500 * time.Millisecond,
}

// Waits says how many admissions waited on the ledger or a lease record
// (the slow path) and how long.
type Waits struct {
	Count int64
	Sum   time.Duration
	// Buckets[i] counts the waits of at most WaitBuckets[i] (cumulative,
	// as Prometheus has it); Count includes the longer ones.
	Buckets [len(WaitBuckets)]int64
}

// Waits returns the admissions that waited so far.
func (q *Quotas) Waits() Waits {
	var w Waits
	for i := range q.waits {
		n := q.waits[i].Load()
		w.Count += n
		if i < len(w.Buckets) {
			w.Buckets[i] = w.Count
		}
	}
	w.Sum = time.Duration(q.waitNanos.Load())
	return w
}

// waited counts one admission that took the slow path for d.
func (q *Quotas) waited(d time.Duration) {
	i := 0
	for i < len(WaitBuckets) && d > WaitBuckets[i] {
		i++
	}
	q.waits[i].Add(1)
	q.waitNanos.Add(int64(d))
}

// state returns tenant's state, creating it on first use.
func (q *Quotas) state(tenant string) *tenantState {
	return q.tenants.GetOrCreate(tenant, func() *tenantState {
		st := &tenantState{id: tenant}
		q.applyLimit(st)
		if q.o.Leases == nil {
			st.spentMax.Store(math.MaxInt64)
		}
		return st
	})
}

func (q *Quotas) applyLimit(st *tenantState) {
	l, ok := q.o.Limits(st.id)
	st.lim.Store(&l)
	st.known.Store(ok)
	if l.Monthly <= 0 {
		st.limit.Store(math.MaxInt64)
		st.soft.Store(math.MaxInt64)
	} else {
		st.limit.Store(l.Monthly + max(l.Overage, 0))
		st.soft.Store(l.Monthly)
	}
	st.policy.Store(uint32(l.Policy))
	st.exhausted.Store(false)
}

// Changed tells the manager that a tenant's limit changed: it applies at
// once, keeping what was used in the period.
func (q *Quotas) Changed(tenant string) {
	if st, ok := q.tenants.Get(tenant); ok {
		q.applyLimit(st)
	}
}

// ChangedAll re-reads every tenant's limit, after a config reload.
func (q *Quotas) ChangedAll() {
	q.tenants.Range(func(_ string, st *tenantState) bool {
		q.applyLimit(st)
		return true
	})
}

// takeAvail takes every unspent token of the lease. A plain Swap(0) could
// catch avail below zero while a request puts back a token it could not
// use, and so create a token: take only a positive count.
func (st *tenantState) takeAvail() int64 {
	for {
		v := st.avail.Load()
		if v <= 0 {
			return 0
		}
		if st.avail.CompareAndSwap(v, 0) {
			return v
		}
	}
}
