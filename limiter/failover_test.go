package limiter_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/tollgate/tollgate/limiter"
)

// TestLeaderFailoverKeepsAdmitting (issue 14, item 3): three replicas,
// each with its own connection to a 3-node cluster (streams and buckets
// R3), serve a tenant at steady rates while, twice, the node leading the
// ledger stream and the lease records bucket is stopped and started again
// a few seconds later. A replica that holds a lease must keep admitting
// from it while the cluster elects new leaders: no admission may wait more
// than failoverMaxWait, and none may be refused. Afterwards the replicas
// spend the tenant's month to its end: exactly the limit is admitted, and
// once every replica is closed the ledger counts exactly what was
// admitted.
//
// Before the fix (see margin and lowWater) most runs stalled one to three
// replicas for 0.5-1.3 s: a bound raise or refill queued behind a write
// lost with the old leader waited Timeout (2 s), while the recorded bound
// let spending go on for about a second more.
func TestLeaderFailoverKeepsAdmitting(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster and runs traffic for 15 s")
	}
	const (
		replicas = 3
		limit    = 200_000
		traffic  = 15 * time.Second
		downFor  = 3 * time.Second
		tenant   = "acme"
	)
	// The target is 100 ms; it is asserted when
	// TOLLGATE_STRICT_TIMING=1 (a quiet machine). By default the bound is
	// 500 ms, which the stall this test was written for (0.86-1.09 s)
	// still fails, with room for a busy CI machine under -race.
	failoverMaxWait := 500 * time.Millisecond
	if os.Getenv("TOLLGATE_STRICT_TIMING") == "1" {
		failoverMaxWait = 100 * time.Millisecond
	}
	// Different rates, so that the replicas' refills are at different
	// points of their leases when a node stops: 100, 125 and 143
	// requests/s. The tenant's leases are at most 1,000 tokens (a
	// thousandth of its limit, or 1,000), 7-10 s of traffic: the bound's
	// margin of three quarters of a step, 375 tokens, is 2.6-3.75 s of it.
	// The limit is 200,000 (it was 20,000): a crash may strand at most 1%
	// of a plan (issue 18), so a 20,000 plan's leases are now at most 100
	// tokens, under a second of this traffic, and run dry while a leader
	// is replaced (admissions waited up to 1.4 s). A lease can cover a
	// failover only where 1% of the plan is that much of its traffic.
	every := [replicas]time.Duration{10 * time.Millisecond, 8 * time.Millisecond, 7 * time.Millisecond}
	stopAt := []time.Duration{4 * time.Second, 10 * time.Second}

	c := storetest.StartCluster(t, replicas)
	stores := make([]*store.Store, replicas)
	for i := range stores {
		s, err := store.Open(context.Background(), store.Options{URL: c.URL(), Replicas: 3,
			Timeout: 2 * time.Second, Name: fmt.Sprintf("r%d", i)})
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		t.Cleanup(s.Close)
		stores[i] = s
	}
	l := &limits{m: map[string]limiter.Limit{tenant: {Monthly: limit, Policy: limiter.PolicyLease}}}
	qs := make([]*limiter.Quotas, replicas)
	ctx, cancel := context.WithCancel(context.Background())
	var runs, noise sync.WaitGroup
	defer func() { cancel(); runs.Wait(); noise.Wait() }()
	for i, s := range stores {
		qs[i] = limiter.NewQuotas(limiter.QuotaOptions{
			Ledger: s.Ledger, Limits: l.get, ReplicaID: fmt.Sprintf("r%d", i),
			Available: s.Connected, Leases: s.Leases(), LeaseIdle: time.Minute,
			MaxLease: 10000, // tollgate's default (quota.max_lease); leases of this tenant are at most 1,000
			Timeout:  2 * time.Second,
		})
		runs.Go(func() { _ = qs[i].Run(ctx) })
	}

	// The node to stop first is replica 0's, so that it loses its
	// connection too (and reconnects to another node); the ledger's and
	// the lease records' leaders are moved there before anything is
	// written (a write lost with a moved leader would hold up the first
	// reservation, which no lease covers).
	first := nodeOf(t, stores[0])
	moveLeader(t, stores[1], "TOLLGATE_LEDGER_0", first)
	moveLeader(t, stores[1], "KV_tollgate_leases", first)

	// Each replica also writes for its other tenants, one ledger addition
	// and one lease record write after the other, as a replica with many
	// tenants does: so some write of each replica is on its way to the
	// leader when it stops, and is lost. The store sends a replica's
	// writes to a stream one group at a time, so its later writes (the
	// tenant's refills and bound raises) wait until that one times out.
	period := limiter.PeriodAt(time.Now(), time.UTC, 0).Key
	var slowestAdd, slowestPut [replicas]atomic.Int64 // nanoseconds
	for i, s := range stores {
		noise.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
				t0 := time.Now()
				_, _, _ = s.Ledger.Add(wctx, "others", period, 1, fmt.Sprintf("others.r%d.%d", i, n))
				wcancel()
				keepMax(&slowestAdd[i], time.Since(t0))
			}
		})
		noise.Go(func() {
			lb := s.Leases()
			var rev uint64
			for ctx.Err() == nil {
				wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
				t0 := time.Now()
				r, _, err := lb.Put(wctx, "others", period, fmt.Sprintf("r%d", i),
					limiter.LeaseRecord{Reserved: 1, SpentMax: 1, Expires: time.Now().Add(time.Hour)}, rev)
				if err == nil {
					rev = r
				}
				wcancel()
				keepMax(&slowestPut[i], time.Since(t0))
			}
		})
	}

	// Steady traffic, each request on its own goroutine at its scheduled
	// time (as an HTTP server would run it), so that a stall shows as the
	// latency of every request that arrives during it.
	type sample struct {
		at      time.Duration // since the start of traffic
		took    time.Duration
		allowed bool
		err     error
	}
	samples := make([][]sample, replicas)
	var mu sync.Mutex
	var reqs sync.WaitGroup
	start := time.Now()
	for i, q := range qs {
		reqs.Go(func() {
			tick := time.NewTicker(every[i])
			defer tick.Stop()
			for n := 0; n < int(traffic/every[i]); n++ {
				<-tick.C
				reqs.Go(func() {
					t0 := time.Now()
					d := q.Admit(tenant, 1)
					s := sample{at: t0.Sub(start), took: time.Since(t0), allowed: d.Allowed, err: d.Err}
					mu.Lock()
					samples[i] = append(samples[i], s)
					mu.Unlock()
				})
			}
		})
	}

	// Stop the node leading the ledger stream, with the lease records'
	// leader there too (moved a second before), so that both elect at
	// once; start it again downFor later.
	for k, at := range stopAt {
		node := first
		if k > 0 {
			time.Sleep(time.Until(start.Add(at - time.Second)))
			node = leaderOf(t, stores[1], "TOLLGATE_LEDGER_0")
			moveLeader(t, stores[1], "KV_tollgate_leases", node)
		}
		time.Sleep(time.Until(start.Add(at)))
		leaders := fmt.Sprintf("ledger %s, lease records %s; replicas connected to %v",
			leaderName(stores[1], "TOLLGATE_LEDGER_0"), leaderName(stores[1], "KV_tollgate_leases"), connectedTo(stores))
		stopped := time.Since(start)
		c.Stop(node)
		time.Sleep(downFor)
		c.Start(node)
		t.Logf("failover %d: node n%d stopped at %v (%s), started again at %v", k+1, node,
			stopped.Round(time.Millisecond), leaders, time.Since(start).Round(time.Millisecond))
	}
	reqs.Wait()
	t.Logf("leaders at the end: ledger %s, lease records %s",
		leaderName(stores[1], "TOLLGATE_LEDGER_0"), leaderName(stores[1], "KV_tollgate_leases"))
	for i := range replicas {
		t.Logf("replica %d: slowest write for other tenants: ledger %v, lease record %v", i,
			time.Duration(slowestAdd[i].Load()).Round(time.Millisecond), time.Duration(slowestPut[i].Load()).Round(time.Millisecond))
	}

	// Where the slow admissions were: the worst of each 100 ms in which
	// one took over 10 ms.
	for i, ss := range samples {
		slots := map[time.Duration][]time.Duration{}
		for _, s := range ss {
			if s.took > 10*time.Millisecond {
				k := s.at.Truncate(100 * time.Millisecond)
				slots[k] = append(slots[k], s.took)
			}
		}
		var keys []time.Duration
		for k := range slots {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, " %v:%d≤%v", k, len(slots[k]), slices.Max(slots[k]).Round(time.Millisecond))
		}
		t.Logf("replica %d: admissions over 10 ms (at: how many ≤ worst):%s", i, b.String())
	}

	var admitted int64
	for i, ss := range samples {
		var took []time.Duration
		var refused, unavailable, slow int
		var worst sample
		for _, s := range ss {
			took = append(took, s.took)
			if s.took > worst.took {
				worst = s
			}
			switch {
			case s.allowed:
				admitted++
			case s.err == limiter.ErrUnavailable:
				unavailable++
			default:
				refused++
			}
			if s.took > failoverMaxWait {
				slow++
			}
		}
		slices.Sort(took)
		q := func(p float64) time.Duration { return took[min(int(p*float64(len(took))), len(took)-1)] }
		w := qs[i].Waits()
		t.Logf("replica %d: %d requests, p50 %v p99 %v p99.9 %v max %v (at %v); %d over %v; %d refused as unavailable, %d otherwise; %d slow-path waits, %v in all; %d ledger operations, %d record writes",
			i, len(ss), q(0.5), q(0.99), q(0.999), worst.took.Round(time.Microsecond), worst.at.Round(time.Millisecond),
			slow, failoverMaxWait, unavailable, refused, w.Count, w.Sum.Round(time.Millisecond), qs[i].LedgerOps(), qs[i].RecordOps())
		if worst.took > failoverMaxWait {
			t.Errorf("replica %d: an admission waited %v (at %v), more than %v, although it held a lease",
				i, worst.took.Round(time.Millisecond), worst.at.Round(time.Millisecond), failoverMaxWait)
		}
		if unavailable+refused > 0 {
			t.Errorf("replica %d: %d requests refused as unavailable and %d otherwise, far from the limit", i, unavailable, refused)
		}
	}

	// Spend the rest of the month on all replicas: exactly the limit.
	var all atomic.Int64
	all.Add(admitted)
	deadline := time.Now().Add(20 * time.Second)
	var drain sync.WaitGroup
	for _, q := range qs {
		drain.Go(func() {
			for all.Load() < limit && time.Now().Before(deadline) {
				if q.Admit(tenant, 1).Allowed {
					all.Add(1)
				} else {
					time.Sleep(5 * time.Millisecond)
				}
			}
		})
	}
	drain.Wait()
	if got := all.Load(); got != limit {
		t.Errorf("admitted %d in all, want the limit %d", got, limit)
	}
	for i, q := range qs {
		if q.Admit(tenant, 1).Allowed {
			all.Add(1)
			t.Errorf("replica %d admitted past the limit", i)
		}
	}
	cancel()
	runs.Wait()
	noise.Wait()
	for i, q := range qs {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := q.Close(cctx); err != nil {
			t.Errorf("replica %d: close: %v", i, err)
		}
		ccancel()
	}
	tctx, tcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer tcancel()
	total, err := stores[0].Ledger.Total(tctx, tenant, limiter.PeriodAt(time.Now(), time.UTC, 0).Key)
	if err != nil {
		t.Fatal(err)
	}
	if total != all.Load() {
		t.Errorf("ledger total %d, admitted %d: every token the ledger counts must be served or returned", total, all.Load())
	}
	t.Logf("admitted %d of %d; ledger total %d", all.Load(), limit, total)
}

