package limiter

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

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
}

// Reason says which limit refused a request.
type Reason uint8

// Reasons for a refusal.
const (
	ReasonNone Reason = iota
	ReasonQuota
	ReasonRate
	ReasonConcurrency
)

// Decision is the outcome of one admission. It is returned by value.
type Decision struct {
	Allowed bool
	// Unlimited is set for tenants without a monthly limit.
	Unlimited bool
	Limit     int64
	Remaining int64
	// Reset is the number of seconds until the period ends.
	Reset int64
	// Err is ErrUnavailable when the ledger could not be reached and the
	// request was refused for that reason, ErrUnknownTenant for a tenant
	// without a limit; nil otherwise.
	Err error
	// Reason names the limit that refused the request.
	Reason Reason
	// Rate is the short-window limit's state, when the plan has one.
	Rate    RateDecision
	HasRate bool
	// Acquired says a concurrency slot was taken: call Release.
	Acquired bool
	// Open says the request was admitted on the open policy's allowance
	// while the ledger was unreachable.
	Open bool
	// PeriodEnd is the end of the period the decision was taken in, in
	// Unix nanoseconds: Refund needs it.
	PeriodEnd int64
}

// Errors of admission.
var (
	ErrUnavailable   = errors.New("limiter: quota ledger unavailable")
	ErrUnknownTenant = errors.New("limiter: unknown tenant")
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
	// MaxLease is the most tokens reserved at once. Default 100.
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
	// ReplicaID prefixes message ids; it must be unique per process.
	ReplicaID string
	// Available reports whether the ledger is reachable. Default: always.
	Available func() bool
	// Leases, when set, records each replica's leases so that tokens a
	// crashed replica reserved but provably never spent are returned by
	// the others once its record expires: a crash then strands at most
	// half a lease per tenant, or 100 tokens if that is more (and at most
	// the lease; a tenant's first lease of the period, at most 10 tokens,
	// has no record), plus the next lease if it comes between that
	// lease's reservation and the record write that follows it. Without
	// it a crash strands up to a lease and a quarter per tenant.
	Leases LeaseBook
	// LeaseTTL is how long a lease record lives without being refreshed.
	// Default 30s.
	LeaseTTL time.Duration
	Log      *zap.Logger
}

// Quotas admits requests against monthly quotas. A replica reserves a
// lease of tokens with one ledger increment and spends it locally, so a
// tenant far from its limit costs no network I/O per request. Leases
// shrink near the limit and unused tokens are returned when idle, on period
// rollover and on Close. The ledger total never exceeds the limit by more
// than reservations in flight, which are refunded at once, and the tokens
// granted over all replicas never exceed the limit.
type Quotas struct {
	o      QuotaOptions
	seed   maphash.Seed
	shards [64]tenantShard
	seq    atomic.Uint64
	refill chan *tenantState
	rates  *Rates
	conc   *Concurrency
	quit   chan struct{}
	// ops counts ledger operations, for metrics and the ≤10 per 1000 goal;
	// recordOps the lease record writes.
	ops, recordOps atomic.Int64
	// waits counts admissions that took the slow path (waited for a
	// reservation or a record write, their own or a refill's), by
	// duration; waitNanos is their total.
	waits     [len(WaitBuckets) + 1]atomic.Int64
	waitNanos atomic.Int64

	flushMu   sync.Mutex // serialises flushPending (Run and Close both flush); taken before pendingMu
	pendingMu sync.Mutex // protects pending
	pending   []*ledgerOp
	kick      chan struct{}

	// closing is set by Close: background work stops and no new lease is
	// reserved.
	closing atomic.Bool
}

// ledgerOp is a ledger addition to (re)send with a fixed message id until
// the ledger acknowledges it, then its follow-up. Past its deadline (the
// ledger's duplicate window) a re-send could apply twice, so it is dropped
// instead: an unacknowledged reservation then strands its tokens
// (under-admission), never the reverse.
type ledgerOp struct {
	tenant, period, id string
	delta              int64
	deadline           time.Time
	then               *ledgerOp
	// st, when set, counts this refund in st.refunding until it is sent.
	st *tenantState
}

// DuplicateWindow is how long the ledger recognises a message id; the
// store creates its streams with it.
const DuplicateWindow = 5 * time.Minute

type tenantShard struct {
	mu sync.RWMutex // protects m
	m  map[string]*tenantState
	_  [40]byte
}

