package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/tollgate/tollgate/limiter"
	"github.com/tollgate/tollgate/limiter/ledgertest"
)

// strandBound is what a crash may strand of a tenant's month (issue 18):
// 1% of its limit, or 10 tokens if that is more.
func strandBound(limit int64) int64 { return max(limit/100, 10) }

var errCrashed = errors.New("crashed")

// crashable wraps a replica's ledger and lease book so that, from the
// moment crashed is set, none of its writes reaches NATS any more, as if
// the process had died there: a write already applied stays applied, the
// next one is never sent.
type crashable struct {
	crashed atomic.Bool
	// afterReserve, when set, is called after each reservation the ledger
	// applied (before the replica writes the record that covers it).
	afterReserve func()
	// net is what the replica added to the ledger, all in all.
	net atomic.Int64
}

func (c *crashable) ledger(l limiter.Ledger) limiter.Ledger {
	f := ledgertest.Wrap(l)
	f.AddFunc = func(ctx context.Context, tenant, period string, delta int64, id string) (int64, bool, error) {
		if c.crashed.Load() {
			return 0, false, errCrashed
		}
		total, dup, err := l.Add(ctx, tenant, period, delta, id)
		if err == nil && !dup {
			c.net.Add(delta)
			if delta > 0 && c.afterReserve != nil {
				c.afterReserve()
			}
		}
		return total, dup, err
	}
	return f
}

func (c *crashable) book(b limiter.LeaseBook) limiter.LeaseBook {
	f := ledgertest.WrapBook(b)
	f.PutFunc = func(ctx context.Context, tenant, period, replica string, r limiter.LeaseRecord, rev uint64) (uint64, bool, error) {
		if c.crashed.Load() {
			return 0, false, errCrashed
		}
		return b.Put(ctx, tenant, period, replica, r, rev)
	}
	f.DeleteFunc = func(ctx context.Context, tenant, period, replica string, rev uint64) error {
		if c.crashed.Load() {
			return errCrashed
		}
		return b.Delete(ctx, tenant, period, replica, rev)
	}
	f.SweepFunc = func(ctx context.Context, e limiter.ExpiredLease) (bool, error) {
		if c.crashed.Load() {
			return false, errCrashed
		}
		return b.Sweep(ctx, e)
	}
	return f
}

// strandReplica runs one replica with lease records and the defaults of
// tollgate's config (max_lease 10,000), a lease_ttl of ttl.
type strandReplica struct {
	q        *limiter.Quotas
	cancel   context.CancelFunc
	done     chan struct{}
	admitted atomic.Int64
}

