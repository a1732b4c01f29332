package limiter_test

import (
	"context"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
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

// TestQuotaManyActiveTenants drives Admit for 1,000 tenants at about 10
// requests a second each, picked at random by 100 clients (the load
// harness's 100 connections), over an embedded NATS with sync_always,
// max_lease 1000 and a lease horizon of 10s, and reports how many
// admissions waited on the slow path and for how long, the Admit latency
// and the ledger and record traffic per 1,000 requests, for the first two
// seconds, the harness's window (2-10s of a fresh replica, while leases
// grow) and after. It is a measurement, not a check: it runs only when
// TOLLGATE_LOAD_SECONDS is set (20 or more). To see what the harness saw
// (tollgate and the backend pinned to one core), run the test binary with
// GOMAXPROCS=1 under taskset and TOLLGATE_LOAD_WORK_US=60 for the rest of
// each request's work:
//
//	go test -c -o /tmp/limiter.test ./limiter/ && cd limiter &&
//	TOLLGATE_LOAD_SECONDS=14 TOLLGATE_LOAD_WORK_US=60 GOMAXPROCS=1 taskset -c 1 \
//	    /tmp/limiter.test -test.run TestQuotaManyActiveTenants -test.v
func TestQuotaManyActiveTenants(t *testing.T) {
	secs, err := strconv.Atoi(os.Getenv("TOLLGATE_LOAD_SECONDS"))
	if err != nil || secs <= 0 {
		t.Skip("a measurement: set TOLLGATE_LOAD_SECONDS to run it")
	}
	const tenants, clients, perClient = 1000, 100, 100 // 10,000 requests/s in all
	s := storetest.OpenSync(t)
	if os.Getenv("TOLLGATE_LOAD_NOSYNC") != "" {
		s = storetest.Open(t)
	}
	l := manyTenants(tenants, 1_000_000_000)
	q := limiter.NewQuotas(limiter.QuotaOptions{Ledger: s.Ledger, Leases: s.Leases(), Limits: l.get,
		MaxLease: 1000, LeaseHorizon: 10 * time.Second, ReplicaID: "load"})
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
	names := make([]string, tenants)
	for i := range names {
		names[i] = tenantName(i)
	}
	// The load harness measures 8s after 2s of warm-up on a fresh replica,
	// while leases grow from their first 10 tokens; then steady state.
	phases := []time.Duration{2 * time.Second, 8 * time.Second, time.Duration(max(secs-10, 1)) * time.Second}
	phaseNames := []string{"0-2s", "2-10s (the harness's window)", "steady, after 10s"}
	for p, length := range phases {
		ops, recs, w0 := q.LedgerOps(), q.RecordOps(), q.Waits()
		lats := make([][]time.Duration, clients)
		refused := make([]int64, clients)
		var wg sync.WaitGroup
		end := time.Now().Add(length)
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(c), uint64(p)))
				tick := time.NewTicker(time.Second / perClient)
				defer tick.Stop()
				for now := range tick.C {
					if now.After(end) {
						return
					}
					name := names[r.IntN(tenants)]
					start := time.Now()
					d := q.Admit(name, 1)
					lats[c] = append(lats[c], time.Since(start))
					if !d.Allowed {
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
		st.log(t, phaseNames[p])
		if lb, la, rb, ru := s.Batches(); lb+rb > 0 {
			t.Logf("so far in atomic batches: %d ledger additions in %d, %d record updates in %d", la, lb, ru, rb)
		}
	}
}