// tenantState is one tenant's quota on this replica. The hot path reads
// and updates only atomics; mu serialises reservations.
type tenantState struct {
	id string

	avail     atomic.Int64 // tokens of the current lease not yet spent
	limit     atomic.Int64 // monthly limit, math.MaxInt64 when unlimited
	total     atomic.Int64 // ledger total as of our last operation
	periodEnd atomic.Int64 // unix nanoseconds
	resetAt   atomic.Int64 // unix seconds of periodEnd, for headers
	exhausted atomic.Bool  // the ledger had nothing left at our last try
	recheck   atomic.Int64 // unix nanoseconds before which exhausted is believed
	lastUse   atomic.Int64 // unix seconds
	queued    atomic.Bool  // a background refill is queued
	leaseHint atomic.Int64 // size of the last lease, for the low-water mark
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
	lease       int64     // size of the next reservation
	leaseAt     time.Time // when the last reservation was granted
	leaseUsed   int64     // tokens granted by the last reservation
	rev         uint64    // revision of our lease record, 0 when there is none
	recExp      time.Time // expiry written in our lease record
	recReserved int64     // tokens reserved as written in our lease record
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
	if o.Available == nil {
		o.Available = func() bool { return true }
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	q := &Quotas{o: o, seed: maphash.MakeSeed(), refill: make(chan *tenantState, 4096), quit: make(chan struct{}), kick: make(chan struct{}, 1),
		rates: NewRates(o.Now), conc: NewConcurrency()}
	for i := range q.shards {
		q.shards[i].m = map[string]*tenantState{}
	}
	return q
}

// LedgerOps returns the number of ledger operations made so far.
func (q *Quotas) LedgerOps() int64 { return q.ops.Load() }

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

func (q *Quotas) state(tenant string) *tenantState {
	sh := &q.shards[maphash.String(q.seed, tenant)%uint64(len(q.shards))]
	sh.mu.RLock()
	st := sh.m[tenant]
	sh.mu.RUnlock()
	if st != nil {
		return st
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if st = sh.m[tenant]; st == nil {
		st = &tenantState{id: tenant}
		q.applyLimit(st)
		if q.o.Leases == nil {
			st.spentMax.Store(math.MaxInt64)
		}
		sh.m[tenant] = st
	}
	return st
}

func (q *Quotas) applyLimit(st *tenantState) {
	l, ok := q.o.Limits(st.id)
	st.lim.Store(&l)
	st.known.Store(ok)
	if l.Monthly <= 0 {
		st.limit.Store(math.MaxInt64)
	} else {
		st.limit.Store(l.Monthly)
	}
	st.policy.Store(uint32(l.Policy))
	st.exhausted.Store(false)
}

// Changed tells the manager that a tenant's limit changed: it applies at
// once, keeping what was used in the period.
func (q *Quotas) Changed(tenant string) {
	sh := &q.shards[maphash.String(q.seed, tenant)%uint64(len(q.shards))]
	sh.mu.RLock()
	st := sh.m[tenant]
	sh.mu.RUnlock()
	if st != nil {
		q.applyLimit(st)
	}
}

// ChangedAll re-reads every tenant's limit, after a config reload.
func (q *Quotas) ChangedAll() {
	for i := range q.shards {
		sh := &q.shards[i]
		sh.mu.RLock()
		for _, st := range sh.m {
			q.applyLimit(st)
		}
		sh.mu.RUnlock()
	}
}

// AdmitRequest applies every limit of tenant's plan to one request of the
// given credential: the short-window rate, then concurrency, then the
// monthly quota, so that a request refused by a limit is not counted. A
// decision with Acquired set must be followed by Release(tenant).
func (q *Quotas) AdmitRequest(tenant, credential string, cost int64) Decision {
	st := q.state(tenant)
	l := st.lim.Load()
	var rd RateDecision
	hasRate := l.Rate.Requests > 0
	if hasRate {
		key := credential
		if l.RateByTenant {
			key = tenant
		}
		if rd = q.rates.Allow(key, l.Rate, cost); !rd.Allowed {
			d := q.decide(st, q.o.Now(), false, nil)
			d.Reason, d.Rate, d.HasRate = ReasonRate, rd, true
			return d
		}
	}
	acquired := false
	if l.Concurrency > 0 {
		if _, ok := q.conc.Acquire(tenant, l.Concurrency); !ok {
			d := q.decide(st, q.o.Now(), false, nil)
			d.Reason, d.Rate, d.HasRate = ReasonConcurrency, rd, hasRate
			return d
		}
		acquired = true
	}
	d := q.Admit(tenant, cost)
	d.Rate, d.HasRate = rd, hasRate
	if !d.Allowed {
		if acquired {
			q.conc.Release(tenant)
		}
		if d.Err == nil {
			d.Reason = ReasonQuota
		}
		return d
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
	if !d.Allowed || d.Unlimited || cost <= 0 {
		return
	}
	st := q.state(tenant)
	if st.periodEnd.Load() != d.PeriodEnd {
		return
	}
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
	if nowNano >= st.periodEnd.Load() {
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
		spent, bound := st.granted.Load()-left, st.spentMax.Load()
		if spent > bound {
			st.avail.Add(cost)
			return q.slow(st, cost, now)
		}
		if (left <= st.lowWater() || spent >= bound-st.step()/4) && st.queued.CompareAndSwap(false, true) {
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

// lowWater is the level at which a background refill starts: a quarter of
// the current lease, so that a steady tenant never waits for the ledger.
func (st *tenantState) lowWater() int64 { return max(st.leaseHint.Load()/4, 0) }

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

// step is how far the recorded spending bound moves ahead of spending: half
// a lease, or the whole lease up to minStep tokens, so that a crash
// strands at most that many tokens. The bound is raised when spending
// comes within a quarter step of it, so a steady tenant costs about three
// record writes per lease (two for a small one), off the request path.
func (st *tenantState) step() int64 {
	h := st.leaseHint.Load()
	return max(h/2, min(h, minStep), 1)
}

// minStep: the spending bound runs at least this many tokens ahead (or a
// whole lease, if smaller). Half of a small lease is only seconds of a
// tenant's traffic, and while leases grow after a start (10, 40, 160
// tokens) a thousand tenants raising their bounds every few requests made
// requests wait for record writes queued behind each other: in
// TestQuotaManyActiveTenants's 2-10 s window 7.9 requests in 1,000 waited
// (p99.9 73 ms) with half a lease, 1.0 (p99.9 1.8 ms) with this, and
// record writes per 1,000 requests fell from 61 to 30. A crash strands at
// most 100 tokens of a small lease instead of half of it.
const minStep = 100

func (q *Quotas) decide(st *tenantState, now time.Time, ok bool, err error) Decision {
	d := Decision{Allowed: ok, Err: err, Reset: max(st.resetAt.Load()-now.Unix(), 0), PeriodEnd: st.periodEnd.Load()}
	limit := st.limit.Load()
	if limit == math.MaxInt64 {
		d.Unlimited = true
		return d
	}
	d.Limit = limit
	if !st.exhausted.Load() || st.avail.Load() > 0 {
		d.Remaining = min(max(limit-st.total.Load()+st.avail.Load(), 0), limit)
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
	for i := range q.shards {
		sh := &q.shards[i]
		sh.mu.RLock()
		for _, st := range sh.m {
			if st.openUsed.Load() == 0 {
				continue
			}
			st.mu.Lock()
			if owed := st.openOwed.Swap(0); owed > 0 {
				q.enqueue(&ledgerOp{tenant: st.id, period: st.period.Key, id: q.msgID(), delta: owed,
					deadline: q.o.Now().Add(DuplicateWindow - 30*time.Second)})
				st.total.Add(owed)
				q.o.Log.Info("counting requests admitted while the ledger was unreachable",
					zap.String("tenant", st.id), zap.Int64("requests", owed))
			}
			st.openUsed.Store(0)
			st.mu.Unlock()
		}
		sh.mu.RUnlock()
	}
}

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
		st.lease = int64(min(max(rate*q.o.LeaseHorizon.Seconds(), 1), float64(q.leaseCap(limit)), float64(max(st.lease, 1)*leaseGrowth)))
	}
	size := max(q.nextLease(st), need)
	if limit != math.MaxInt64 {
		// Near the limit, take a quarter of what seems left so the last
		// tokens are shared between replicas, down to one at a time.
		size = max(min(size, (limit-st.total.Load())/4), need)
	}
	period := st.period.Key
	id := q.msgID()
	total, _, err := q.add(context.Background(), st.id, period, size, id)
	if err != nil {
		// Unknown whether it was applied: settle it in the background by
		// re-sending the same id (exactly once), then refund it whole.
		dl := q.o.Now().Add(DuplicateWindow - 30*time.Second)
		q.enqueue(&ledgerOp{tenant: st.id, period: period, id: id, delta: size, deadline: dl,
			then: &ledgerOp{tenant: st.id, period: period, id: q.msgID(), delta: -size, deadline: dl}})
		return 0, err
	}
	// total-size is what was reserved before us. After a duplicate the
	// total may include later reservations of others: the grant is then a
	// lower bound, and we refund the rest, so the ledger still holds
	// exactly what we may spend.
	granted := min(max(limit-(total-size), 0), size)
	if over := size - granted; over > 0 {
		// Refund at once, not in the background: until it lands, our own
		// over-reservation would make the next grant smaller than it can be.
		id := q.msgID()
		if _, _, err := q.add(context.Background(), st.id, period, -over, id); err != nil {
			q.enqueue(&ledgerOp{tenant: st.id, period: period, id: id, delta: -over,
				deadline: q.o.Now().Add(DuplicateWindow - 30*time.Second), st: st})
			st.refunding.Add(over)
		}
		total -= over
	}
	st.total.Store(total)
	st.granted.Add(granted) // before avail: spent = granted - avail never reads low
	st.avail.Add(granted)
	st.leaseAt, st.leaseUsed = now, granted
	if granted > 0 {
		st.leaseHint.Store(granted)
		if q.o.Leases != nil && st.rev == 0 && st.granted.Load() == granted && granted <= firstLease {
			// The tenant's first lease in the period, small: spent
			// without a record, which would cost a second fsync'd write
			// before its first request is answered, for every tenant at
			// once after a start. A crash strands it whole: 10 tokens.
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

// firstLease is the size of a tenant's first lease in a period.
const firstLease = 10

// leaseShare and leaseShareFloor bound a lease by the tenant's limit: no
// more than a thousandth of it, unless that is under leaseShareFloor
// tokens. A crash strands at most half a lease (a lease and a half if it
// falls between a reservation and its record; see step), so for a big
// tenant that is at most 0.05 % (0.15 %) of its month, while a busy
// tenant of a big plan costs few ledger and record writes (each one
// fsync'd, and on the replica's own CPU with the embedded server): at
// 5,000 requests/s a lease of 1,000 meant 5 ledger and about 14 record
// writes a second, and they showed in the proxy's p99 (bench/RESULTS.md).
const (
	leaseShare      = 1000
	leaseShareFloor = 1000
)

// leaseCap is the largest lease for a tenant whose limit is limit.
func (q *Quotas) leaseCap(limit int64) int64 {
	if limit == math.MaxInt64 {
		return q.o.MaxLease
	}
	return min(q.o.MaxLease, max(limit/leaseShare, leaseShareFloor))
}

func (q *Quotas) nextLease(st *tenantState) int64 {
	if st.lease == 0 {
		st.lease = min(firstLease, q.o.MaxLease)
	}
	return st.lease
}

func (q *Quotas) msgID() string {
	return q.o.ReplicaID + "." + strconv.FormatUint(q.seq.Add(1), 36)
}

// add sends one ledger addition, retrying with the same id within the
// timeout and ctx.
func (q *Quotas) add(ctx context.Context, tenant, period string, delta int64, id string) (int64, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, q.o.Timeout)
	defer cancel()
	var err error
	for try := 0; ; try++ {
		q.ops.Add(1)
		var total int64
		var dup bool
		total, dup, err = q.o.Ledger.Add(ctx, tenant, period, delta, id)
		if err == nil {
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
func (q *Quotas) refund(tenant, period string, n int64, st *tenantState) {
	if n <= 0 {
		return
	}
	if st != nil {
		st.refunding.Add(n)
	}
	q.enqueue(&ledgerOp{tenant: tenant, period: period, id: q.msgID(), delta: -n,
		deadline: q.o.Now().Add(DuplicateWindow - 30*time.Second), st: st})
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
		if _, _, err := q.add(ctx, op.tenant, op.period, op.delta, op.id); err != nil {
			return false
		}
		op.done()
		q.popPending(op.then)
	}
}

func (op *ledgerOp) done() {
	if op.st != nil {
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

// Pending returns the number of ledger operations waiting to be sent.
func (q *Quotas) Pending() int {
	q.pendingMu.Lock()
	defer q.pendingMu.Unlock()
	return len(q.pending)
}

// rollover moves st into the period containing now, returning the unused
// tokens of the old one.
func (q *Quotas) rollover(st *tenantState, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if now.UnixNano() < st.periodEnd.Load() {
		return
	}
	l, _ := q.o.Limits(st.id)
	loc := l.Location
	if loc == nil {
		loc = q.o.Location
	}
	p := PeriodAt(now, loc, l.Anchor)
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
	for i := range q.shards {
		sh := &q.shards[i]
		sh.mu.RLock()
		for _, st := range sh.m {
			if q.closing.Load() {
				break
			}
			if !all && st.lastUse.Load() > idleBefore {
				continue
			}
			if st.avail.Load() <= 0 {
				continue
			}
			st.mu.Lock()
			q.giveBackLocked(st, all)
			st.mu.Unlock()
		}
		sh.mu.RUnlock()
	}
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
		q.refund(st.id, st.period.Key, n, owner)
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
	ctx, cancel := context.WithTimeout(context.Background(), q.o.Timeout)
	defer cancel()
	for try := 0; try < 2; try++ {
		q.recordOps.Add(1)
		rev, gone, err := q.o.Leases.Put(ctx, st.id, st.period.Key, q.o.ReplicaID, rec, st.rev)
		if err != nil {
			return err
		}
		if !gone {
			st.rev, st.recExp, st.recReserved = rev, rec.Expires, rec.Reserved
			return nil
		}
		swept := st.granted.Load() - st.spentMax.Load()
		q.o.Log.Warn("our lease record was swept; dropping the tokens returned for us",
			zap.String("tenant", st.id), zap.Int64("tokens", swept))
		st.avail.Add(-swept)
		st.granted.Add(-swept)
		st.total.Add(-swept)
		st.rev = 0
		rec.Reserved -= swept
		rec.SpentMax = min(rec.SpentMax, rec.Reserved)
	}
	return errors.New("limiter: lease record keeps vanishing")
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
		deadline := q.o.Now().Add(DuplicateWindow - 30*time.Second)
		if e.Record.ReturnID != "" {
			// Its replica was returning them itself when it stopped: send
			// the same message, which the ledger applies at most once
			// while it remembers the id.
			id, deadline = e.Record.ReturnID, e.Record.ReturnAt.Add(DuplicateWindow-30*time.Second)
			if q.o.Now().After(deadline) {
				q.o.Log.Warn("tokens of an expired lease left stranded: its replica may have returned them and the ledger no longer recognises the return",
					zap.String("tenant", e.Tenant), zap.String("replica", e.Replica), zap.Int64("tokens", n))
				continue
			}
		}
		q.o.Log.Info("returning tokens of an expired lease", zap.String("tenant", e.Tenant),
			zap.String("replica", e.Replica), zap.Int64("tokens", n))
		q.enqueue(&ledgerOp{tenant: e.Tenant, period: e.Period, id: id, delta: -n, deadline: deadline})
	}
}

// heartbeat refreshes lease records about to expire while their tokens
// are still held.
func (q *Quotas) heartbeat() {
	if q.o.Leases == nil || !q.o.Available() {
		return
	}
	soon := q.o.Now().Add(q.o.LeaseTTL / 2)
	for i := range q.shards {
		sh := &q.shards[i]
		sh.mu.RLock()
		for _, st := range sh.m {
			if q.closing.Load() {
				break
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
		sh.mu.RUnlock()
	}
}

// Usage is a tenant's consumption in the current period.
type Usage struct {
	Period    string    `json:"period"`
	Limit     int64     `json:"limit"` // 0: unlimited
	Used      int64     `json:"used"`
	Remaining int64     `json:"remaining"`
	Reset     time.Time `json:"reset"`
}

// Usage reads the ledger for tenant's current period. Used counts tokens
// reserved by all replicas minus this replica's unused lease: other
// replicas' unused leases count as used until they are returned.
func (q *Quotas) Usage(ctx context.Context, tenant string) (Usage, error) {
	l, ok := q.o.Limits(tenant)
	if !ok {
		return Usage{}, ErrUnknownTenant
	}
	loc := l.Location
	if loc == nil {
		loc = q.o.Location
	}
	p := PeriodAt(q.o.Now(), loc, l.Anchor)
	// Under st.mu no reservation of ours runs, so the ledger total and
	// our unused lease are read consistently.
	st := q.state(tenant)
	st.mu.Lock()
	total, err := q.o.Ledger.Total(ctx, tenant, p.Key)
	if err == nil && st.period.Key == p.Key {
		total -= st.avail.Load() + st.refunding.Load()
	}
	st.mu.Unlock()
	if err != nil {
		return Usage{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	u := Usage{Period: p.Key, Limit: l.Monthly, Used: max(total, 0), Reset: p.End.UTC()}
	if l.Monthly > 0 {
		u.Remaining = max(l.Monthly-u.Used, 0)
	}
	return u, nil
}
