package limiter_test

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/tollgate/tollgate/limiter"
)

// TestLedgerOutagePolicies stops the NATS server in the middle of a
// tenant's traffic and starts it again, for each policy, and checks the
// promises: closed refuses at once, lease serves only what was already
// reserved, open adds at most its allowance; and once NATS is back the
// ledger holds exactly what was admitted, nothing twice.
func TestLedgerOutagePolicies(t *testing.T) {
	for _, tc := range []struct {
		name      string
		policy    limiter.Policy
		allowance int64
	}{
		{"closed", limiter.PolicyClosed, 0},
		{"lease", limiter.PolicyLease, 0},
		{"open", limiter.PolicyOpen, 25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := storetest.StartServer(t)
			s := storetest.ConnectURL(t, srv.URL())
			const limit = 1000
			l := &limits{m: map[string]limiter.Limit{"acme": {Monthly: limit, Policy: tc.policy, OpenAllowance: tc.allowance}}}
			q := limiter.NewQuotas(limiter.QuotaOptions{
				Ledger: s.Ledger, Limits: l.get, MaxLease: 20, ReplicaID: "r-" + tc.name,
				LeaseIdle: time.Hour, Available: s.Connected, Timeout: 500 * time.Millisecond,
			})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = q.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()

			admitted := 0
			for i := 0; i < 100; i++ {
				if q.Admit("acme", 1).Allowed {
					admitted++
				}
			}
			if admitted != 100 {
				t.Fatalf("before the outage: %d of 100 admitted", admitted)
			}
			srv.Stop()
			storetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
				if s.Connected() {
					return errString("still connected")
				}
				return nil
			})
			during, unavailable := 0, 0
			for i := 0; i < 200; i++ {
				d := q.Admit("acme", 1)
				if d.Allowed {
					during++
				} else if d.Err == limiter.ErrUnavailable {
					unavailable++
				}
			}
			admitted += during
			switch tc.policy {
			case limiter.PolicyClosed:
				if during != 0 {
					t.Errorf("closed admitted %d during the outage, want 0", during)
				}
			case limiter.PolicyLease:
				// At most what was reserved: two leases of 20 (one
				// may have been refilled in the background).
				if during > 40 {
					t.Errorf("lease admitted %d during the outage, more than it had reserved", during)
				}
			case limiter.PolicyOpen:
				if during > 40+int(tc.allowance) || during < int(tc.allowance) {
					t.Errorf("open admitted %d during the outage, want allowance %d plus at most the lease", during, tc.allowance)
				}
			}
			if unavailable+during != 200 {
				t.Errorf("%d admitted and %d refused as unavailable of 200", during, unavailable)
			}

			srv.Start()
			storetest.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
				if !s.Connected() {
					return errString("not reconnected")
				}
				return nil
			})
			// Traffic resumes, then the replica stops and returns its lease.
			storetest.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
				if !q.Admit("acme", 1).Allowed {
					return errString("not admitting after the outage")
				}
				admitted++
				return nil
			})
			cctx, ccancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer ccancel()
			if err := q.Close(cctx); err != nil {
				t.Fatal(err)
			}
			period := limiter.PeriodAt(time.Now(), time.UTC, 0).Key
			total, err := s.Ledger.Total(context.Background(), "acme", period)
			if err != nil {
				t.Fatal(err)
			}
			if total != int64(admitted) {
				t.Errorf("ledger total %d, admitted %d: every admission counted once", total, admitted)
			}
			t.Logf("%s: %d admitted during the outage (%d refused); ledger %d = admitted %d", tc.name, during, unavailable, total, admitted)
		})
	}
}

type errString string

func (e errString) Error() string { return string(e) }
