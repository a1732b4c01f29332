// Package notify owns webhook notifications: a tenant's usage crossing a
// threshold of its monthly limit, and its limit increase requests being
// filed and decided. Each notification is a record in a NATS key-value
// bucket under a key that names what it is about (tenant, period,
// threshold and limit; or request and event), created with Create, which
// fails when the key exists: so it is created once across all replicas,
// however many of them see the crossing and however often a creation is
// retried. A dispatcher on every replica delivers pending records: it
// claims one by compare-and-set on its revision (only the claimant sends;
// a claim expires, so a crashed replica's is taken over), POSTs it signed
// with HMAC-SHA256 (Sign), retries with exponential backoff until a 2xx,
// and marks it delivered by compare-and-set.
//
// Exactly once over HTTP needs the receiver's help: a replica that
// crashes, or loses NATS for longer than its claim, between a receiver's
// 2xx and the write that marks the record delivered leaves it pending,
// and it is sent again under the same Tollgate-Notification-Id. Receivers
// dedupe on that id. The window is one compare-and-set after the answer.
//
// Nothing here runs on the request path: Totals only records a number
// and wakes a goroutine.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tollgate/tollgate/internal/store"
	"go.uber.org/zap"
)

// Kinds of notification.
const (
	KindUsage           = "usage_threshold"
	KindRequestFiled    = "limit_request_filed"
	KindRequestDecided  = "limit_request_decided"
	StatusPending       = "pending"
	StatusDelivered     = "delivered"
	EventRequestFiled   = "filed"
	EventRequestDecided = "decided"
)

// Kinds are the kinds of notification, in the order of Stats.
var Kinds = []string{KindUsage, KindRequestFiled, KindRequestDecided}

// Outcomes counted per kind (Stats).
var Outcomes = []string{"created", "exists", "create_failed", "delivered", "failed"}

// Record is a notification as the bucket keeps it: the webhook's body and
// its delivery state.
type Record struct {
	Body

	// Delivery state, not sent.
	Status      string     `json:"status"`
	Attempts    int        `json:"attempts"`
	LastError   string     `json:"last_error,omitempty"`
	NextAttempt time.Time  `json:"next_attempt,omitzero"`
	DeliveredAt *time.Time `json:"delivered_at,omitempty"`
	Claim       *Claim     `json:"claim,omitempty"`
}

// Claim says that a replica is sending a record, until a time.
type Claim struct {
	Owner string    `json:"owner"`
	Until time.Time `json:"until"`
}

// Body is the JSON a webhook carries: a record without its delivery
// state. It is the same on every attempt.
type Body struct {
	// ID is the record's key, and the Tollgate-Notification-Id header:
	// usage.<tenant>.<period>.<percent>.<limit> or
	// limit_request.<request id>.<filed|decided>.
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Tenant string `json:"tenant"`
	// Period, Threshold (percent of Limit), Limit and Used (the ledger
	// total seen when the crossing was noticed): usage notifications.
	Period    string `json:"period,omitempty"`
	Threshold int64  `json:"threshold,omitempty"`
	Limit     int64  `json:"limit,omitempty"`
	Used      int64  `json:"used,omitempty"`
	// LimitRequest is the request as it was at the event.
	LimitRequest *store.LimitRequest `json:"limit_request,omitempty"`
	Created      time.Time           `json:"created"`
}

func (r *Record) body() ([]byte, error) { return json.Marshal(r.Body) }

// UsageKey is the key, and id, of the notification of tenant's usage
// crossing percent of limit in period.
func UsageKey(tenant, period string, percent, limit int64) string {
	return "usage." + tenant + "." + period + "." + strconv.FormatInt(percent, 10) + "." + strconv.FormatInt(limit, 10)
}

// RequestKey is the key, and id, of the notification of event (filed,
// decided) of limit request id.
func RequestKey(id, event string) string { return "limit_request." + id + "." + event }

// Target is where and what a tenant's notifications go: its plan's
// notify settings and its limit, as they are now.
type Target struct {
	URL, Secret string
	// Percents are the thresholds, ascending.
	Percents []int64
	// Limit is the tenant's monthly limit; 0: unlimited (no thresholds).
	Limit int64
	// Sends reports whether a kind is sent; nil: all are.
	Sends func(kind string) bool
}

func (t Target) sends(kind string) bool { return t.URL != "" && (t.Sends == nil || t.Sends(kind)) }

