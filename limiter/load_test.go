package limiter_test

import (
	"context"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/tollgate/tollgate/limiter"
)

// loadStats is what one phase of TestQuotaManyActiveTenants measured.
type loadStats struct {
	requests, refused   int64
	ops, records, waits int64
	waitSum             time.Duration
	lat                 []time.Duration // Admit latencies
	waitP99             time.Duration
}

// waitQuantile estimates a quantile of the waits between two snapshots
// from the histogram (the upper bound of the bucket it falls in).
func waitQuantile(a, b limiter.Waits, q float64) time.Duration {
	n := b.Count - a.Count
	if n == 0 {
		return 0
	}
	want := int64(q * float64(n))
	for i, ub := range limiter.WaitBuckets {
		if b.Buckets[i]-a.Buckets[i] >= want {
			return ub
		}
	}
	return time.Duration(1<<63 - 1)
}

func (s loadStats) log(t *testing.T, phase string) {
	t.Helper()
	slices.Sort(s.lat)
	at := func(q float64) time.Duration { return s.lat[min(int(q*float64(len(s.lat))), len(s.lat)-1)] }
	per1000 := func(n int64) float64 { return float64(n) * 1000 / float64(s.requests) }
	t.Logf("%s: %d requests (%d refused); Admit p50 %v p99 %v p99.9 %v max %v; "+
		"%d waited on the slow path (%.2f per 1000), wait p99 ≤ %v, mean %v; per 1000 requests: %.2f ledger ops, %.2f record writes",
		phase, s.requests, s.refused, at(0.5), at(0.99), at(0.999), s.lat[len(s.lat)-1],
		s.waits, per1000(s.waits), s.waitP99, s.waitSum/time.Duration(max(s.waits, 1)), per1000(s.ops), per1000(s.records))
}

// loadConfig is the load of one run of TestQuotaManyActiveTenants.
type loadConfig struct {
	tenants, clients, perClient int // perClient: requests a second
	horizon                     time.Duration
	sync                        bool // fsync every write (nats.sync_always)
	phases                      []time.Duration
	phaseNames                  []string // the last phase is the steady one
}

