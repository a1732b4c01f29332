package notify_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/leaktest"
	"github.com/tollgate/tollgate/internal/notify"
	"github.com/tollgate/tollgate/internal/poll"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// TestMain fails the package's tests if they leave a goroutine running.
func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

const secret = "whsec_test_0123456789abcdef"

// verifySignature is how a receiver checks a webhook: the README's
// example, written without package notify.
func verifySignature(secret string, r *http.Request, body []byte) error {
	var ts string
	var sigs []string
	for _, part := range strings.Split(r.Header.Get("Tollgate-Signature"), ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("no timestamp")
	}
	if d := time.Since(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("too old")
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range sigs {
		if got, err := hex.DecodeString(s); err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return fmt.Errorf("bad signature")
}

func TestSignVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"usage.acme.2026-12.80.200"}`)
	good := notify.Sign(secret, now, body)
	if !strings.HasPrefix(good, "t=1800000000,v1=") || len(good) != len("t=1800000000,v1=")+64 {
		t.Fatalf("Sign = %q, want t=<seconds>,v1=<64 hex digits>", good)
	}
	for _, tt := range []struct {
		name   string
		secret string
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		{"valid", secret, good, body, now, nil},
		{"valid within tolerance", secret, good, body, now.Add(4 * time.Minute), nil},
		{"rotated secret: one of two", secret, notify.Sign("old-secret-0123456789", now, body) + ",v1=" + good[strings.Index(good, "v1=")+3:], body, now, nil},
		{"body changed", secret, good, []byte(`{"id":"usage.acme.2026-12.80.201"}`), now, notify.ErrSignatureInvalid},
		{"other secret", "whsec_other_0123456789", good, body, now, notify.ErrSignatureInvalid},
		{"replayed late", secret, good, body, now.Add(6 * time.Minute), notify.ErrSignatureTime},
		{"from the future", secret, good, body, now.Add(-6 * time.Minute), notify.ErrSignatureTime},
		{"timestamp changed", secret, strings.Replace(good, "t=1800000000", "t=1800000001", 1), body, now, notify.ErrSignatureInvalid},
		{"missing", secret, "", body, now, notify.ErrSignatureMissing},
		{"no v1", secret, "t=1800000000", body, now, notify.ErrSignatureMissing},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := notify.Verify(tt.secret, tt.header, tt.body, 5*time.Minute, tt.now); got != tt.want {
				t.Errorf("Verify = %v, want %v", got, tt.want)
			}
		})
	}
	// The receiver's own code agrees with Sign.
	r := httptest.NewRequest("POST", "/", nil)
	r.Header.Set("Tollgate-Signature", notify.Sign(secret, time.Now(), body))
	if err := verifySignature(secret, r, body); err != nil {
		t.Errorf("the README's verification rejects Sign's header: %v", err)
	}
}

// receiver is a webhook endpoint that checks each signature as a user's
// code would and counts the webhooks it acknowledged, by id.
type receiver struct {
	t   *testing.T
	srv *httptest.Server
	// fail, while positive, answers 500 and counts down.
	fail atomic.Int64
	// hang makes it hold requests until the test ends.
	hang atomic.Bool

	mu       sync.Mutex
	acked    map[string]int
	bodies   map[string]notify.Body
	attempts map[string][]time.Time
	badSigs  int
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{t: t, acked: map[string]int{}, bodies: map[string]notify.Body{}, attempts: map[string][]time.Time{}}
	stop := make(chan struct{})
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id := r.Header.Get("Tollgate-Notification-Id")
		rc.mu.Lock()
		rc.attempts[id] = append(rc.attempts[id], time.Now())
		rc.mu.Unlock()
		if rc.hang.Load() {
			select {
			case <-stop:
			case <-r.Context().Done():
			}
			return
		}
		if r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "content type", 400)
			return
		}
		if err := verifySignature(secret, r, body); err != nil {
			rc.mu.Lock()
			rc.badSigs++
			rc.mu.Unlock()
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		if rc.fail.Add(-1) >= 0 {
			http.Error(w, "try later", 500)
			return
		}
		var b notify.Body
		if err := json.Unmarshal(body, &b); err != nil || b.ID != id {
			http.Error(w, "body", 400)
			return
		}
		rc.mu.Lock()
		rc.acked[id]++
		rc.bodies[id] = b
		rc.mu.Unlock()
		w.WriteHeader(204)
	}))
	t.Cleanup(func() { close(stop); rc.srv.Close() })
	return rc
}

func (rc *receiver) snapshot() (acked map[string]int, bad int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	acked = map[string]int{}
	for k, v := range rc.acked {
		acked[k] = v
	}
	return acked, rc.badSigs
}

// limits is the tenants' limits, changeable while notifiers run.
type limits struct {
	mu sync.Mutex
	m  map[string]int64
}

func (l *limits) set(tenant string, v int64) {
	l.mu.Lock()
	l.m[tenant] = v
	l.mu.Unlock()
}

func (l *limits) target(url string) func(string) (notify.Target, bool) {
	return func(tenant string) (notify.Target, bool) {
		l.mu.Lock()
		defer l.mu.Unlock()
		v, ok := l.m[tenant]
		return notify.Target{URL: url, Secret: secret, Percents: []int64{80, 100}, Limit: v}, ok
	}
}

// replica is a notifier on its own connection, as each tollgate replica
// has.
type replica struct {
	n      *notify.Notifier
	s      *store.Store
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *replica) stop() {
	r.cancel()
	<-r.done
}

func startReplica(t *testing.T, url, name string, target func(string) (notify.Target, bool), adjust func(*notify.Options)) *replica {
	t.Helper()
	s := storetest.ConnectURL(t, url)
	log := zap.NewNop()
	if testing.Verbose() {
		log = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named(name)
	}
	o := notify.Options{KV: s.Notifications, Replica: name, Target: target, Timeout: 2 * time.Second,
		StoreTimeout: time.Second, ClaimSkew: 200 * time.Millisecond, MinBackoff: 100 * time.Millisecond,
		MaxBackoff: time.Second, Poll: 100 * time.Millisecond, Log: log}
	if adjust != nil {
		adjust(&o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{n: notify.New(o), s: s, cancel: cancel, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() { defer close(r.done); r.n.Run(ctx, ready) }()
	t.Cleanup(r.stop) // before s.Close: cleanups run last first
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the notifications bucket was not mirrored", name)
	}
	return r
}

// records reads every record of the bucket.
func records(t *testing.T, s *store.Store) map[string]notify.Record {
	t.Helper()
	out, err := readRecords(s)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func readRecords(s *store.Store) (map[string]notify.Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := map[string]notify.Record{}
	keys, err := s.Notifications.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	for k := range keys.Keys() {
		var r notify.Record
		if _, err := store.Get(ctx, s.Notifications, k, &r); err != nil {
			return nil, err
		}
		out[k] = r
	}
	return out, nil
}

// delivered waits until the bucket holds exactly ids, all delivered, and
// the receiver acknowledged each of them.
func delivered(t *testing.T, s *store.Store, rc *receiver, within time.Duration, ids ...string) map[string]notify.Record {
	t.Helper()
	var recs map[string]notify.Record
	poll.CheckFor(t, within, 20*time.Millisecond, func() error {
		var err error
		if recs, err = readRecords(s); err != nil {
			return err
		}
		for _, id := range ids {
			r, ok := recs[id]
			if !ok {
				return fmt.Errorf("no record %s (have %d)", id, len(recs))
			}
			if r.Status != notify.StatusDelivered {
				return fmt.Errorf("%s is %s (attempts %d, last error %q)", id, r.Status, r.Attempts, r.LastError)
			}
		}
		if len(recs) != len(ids) {
			return fmt.Errorf("%d records, want %d", len(recs), len(ids))
		}
		if acked, _ := rc.snapshot(); len(acked) != len(ids) {
			return fmt.Errorf("receiver acknowledged %v", acked)
		}
		return nil
	})
	return recs
}

// onceEach checks that the receiver acknowledged each id exactly once,
// with a valid signature, and that the replicas' counters agree.
func onceEach(t *testing.T, rc *receiver, reps []*replica, ids ...string) {
	t.Helper()
	acked, bad := rc.snapshot()
	for _, id := range ids {
		if acked[id] != 1 {
			t.Errorf("%s acknowledged %d times, want 1", id, acked[id])
		}
	}
	if len(acked) != len(ids) {
		t.Errorf("acknowledged %v, want %v once each", acked, ids)
	}
	if bad != 0 {
		t.Errorf("%d webhooks with a bad signature", bad)
	}
	var created, deliveredN int64
	for _, r := range reps {
		created += r.n.Count(notify.KindUsage, "created")
		deliveredN += r.n.Count(notify.KindUsage, "delivered")
	}
	if created != int64(len(ids)) || deliveredN != int64(len(ids)) {
		t.Errorf("replicas created %d and delivered %d, want %d each", created, deliveredN, len(ids))
	}
}

const period = "2026-12"

// Three replicas see the same crossings at once, many times over: one
// record and one webhook per threshold.
func TestExactlyOnceAcrossReplicas(t *testing.T) {
	srv := storetest.StartServer(t)
	rc := newReceiver(t)
	l := &limits{m: map[string]int64{"acme": 200}}
	var reps []*replica
	for i := range 3 {
		reps = append(reps, startReplica(t, srv.URL(), fmt.Sprintf("r%d", i), l.target(rc.srv.URL), nil))
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, r := range reps {
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for total := int64(150 + g); total <= 210; total += 3 {
					r.n.Totals("acme", period, total)
				}
			}()
		}
	}
	wg.Wait()
	ids := []string{notify.UsageKey("acme", period, 80, 200), notify.UsageKey("acme", period, 100, 200)}
	recs := delivered(t, reps[0].s, rc, 10*time.Second, ids...)
	t.Logf("both delivered %v after the crossings", time.Since(start).Round(time.Millisecond))
	onceEach(t, rc, reps, ids...)
	if r := recs[ids[0]]; r.Threshold != 80 || r.Limit != 200 || r.Used < 160 || r.Tenant != "acme" || r.Period != period || r.Attempts != 1 || r.DeliveredAt == nil {
		t.Errorf("record %+v", r)
	}
	rc.mu.Lock()
	b := rc.bodies[ids[1]]
	rc.mu.Unlock()
	if b.Kind != notify.KindUsage || b.Threshold != 100 || b.Limit != 200 || b.Used < 200 {
		t.Errorf("body %+v", b)
	}
	// Crossings seen again later create nothing.
	for _, r := range reps {
		r.n.Totals("acme", period, 205)
	}
	poll.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		var exists int64
		for _, r := range reps {
			exists += r.n.Count(notify.KindUsage, "exists")
			if c, _ := r.n.Pending(); c != 0 {
				return fmt.Errorf("%d to create", c)
			}
		}
		return nil
	})
	if got := len(records(t, reps[0].s)); got != 2 {
		t.Errorf("%d records, want 2", got)
	}
}

// A receiver that fails is retried with growing waits; the record is
// pending, with its error, meanwhile.
func TestRetryWithBackoff(t *testing.T) {
	srv := storetest.StartServer(t)
	rc := newReceiver(t)
	rc.fail.Store(3)
	l := &limits{m: map[string]int64{"acme": 100}}
	r := startReplica(t, srv.URL(), "r0", l.target(rc.srv.URL), func(o *notify.Options) {
		o.MinBackoff, o.MaxBackoff = 200*time.Millisecond, 5*time.Second
	})
	r.n.Totals("acme", period, 85)
	id := notify.UsageKey("acme", period, 80, 100)
	poll.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		rec, ok := records(t, r.s)[id]
		if !ok || rec.Status != notify.StatusPending || rec.Attempts < 1 || !strings.Contains(rec.LastError, "500") {
			return fmt.Errorf("record %+v: want pending after a failed attempt", rec)
		}
		pending := r.n.List(func(x *notify.Record) bool { return x.Status == notify.StatusPending })
		if len(pending) != 1 {
			return fmt.Errorf("List(pending) = %d records", len(pending))
		}
		return nil
	})
	recs := delivered(t, r.s, rc, 20*time.Second, id)
	if got := recs[id].Attempts; got != 4 {
		t.Errorf("attempts = %d, want 4 (3 failures, then 204)", got)
	}
	rc.mu.Lock()
	at := rc.attempts[id]
	rc.mu.Unlock()
	if len(at) != 4 {
		t.Fatalf("%d attempts reached the receiver, want 4", len(at))
	}
	// Waits of 200ms·2^k with jitter (half to all of it): at least
	// 100, 200, 400 ms.
	for i := 1; i < len(at); i++ {
		gap, least := at[i].Sub(at[i-1]), 100*time.Millisecond<<(i-1)
		t.Logf("wait before attempt %d: %v", i+1, gap.Round(time.Millisecond))
		if gap < least {
			t.Errorf("wait before attempt %d = %v, want ≥ %v", i+1, gap, least)
		}
	}
}

// A limit raised mid-period can be crossed again: the notification is
// once per tenant, period, threshold and limit.
func TestRaisedLimitCrossesAgain(t *testing.T) {
	srv := storetest.StartServer(t)
	rc := newReceiver(t)
	l := &limits{m: map[string]int64{"acme": 200}}
	r := startReplica(t, srv.URL(), "r0", l.target(rc.srv.URL), nil)
	r.n.Totals("acme", period, 170)
	first := notify.UsageKey("acme", period, 80, 200)
	delivered(t, r.s, rc, 10*time.Second, first)

	l.set("acme", 400) // a grant mid-month; usage is kept
	r.n.Totals("acme", period, 300)
	r.n.Totals("acme", period, 319) // 79.75% of 400
	poll.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if c, _ := r.n.Pending(); c != 0 {
			return fmt.Errorf("%d to create", c)
		}
		return nil
	})
	r.n.Totals("acme", period, 320)
	second := notify.UsageKey("acme", period, 80, 400)
	delivered(t, r.s, rc, 10*time.Second, first, second)
	onceEach(t, rc, []*replica{r}, first, second)

	// Back to the old limit: its 80% was sent already.
	l.set("acme", 200)
	r.n.Totals("acme", period, 330)
	third := notify.UsageKey("acme", period, 100, 200)
	delivered(t, r.s, rc, 10*time.Second, first, second, third)
	onceEach(t, rc, []*replica{r}, first, second, third)
}

// A replica that claimed a notification and stopped without marking it
// (a crash) leaves its claim; another replica takes it over once the
// claim has expired, not before.
func TestClaimTakeover(t *testing.T) {
	srv := storetest.StartServer(t)
	rc := newReceiver(t)
	rc.hang.Store(true)
	l := &limits{m: map[string]int64{"acme": 100}}
	a := startReplica(t, srv.URL(), "crashing", l.target(rc.srv.URL), func(o *notify.Options) {
		o.Timeout = 3 * time.Second
	})
	a.n.Totals("acme", period, 100)
	ids := []string{notify.UsageKey("acme", period, 80, 100), notify.UsageKey("acme", period, 100, 100)}
	var until time.Time
	poll.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		recs := records(t, a.s)
		for _, id := range ids {
			if c := recs[id].Claim; c == nil || c.Owner != "crashing" {
				return fmt.Errorf("%s not claimed: %+v", id, recs[id])
			}
			until = recs[id].Claim.Until
		}
		return nil
	})
	a.stop() // in the middle of its attempts: nothing marked
	for id, rec := range records(t, a.s) {
		if rec.Status != notify.StatusPending || rec.Claim == nil || rec.Attempts != 0 {
			t.Fatalf("%s after the crash: %+v", id, rec)
		}
	}
	rc.hang.Store(false)
	b := startReplica(t, srv.URL(), "survivor", l.target(rc.srv.URL), nil)
	delivered(t, b.s, rc, 15*time.Second, ids...)
	onceEach(t, rc, []*replica{a, b}, ids...)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, id := range ids {
		at := rc.attempts[id]
		if len(at) != 2 {
			t.Errorf("%s reached the receiver %d times, want 2 (the crashed attempt, the takeover)", id, len(at))
			continue
		}
		// The survivor waits out the claim and the skew (200ms).
		if at[1].Before(until.Add(200 * time.Millisecond)) {
			t.Errorf("%s taken over at %v, before the claim ended (%v) plus the skew", id, at[1], until)
		}
	}
	if n := b.n.Count(notify.KindUsage, "delivered"); n != 2 {
		t.Errorf("the survivor delivered %d, want 2", n)
	}
}

// The NATS server restarts while three replicas see the crossings: they
// keep them in memory until it is back, then create and send each once.
func TestNATSRestartDuringCrossing(t *testing.T) {
	srv := storetest.StartServer(t)
	rc := newReceiver(t)
	l := &limits{m: map[string]int64{"acme": 200}}
	var reps []*replica
	for i := range 3 {
		reps = append(reps, startReplica(t, srv.URL(), fmt.Sprintf("r%d", i), l.target(rc.srv.URL), nil))
	}
	// One replica sees the first total before the stop, so that creations
	// may be in flight when the server goes.
	reps[0].n.Totals("acme", period, 161)
	srv.Stop()
	for _, r := range reps {
		r.n.Totals("acme", period, 170)
		r.n.Totals("acme", period, 200)
	}
	poll.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for i, r := range reps[1:] {
			if c, _ := r.n.Pending(); c == 0 {
				return fmt.Errorf("replica %d holds nothing to create", i+1)
			}
		}
		return nil
	})
	srv.Start()
	ids := []string{notify.UsageKey("acme", period, 80, 200), notify.UsageKey("acme", period, 100, 200)}
	delivered(t, reps[0].s, rc, 30*time.Second, ids...)
	onceEach(t, rc, reps, ids...)
}

// Limit request events: one record per request and event, whatever the
// retries.
func TestLimitRequestEvents(t *testing.T) {
	srv := storetest.StartServer(t)
	rc := newReceiver(t)
	l := &limits{m: map[string]int64{"acme": 200}}
	r := startReplica(t, srv.URL(), "r0", l.target(rc.srv.URL), nil)
	lr := &store.LimitRequest{ID: "lr_abc", Tenant: "acme", Requested: 1000, Status: store.RequestPending, Created: time.Now()}
	ctx := context.Background()
	r.n.LimitRequest(ctx, lr, notify.EventRequestFiled)
	r.n.LimitRequest(ctx, lr, notify.EventRequestFiled)
	lr.Status, lr.Granted = store.RequestGranted, 800
	r.n.LimitRequest(ctx, lr, notify.EventRequestDecided)
	ids := []string{notify.RequestKey("lr_abc", "filed"), notify.RequestKey("lr_abc", "decided")}
	delivered(t, r.s, rc, 10*time.Second, ids...)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, id := range ids {
		if rc.acked[id] != 1 {
			t.Errorf("%s acknowledged %d times", id, rc.acked[id])
		}
	}
	b := rc.bodies[ids[1]]
	if b.Kind != notify.KindRequestDecided || b.LimitRequest == nil || b.LimitRequest.Granted != 800 || b.LimitRequest.Status != "granted" {
		t.Errorf("decided body %+v", b)
	}
	if got := rc.bodies[ids[0]].LimitRequest.Status; got != "pending" {
		t.Errorf("filed body's request status %q, want pending", got)
	}
}

// The one window of a repeated delivery, as documented: a replica that
// got the receiver's 2xx and died (here: stopped while NATS was away, so
// its mark could not be written) leaves the record pending under its
// claim; another replica takes it over and sends it again, with the same
// Tollgate-Notification-Id and body, which is what receivers dedupe on.
func TestCrashAfterAnswerResendsSameID(t *testing.T) {
	srv := storetest.StartServer(t)
	l := &limits{m: map[string]int64{"acme": 100}}
	var a *replica
	var once sync.Once
	var bodies []string
	var mu sync.Mutex
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, r.Header.Get("Tollgate-Notification-Id")+" "+string(body))
		mu.Unlock()
		if verifySignature(secret, r, body) != nil {
			w.WriteHeader(401)
			return
		}
		// The first delivery is answered after NATS went away and the
		// sending replica is stopping: it cannot mark it.
		once.Do(func() { srv.Stop(); a.cancel() })
		w.WriteHeader(200)
	}))
	defer hook.Close()
	target := l.target(hook.URL)
	a = startReplica(t, srv.URL(), "a", target, nil)
	a.n.Totals("acme", period, 80)
	poll.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(bodies) == 0 {
			return fmt.Errorf("nothing sent")
		}
		return nil
	})
	<-a.done
	srv.Start()
	b := startReplica(t, srv.URL(), "b", target, func(o *notify.Options) { o.Poll = 50 * time.Millisecond })
	id := notify.UsageKey("acme", period, 80, 100)
	poll.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		recs, err := readRecords(b.s)
		if err != nil {
			return err
		}
		if r := recs[id]; r.Status != notify.StatusDelivered {
			return fmt.Errorf("%s: %+v", id, r)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 2 || bodies[0] != bodies[1] || !strings.HasPrefix(bodies[0], id+" ") {
		t.Errorf("sent %q; want the same id and body twice", bodies)
	}
}