// Options configure a Notifier. Zero values take the documented defaults.
type Options struct {
	// KV is the notifications bucket (store.Store.Notifications).
	KV jetstream.KeyValue
	// Replica names this replica in claims.
	Replica string
	// Target returns tenant's notification settings now; ok false when
	// it has none (unknown tenant, plan without notify). Called for each
	// crossing checked and each delivery, so a reload applies at once.
	Target func(tenant string) (Target, bool)
	// Now is the clock of the records' created and delivered_at.
	// Default time.Now. Claims, backoff and signatures use the real
	// clock, as the timeouts they go with do.
	Now func() time.Time
	// Client sends the webhooks. Default: a client without redirects.
	Client *http.Client
	// Timeout bounds one delivery attempt. Default 10s.
	Timeout time.Duration
	// StoreTimeout bounds one operation on the bucket. Default 2s.
	StoreTimeout time.Duration
	// ClaimSkew is how long past a claim's end others wait before they
	// take it over: room for clocks that differ. Default 2s. A claim
	// lasts Timeout + StoreTimeout: the claimant's attempt has ended, and
	// its outcome is written, before others may send.
	ClaimSkew time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts: it
	// doubles from MinBackoff at each failure, up to MaxBackoff, with
	// jitter (half to all of it). Defaults 1s and 5m.
	MinBackoff, MaxBackoff time.Duration
	// Poll is how often pending records are looked at besides the
	// changes the bucket's watcher brings. Default 1s.
	Poll time.Duration
	// Parallel bounds deliveries in flight on this replica. Default 8.
	Parallel int
	Log      *zap.Logger
}

// Notifier creates notifications and delivers them.
type Notifier struct {
	o      Options
	mirror *recordMirror

	// mu protects usage, todo, known; it is taken before the mirror's
	// lock (crossed), never after.
	mu sync.Mutex
	// usage is the highest ledger total seen per tenant and period and
	// not yet checked against the thresholds.
	usage map[tenantPeriod]int64
	// todo are records to create, kept until the bucket took them (or
	// said that they exist): a crossing seen during an outage is not lost
	// while this replica lives.
	todo map[string]*Record
	// known are keys that exist in the bucket, so that a crossing seen
	// again is not created again (nor asked about).
	known map[string]struct{}

	createWake, sendWake chan struct{}

	inflightMu sync.Mutex // protects inflight
	inflight   map[string]struct{}

	stats [3][5]atomic.Int64
}

type tenantPeriod struct{ tenant, period string }

// maxKnown bounds the keys remembered as existing; past it the memory
// starts over (and the bucket answers "exists" once per key again).
const maxKnown = 1 << 17