// leaderOf returns the index of the node leading stream.
func leaderOf(t *testing.T, s *store.Store, stream string) int {
	t.Helper()
	var node int
	storetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		name := leaderName(s, stream)
		n, err := strconv.Atoi(strings.TrimPrefix(name, "n"))
		if err != nil {
			return fmt.Errorf("stream %s: leader %q", stream, name)
		}
		node = n
		return nil
	})
	return node
}

func leaderName(s *store.Store, stream string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := s.JS.Stream(ctx, stream)
	if err != nil {
		return err.Error()
	}
	if c := st.CachedInfo().Cluster; c != nil {
		return c.Leader
	}
	return ""
}

// moveLeader makes node i the leader of stream, if it is not already.
func moveLeader(t *testing.T, s *store.Store, stream string, i int) {
	t.Helper()
	want := fmt.Sprintf("n%d", i)
	storetest.CheckFor(t, 10*time.Second, 200*time.Millisecond, func() error {
		if leaderName(s, stream) == want {
			return nil
		}
		req, _ := json.Marshal(map[string]any{"placement": map[string]any{"preferred": want}})
		_, err := s.NC.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, req, 2*time.Second)
		if err != nil && err != nats.ErrTimeout {
			return err
		}
		return fmt.Errorf("stream %s: leader %s, want %s", stream, leaderName(s, stream), want)
	})
}

// nodeOf returns the index of the node s is connected to.
func nodeOf(t *testing.T, s *store.Store) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimPrefix(s.NC.ConnectedServerName(), "n"))
	if err != nil {
		t.Fatalf("connected to %q", s.NC.ConnectedServerName())
	}
	return n
}

func connectedTo(stores []*store.Store) []string {
	var out []string
	for _, s := range stores {
		out = append(out, s.NC.ConnectedServerName())
	}
	return out
}

func keepMax(m *atomic.Int64, d time.Duration) {
	for {
		v := m.Load()
		if int64(d) <= v || m.CompareAndSwap(v, int64(d)) {
			return
		}
	}
}