func startStrandReplica(t *testing.T, s *store.Store, name string, l *limits, ttl time.Duration, c *crashable) *strandReplica {
	t.Helper()
	conn := storetest.Connect(t, s)
	o := limiter.QuotaOptions{Ledger: s.Ledger, Leases: conn.Leases(), Limits: l.get, MaxLease: 10_000, ReplicaID: name,
		LeaseIdle: 2 * time.Second, LeaseTTL: ttl}
	if c != nil {
		o.Ledger, o.Leases = c.ledger(s.Ledger), c.book(conn.Leases())
	}
	r := &strandReplica{q: limiter.NewQuotas(o), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { _ = r.q.Run(ctx); close(r.done) }()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

// stop ends the replica's background work (a crash, when it is not
// followed by Close).
func (r *strandReplica) stop() { r.cancel(); <-r.done }

// TestCrashStrandsAtMostOnePercent: three replicas of a tenant's plan
// under load; one dies (its ledger and record writes stop where they are,
// its loops stop, nothing is returned by Close), the others go on, sweep
// its lease records once they expire and are then closed. The ledger then
// holds what was admitted plus what the crash stranded, and that is at
// most 1% of the limit, or 10 tokens (issue 18), for a 1,000, a 10,000 and
// a 1,000,000 plan: with the crash at a random point of the load, and at
// the worst one, just after a reservation was applied in the ledger and
// before the record write that covers it.
func TestCrashStrandsAtMostOnePercent(t *testing.T) {
	s := storetest.Open(t)
	const ttl = time.Second
	for _, limit := range []int64{1_000, 10_000, 1_000_000} {
		for _, afterReserve := range []bool{false, true} {
			name := fmt.Sprintf("limit %d, crash mid-load", limit)
			if afterReserve {
				name = fmt.Sprintf("limit %d, crash between a reservation and its record", limit)
			}
			t.Run(name, func(t *testing.T) {
				tenant := fmt.Sprintf("t%d-%v", limit, afterReserve)
				l := &limits{m: map[string]limiter.Limit{tenant: {Monthly: limit}}}
				crash := &crashable{}
				victim := startStrandReplica(t, s, "victim-"+tenant, l, ttl, crash)
				others := []*strandReplica{
					startStrandReplica(t, s, "a-"+tenant, l, ttl, nil),
					startStrandReplica(t, s, "b-"+tenant, l, ttl, nil),
				}
				// Load: the victim admits a share of the plan's first
				// tenth (or 3,000 requests of the big plan) and dies;
				// the others go on to about 70% of a small plan.
				warm := min(limit/10, 3000)
				stopAt := min(limit*7/10, 12_000)
				if afterReserve {
					crash.afterReserve = func() {
						if victim.admitted.Load() >= warm {
							crash.crashed.Store(true)
						}
					}
				}
				var total atomic.Int64
				var wg sync.WaitGroup
				for i, r := range append([]*strandReplica{victim}, others...) {
					for w := 0; w < 4; w++ {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for k := 0; k < 100_000 && total.Load() < stopAt; k++ {
								if i == 0 && (crash.crashed.Load() || !afterReserve && (r.admitted.Load() >= warm+warm/3 || total.Load() >= stopAt/2)) {
									crash.crashed.Store(true)
									return
								}
								if r.q.Admit(tenant, 1).Allowed {
									r.admitted.Add(1)
									total.Add(1)
								}
							}
						}()
					}
				}
				wg.Wait()
				if !crash.crashed.Load() {
					t.Fatal("the victim never crashed: the test proves nothing")
				}
				victim.stop()
				held := crash.net.Load() - victim.admitted.Load()

				// The survivors sweep the victim's records once they expire.
				ctx := context.Background()
				var swept int64
				storetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
					recs, err := s.Leases().Expired(ctx, time.Now().Add(time.Hour))
					if err != nil {
						return err
					}
					for _, e := range recs {
						if e.Replica == "victim-"+tenant {
							swept = e.Record.Reserved - e.Record.SpentMax
							return fmt.Errorf("victim's record %+v not swept yet", e.Record)
						}
					}
					for _, r := range others {
						if p := r.q.Pending(); p > 0 {
							return fmt.Errorf("%d returns not sent yet", p)
						}
					}
					return nil
				})
				admitted := int64(0)
				for _, r := range append([]*strandReplica{victim}, others...) {
					admitted += r.admitted.Load()
				}
				u, err := others[0].q.Usage(ctx, tenant)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range others {
					cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					if err := r.q.Close(cctx); err != nil {
						t.Errorf("close: %v", err)
					}
					cancel()
				}
				ledger, err := s.Ledger.Total(ctx, tenant, u.Period)
				if err != nil {
					t.Fatal(err)
				}
				stranded := ledger - admitted
				t.Logf("limit %d: victim admitted %d and held %d unspent at the crash, its record returned %d; "+
					"%d admitted in all, ledger %d: %d stranded (bound %d)",
					limit, victim.admitted.Load(), held, swept, admitted, ledger, stranded, strandBound(limit))
				if stranded < 0 {
					t.Errorf("ledger %d below the %d admitted: over-admission", ledger, admitted)
				}
				if stranded > strandBound(limit) {
					t.Errorf("a crash stranded %d tokens of a plan of %d, want at most %d", stranded, limit, strandBound(limit))
				}
			})
		}
	}
}

// TestWritesPerThousandRequests measures, for three replicas with lease
// records, the ledger operations and lease record writes per 1,000
// requests of a tenant at a steady rate (about 3,000 requests/s in all),
// far from its limit (1,000,000) and, for comparison, of a 100,000 plan,
// whose leases the stranding bound halves.
func TestWritesPerThousandRequests(t *testing.T) {
	if testing.Short() {
		t.Skip("steady load for seconds")
	}
	s := storetest.Open(t)
	for _, limit := range []int64{100_000, 1_000_000} {
		tenant := fmt.Sprintf("steady%d", limit)
		l := &limits{m: map[string]limiter.Limit{tenant: {Monthly: limit}}}
		var reps []*strandReplica
		for i := 0; i < 3; i++ {
			reps = append(reps, startStrandReplica(t, s, fmt.Sprintf("r%d-%s", i, tenant), l, 3*time.Second, nil))
		}
		const perReplica, seconds = 1000, 4 // requests/s, duration
		var wg sync.WaitGroup
		for _, r := range reps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tick := time.NewTicker(10 * time.Millisecond)
				defer tick.Stop()
				for k := 0; k < seconds*100; k++ {
					<-tick.C
					for j := 0; j < perReplica/100; j++ {
						if r.q.Admit(tenant, 1).Allowed {
							r.admitted.Add(1)
						}
					}
				}
			}()
		}
		wg.Wait()
		var n, ops, recs int64
		for _, r := range reps {
			n += r.admitted.Load()
			ops += r.q.LedgerOps()
			recs += r.q.RecordOps()
		}
		t.Logf("limit %d, 3 replicas at %d requests/s each for %ds: %d admitted; per 1,000 requests %.2f ledger operations, %.2f record writes",
			limit, perReplica, seconds, n, float64(ops)*1000/float64(n), float64(recs)*1000/float64(n))
		if limit == 1_000_000 && (float64(ops)*1000/float64(n) > 10 || float64(recs)*1000/float64(n) > 20) {
			t.Errorf("limit %d: %d ledger operations and %d record writes for %d requests", limit, ops, recs, n)
		}
	}
}