// New returns a Notifier; Run starts it.
func New(o Options) *Notifier {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.StoreTimeout == 0 {
		o.StoreTimeout = 2 * time.Second
	}
	if o.ClaimSkew == 0 {
		o.ClaimSkew = 2 * time.Second
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 5 * time.Minute
	}
	if o.Poll == 0 {
		o.Poll = time.Second
	}
	if o.Parallel == 0 {
		o.Parallel = 8
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Client == nil {
		o.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	n := &Notifier{o: o, mirror: &recordMirror{JSONMirror: store.NewJSONMirror[Record]()}, usage: map[tenantPeriod]int64{},
		todo: map[string]*Record{}, known: map[string]struct{}{}, inflight: map[string]struct{}{},
		createWake: make(chan struct{}, 1), sendWake: make(chan struct{}, 1)}
	n.mirror.OnChange = func(string) { wake(n.sendWake) }
	return n
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Totals is the limiter's QuotaOptions.Totals: the ledger total of
// tenant's period after an operation. It keeps the highest total per
// tenant and period and wakes the creator; it never blocks on I/O.
//
// The ledger total counts tokens reserved by replicas' leases, which runs
// ahead of the requests served by what the leases still hold (a few
// seconds of the tenant's traffic, and single tokens near the limit): a
// threshold is crossed when that much of the month is reserved.
func (n *Notifier) Totals(tenant, period string, total int64) {
	k := tenantPeriod{tenant, period}
	n.mu.Lock()
	if total > n.usage[k] {
		n.usage[k] = total
	}
	n.mu.Unlock()
	wake(n.createWake)
}

// LimitRequest notifies event (EventRequestFiled, EventRequestDecided) of
// limit request r: it creates the record under ctx, or, if the bucket
// does not answer, keeps it to create in the background. It is
// tenants.Service.Notify.
func (n *Notifier) LimitRequest(ctx context.Context, r *store.LimitRequest, event string) {
	kind := KindRequestFiled
	if event == EventRequestDecided {
		kind = KindRequestDecided
	}
	t, ok := n.o.Target(r.Tenant)
	if !ok || !t.sends(kind) {
		return
	}
	lr := *r
	now := n.o.Now().UTC()
	rec := &Record{Body: Body{ID: RequestKey(r.ID, event), Kind: kind, Tenant: r.Tenant, LimitRequest: &lr, Created: now},
		Status: StatusPending, NextAttempt: time.Now().UTC()}
	if err := n.create(ctx, rec); err != nil {
		n.mu.Lock()
		n.todo[rec.ID] = rec
		n.mu.Unlock()
		wake(n.createWake)
	}
}

// create stores rec unless its key exists. An error means that it may
// not exist yet: retry.
func (n *Notifier) create(ctx context.Context, rec *Record) error {
	ctx, cancel := context.WithTimeout(ctx, n.o.StoreTimeout)
	defer cancel()
	_, err := store.Create(ctx, n.o.KV, rec.ID, rec)
	switch {
	case err == nil:
		n.count(rec.Kind, "created")
		n.mirror.set(rec.ID, rec)
		n.o.Log.Info("notification created", zap.String("id", rec.ID))
	case errors.Is(err, store.ErrExists):
		n.count(rec.Kind, "exists")
		err = nil
	default:
		n.count(rec.Kind, "create_failed")
		return err
	}
	n.mu.Lock()
	if len(n.known) >= maxKnown {
		clear(n.known)
	}
	n.known[rec.ID] = struct{}{}
	n.mu.Unlock()
	return err
}

// Run creates and delivers notifications until ctx ends: it mirrors the
// bucket (for the dispatcher and List), and runs the creator and the
// dispatcher. ready, if not nil, is closed once the bucket is mirrored.
func (n *Notifier) Run(ctx context.Context, ready chan<- struct{}) {
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); store.Watch(ctx, n.o.KV, n.mirror, n.o.Log.Named("watch"), ready) }()
	go func() { defer wg.Done(); n.runCreator(ctx) }()
	go func() { defer wg.Done(); n.runDispatcher(ctx) }()
	wg.Wait()
}

// runCreator turns the totals seen into records to create, and creates
// them, retrying what the bucket did not take.
func (n *Notifier) runCreator(ctx context.Context) {
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	wait := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			// Shutting down: one last try at what is still to create
			// (the crossings of the last ledger operations).
			fctx, cancel := context.WithTimeout(context.Background(), n.o.StoreTimeout)
			n.createAll(fctx)
			cancel()
			return
		case <-n.createWake:
		case <-retry.C:
		}
		if n.createAll(ctx) {
			retry.Reset(wait)
			wait = min(2*wait, 5*time.Second)
		} else {
			wait = 100 * time.Millisecond
		}
	}
}

// createAll checks the totals seen against the thresholds and creates
// what is to create; it reports whether some creation failed.
func (n *Notifier) createAll(ctx context.Context) (failed bool) {
	n.mu.Lock()
	usage := n.usage
	n.usage = map[tenantPeriod]int64{}
	n.mu.Unlock()
	for tp, total := range usage {
		n.crossed(tp.tenant, tp.period, total)
	}
	n.mu.Lock()
	todo := make([]*Record, 0, len(n.todo))
	for _, r := range n.todo {
		todo = append(todo, r)
	}
	n.mu.Unlock()
	sort.Slice(todo, func(i, j int) bool { return todo[i].Created.Before(todo[j].Created) })
	for _, r := range todo {
		if ctx.Err() != nil {
			return true
		}
		if err := n.create(ctx, r); err != nil {
			failed = true
			n.o.Log.Warn("notification not created yet; retrying", zap.String("id", r.ID), zap.Error(err))
			continue
		}
		n.mu.Lock()
		delete(n.todo, r.ID)
		n.mu.Unlock()
	}
	return failed
}

// crossed queues a record for each threshold of tenant's current limit
// that total reaches and that is not known to exist.
func (n *Notifier) crossed(tenant, period string, total int64) {
	t, ok := n.o.Target(tenant)
	if !ok || t.Limit <= 0 || !t.sends(KindUsage) {
		return
	}
	now := n.o.Now().UTC()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range t.Percents {
		if !reached(total, t.Limit, p) {
			break
		}
		key := UsageKey(tenant, period, p, t.Limit)
		if _, ok := n.known[key]; ok {
			continue
		}
		if _, ok := n.todo[key]; ok {
			continue
		}
		if n.mirror.Get(key) != nil {
			n.known[key] = struct{}{}
			continue
		}
		n.todo[key] = &Record{Body: Body{ID: key, Kind: KindUsage, Tenant: tenant, Period: period, Threshold: p, Limit: t.Limit,
			Used: total, Created: now}, Status: StatusPending, NextAttempt: time.Now().UTC()}
	}
}