// TestQuotaManyActiveTenants drives Admit for many tenants at once, picked
// at random by concurrent clients at a steady rate, with the background
// loop refilling leases, and checks what the limiter promises under that
// load:
//
//   - nothing is refused (the limits are far away) and, once the replica
//     closes, every tenant's ledger total is exactly what it was admitted,
//     with no lease record left;
//   - once leases have grown to the tenants' traffic, they are refilled in
//     the background before they run dry: in the steady phase fewer
//     admissions wait on the slow path than half the reservations made. A
//     property, not a timing threshold: it holds however slow the machine,
//     as long as a refill takes less than what is left of a lease at its
//     low-water mark (a quarter of it or more: here half a second of a
//     tenant's traffic or more), and fails when refills fall behind (then
//     about one admission waits per reservation, or more).
//
// It also reports how many admissions waited and for how long, the Admit
// latency and the ledger and record traffic per 1,000 requests, per phase.
// By default it runs a small load for a few seconds. With
// TOLLGATE_LOAD_SECONDS set (20 or more) it runs the load harness's: 1,000
// tenants at about 10 requests a second each, picked by 100 clients (the
// harness's 100 connections), over an embedded NATS with sync_always
// (TOLLGATE_LOAD_NOSYNC turns it off), max_lease 1000 and a lease horizon
// of 10s, measured over the first two seconds, the harness's window (2-10s
// of a fresh replica, while leases grow) and after. To see what the
// harness saw (tollgate and the backend pinned to one core), run the test
// binary with GOMAXPROCS=1 under taskset and TOLLGATE_LOAD_WORK_US=60 for
// the rest of each request's work:
//
//	go test -c -o /tmp/limiter.test ./limiter/ && cd limiter &&
//	TOLLGATE_LOAD_SECONDS=14 TOLLGATE_LOAD_WORK_US=60 GOMAXPROCS=1 taskset -c 1 \
//	    /tmp/limiter.test -test.run TestQuotaManyActiveTenants -test.v
func TestQuotaManyActiveTenants(t *testing.T) {
	// 2,000 requests a second, 20 per tenant: with a horizon of 2s leases
	// grow to 40 tokens within the first second.
	cfg := loadConfig{tenants: 100, clients: 20, perClient: 100, horizon: 2 * time.Second,
		phases: []time.Duration{1500 * time.Millisecond, 2500 * time.Millisecond}, phaseNames: []string{"0-1.5s", "steady, after 1.5s"}}
	if secs, err := strconv.Atoi(os.Getenv("TOLLGATE_LOAD_SECONDS")); err == nil && secs > 0 {
		// 10,000 requests a second in all.
		cfg = loadConfig{tenants: 1000, clients: 100, perClient: 100, horizon: 10 * time.Second,
			sync: os.Getenv("TOLLGATE_LOAD_NOSYNC") == "",
			// The load harness measures 8s after 2s of warm-up on a fresh
			// replica, while leases grow from their first 10 tokens; then
			// steady state.
			phases:     []time.Duration{2 * time.Second, 8 * time.Second, time.Duration(max(secs-10, 1)) * time.Second},
			phaseNames: []string{"0-2s", "2-10s (the harness's window)", "steady, after 10s"}}
	}
	s := storetest.Open(t)
	if cfg.sync {
		s = storetest.OpenSync(t)
	}
	l := manyTenants(cfg.tenants, 1_000_000_000)
	q := limiter.NewQuotas(limiter.QuotaOptions{Ledger: s.Ledger, Leases: s.Leases(), Limits: l.get,
		MaxLease: 1000, LeaseHorizon: cfg.horizon, ReplicaID: "load"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = q.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// TOLLGATE_LOAD_WORK_US burns this much CPU per request, for the rest
	// of a request's work in the proxy (the harness measured ~70 µs of
	// CPU per request in all).
	work := time.Duration(0)
	if v, err := strconv.Atoi(os.Getenv("TOLLGATE_LOAD_WORK_US")); err == nil {
		work = time.Duration(v) * time.Microsecond
	}
	names := make([]string, cfg.tenants)
	for i := range names {
		names[i] = tenantName(i)
	}
	admitted := make([]atomic.Int64, cfg.tenants)
	var errs atomic.Int64
	var steady loadStats
	for p, length := range cfg.phases {
		ops, recs, w0 := q.LedgerOps(), q.RecordOps(), q.Waits()
		lats := make([][]time.Duration, cfg.clients)
		refused := make([]int64, cfg.clients)
		var wg sync.WaitGroup
		end := time.Now().Add(length)
		for c := 0; c < cfg.clients; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(c), uint64(p)))
				tick := time.NewTicker(time.Second / time.Duration(cfg.perClient))
				defer tick.Stop()
				for now := range tick.C {
					if now.After(end) {
						return
					}
					i := r.IntN(cfg.tenants)
					start := time.Now()
					d := q.Admit(names[i], 1)
					lats[c] = append(lats[c], time.Since(start))
					switch {
					case d.Allowed:
						admitted[i].Add(1)
					case d.Err != nil:
						errs.Add(1)
						refused[c]++
					default:
						refused[c]++
					}
					for spin := time.Now(); time.Since(spin) < work; {
					}
				}
			}()
		}
		wg.Wait()
		w1 := q.Waits()
		st := loadStats{ops: q.LedgerOps() - ops, records: q.RecordOps() - recs, waits: w1.Count - w0.Count,
			waitSum: w1.Sum - w0.Sum, waitP99: waitQuantile(w0, w1, 0.99)}
		for c := range lats {
			st.lat = append(st.lat, lats[c]...)
			st.refused += refused[c]
		}
		st.requests = int64(len(st.lat))
		st.log(t, cfg.phaseNames[p])
		if lb, la, rb, ru := s.Batches(); lb+rb > 0 {
			t.Logf("so far in atomic batches: %d ledger additions in %d, %d record updates in %d", la, lb, ru, rb)
		}
		if st.refused > 0 {
			t.Errorf("%s: %d of %d requests refused (%d with an error), want none: the limits are far away",
				cfg.phaseNames[p], st.refused, st.requests, errs.Load())
		}
		steady = st
	}
	if steady.ops == 0 {
		t.Fatal("no reservation in the steady phase: the test proves nothing")
	}
	if steady.waits*2 >= steady.ops {
		t.Errorf("steady phase: %d admissions waited for %d ledger operations: refills fall behind the leases", steady.waits, steady.ops)
	}

	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	if err := q.Close(cctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	totals := ledgerTotals(t, s, cfg.tenants, limiter.PeriodAt(time.Now(), time.UTC, 0).Key)
	wrong := 0
	for i := range totals {
		if got, want := totals[i], admitted[i].Load(); got != want {
			if wrong++; wrong <= 5 {
				t.Errorf("tenant %d: ledger %d after close, admitted %d", i, got, want)
			}
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d tenants: ledger ≠ admitted after close", wrong, cfg.tenants)
	}
	if left := records(t, s); len(left) != 0 {
		t.Errorf("%d lease records left after close", len(left))
	}
}