// reached reports whether total is at least percent of limit: 80% of
// 201 is reached at 161 (160.8 rounded up).
func reached(total, limit, percent int64) bool {
	if limit <= math.MaxInt64/1000 && total <= math.MaxInt64/100 {
		return total*100 >= limit*percent
	}
	return float64(total)*100 >= float64(limit)*float64(percent)
}

// runDispatcher delivers the pending records whose time has come and that
// no other replica holds, Parallel at a time.
func (n *Notifier) runDispatcher(ctx context.Context) {
	tick := time.NewTicker(n.o.Poll)
	defer tick.Stop()
	sem := make(chan struct{}, n.o.Parallel)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.sendWake:
		case <-tick.C:
		}
		now := time.Now()
		due := n.mirror.List(func(r *Record) bool { return r.Status == StatusPending && n.due(r, now) })
		sort.Slice(due, func(i, j int) bool { return due[i].Created.Before(due[j].Created) })
		for _, r := range due {
			if !n.begin(r.ID) {
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				n.end(r.ID)
				return
			}
			wg.Add(1)
			go func(id string) {
				defer func() { <-sem; n.end(id); wg.Done() }()
				n.deliver(ctx, id)
			}(r.ID)
		}
	}
}

// due reports whether r may be attempted now: its time has come and no
// other replica's claim holds it.
func (n *Notifier) due(r *Record, now time.Time) bool {
	if now.Before(r.NextAttempt) {
		return false
	}
	return r.Claim == nil || r.Claim.Owner == n.o.Replica || now.After(r.Claim.Until.Add(n.o.ClaimSkew))
}

func (n *Notifier) begin(id string) bool {
	n.inflightMu.Lock()
	defer n.inflightMu.Unlock()
	if _, ok := n.inflight[id]; ok {
		return false
	}
	n.inflight[id] = struct{}{}
	return true
}

func (n *Notifier) end(id string) {
	n.inflightMu.Lock()
	delete(n.inflight, id)
	n.inflightMu.Unlock()
}

// deliver makes one attempt at record id: claim, POST, record the outcome.
func (n *Notifier) deliver(ctx context.Context, id string) {
	log := n.o.Log.With(zap.String("id", id))
	sctx, cancel := context.WithTimeout(ctx, n.o.StoreTimeout)
	var r Record
	rev, err := store.Get(sctx, n.o.KV, id, &r)
	cancel()
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			log.Debug("notification not read", zap.Error(err))
		}
		return
	}
	now := time.Now()
	if r.Status != StatusPending || !n.due(&r, now) {
		return // the mirror was behind
	}
	// Claim: only the replica whose compare-and-set wins sends. The
	// claim covers the attempt and the write of its outcome.
	r.Claim = &Claim{Owner: n.o.Replica, Until: now.Add(n.o.Timeout + n.o.StoreTimeout)}
	sctx, cancel = context.WithTimeout(ctx, n.o.StoreTimeout)
	rev, err = store.Update(sctx, n.o.KV, id, &r, rev)
	cancel()
	if err != nil {
		log.Debug("notification not claimed", zap.Error(err))
		return
	}
	claimed := r
	n.mirror.set(id, &claimed)
	sendErr := n.send(ctx, &r)
	r.Attempts++
	r.Claim = nil
	now = time.Now()
	if sendErr == nil {
		n.count(r.Kind, "delivered")
		at := n.o.Now().UTC()
		r.Status, r.DeliveredAt, r.LastError, r.NextAttempt = StatusDelivered, &at, "", time.Time{}
		n.markDelivered(ctx, &r, rev)
		log.Info("notification delivered", zap.Int("attempts", r.Attempts))
		return
	}
	if ctx.Err() != nil {
		// Shutting down: the claim lapses and another replica sends it.
		return
	}
	n.count(r.Kind, "failed")
	r.LastError = sendErr.Error()
	r.NextAttempt = now.Add(n.backoff(r.Attempts)).UTC()
	sctx, cancel = context.WithTimeout(ctx, n.o.StoreTimeout)
	_, err = store.Update(sctx, n.o.KV, id, &r, rev)
	cancel()
	log.Warn("notification not delivered; retrying later", zap.Error(sendErr), zap.Int("attempts", r.Attempts),
		zap.Time("next_attempt", r.NextAttempt), zap.NamedError("record_error", err))
}

// markDelivered writes r as delivered at rev, the revision of its claim.
// The receiver has answered: until this write lands, a replica that takes
// the claim over would send it again. So it is retried until it lands or
// the record says delivered, for as long as the bucket may take to come
// back: a CAS lost to another replica that took the claim over meanwhile
// is written over (it was delivered), unless that one was delivered too.
func (n *Notifier) markDelivered(ctx context.Context, r *Record, rev uint64) {
	deadline := time.Now().Add(time.Minute)
	wait := 50 * time.Millisecond
	for {
		if ctx.Err() != nil {
			// Shutting down: a few more tries, not a minute of them.
			if soon := time.Now().Add(2 * n.o.StoreTimeout); soon.Before(deadline) {
				deadline = soon
			}
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.o.StoreTimeout)
		_, err := store.Update(sctx, n.o.KV, r.ID, r, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			var cur Record
			latest, gerr := store.Get(sctx, n.o.KV, r.ID, &cur)
			if gerr == nil && cur.Status == StatusDelivered {
				cancel()
				return
			}
			if gerr == nil {
				rev = latest
			}
			err = errors.Join(err, gerr)
		}
		cancel()
		if err == nil {
			done := *r
			n.mirror.set(r.ID, &done)
			return
		}
		if errors.Is(err, store.ErrNotFound) || time.Now().After(deadline) {
			n.o.Log.Error("notification delivered but not marked: it may be sent again (receivers dedupe on its id)",
				zap.String("id", r.ID), zap.Error(err))
			return
		}
		time.Sleep(wait)
		wait = min(2*wait, time.Second)
	}
}

// backoff is the wait after the attempts-th failed attempt.
func (n *Notifier) backoff(attempts int) time.Duration {
	d := n.o.MinBackoff
	for i := 1; i < attempts && d < n.o.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, n.o.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// send POSTs r to its tenant's URL, signed with its secret.
func (n *Notifier) send(ctx context.Context, r *Record) error {
	t, ok := n.o.Target(r.Tenant)
	if !ok || !t.sends(r.Kind) {
		return errors.New("the tenant's plan sends no such notification (notify.url, notify.events)")
	}
	body, err := r.body()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, n.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tollgate-webhook")
	req.Header.Set(HeaderID, r.ID)
	req.Header.Set(HeaderSignature, Sign(t.Secret, time.Now(), body))
	resp, err := n.o.Client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("the receiver answered %d", resp.StatusCode)
	}
	return nil
}

// List returns the records for which keep returns true (all if nil), as
// this replica's mirror of the bucket has them.
func (n *Notifier) List(keep func(*Record) bool) []*Record { return n.mirror.List(keep) }

// Pending returns the number of records to create that the bucket has
// not taken yet (an outage), and of records pending delivery.
func (n *Notifier) Pending() (toCreate, toDeliver int) {
	n.mu.Lock()
	toCreate = len(n.todo)
	n.mu.Unlock()
	return toCreate, len(n.mirror.List(func(r *Record) bool { return r.Status == StatusPending }))
}

func (n *Notifier) count(kind, outcome string) {
	k, o := -1, -1
	for i, v := range Kinds {
		if v == kind {
			k = i
		}
	}
	for i, v := range Outcomes {
		if v == outcome {
			o = i
		}
	}
	if k >= 0 && o >= 0 {
		n.stats[k][o].Add(1)
	}
}

// Count returns how many times outcome happened to notifications of kind
// on this replica: created (this replica created it), exists (a creation
// found it there already), create_failed (a creation to retry),
// delivered, failed (an attempt to retry).
func (n *Notifier) Count(kind, outcome string) int64 {
	for i, v := range Kinds {
		for j, w := range Outcomes {
			if v == kind && w == outcome {
				return n.stats[i][j].Load()
			}
		}
	}
	return 0
}

// recordMirror is the bucket's copy in memory (store.Watch keeps it), to
// which a replica also applies its own writes at once. Delivered is a
// record's last state: a change that the watcher brings late (a claim
// written before the delivery this replica already applied) does not
// turn a delivered record back into a pending one.
type recordMirror struct {
	*store.JSONMirror[Record]
	mu sync.Mutex // serialises set, so that its check holds when it writes
}

// Update implements store.Mirror.
func (m *recordMirror) Update(key string, value []byte) {
	var r *Record
	if value != nil {
		r = new(Record)
		if json.Unmarshal(value, r) != nil {
			return
		}
	}
	m.set(key, r)
}

// set applies r (nil: a deletion) unless it would take a delivered
// record back to pending.
func (m *recordMirror) set(key string, r *Record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r != nil && r.Status != StatusDelivered {
		if cur := m.Get(key); cur != nil && cur.Status == StatusDelivered {
			return
		}
	}
	m.Set(key, r)
}
