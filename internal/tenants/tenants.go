// Package tenants owns what a tenant is allowed: its monthly limit from
// its record and plan, its limit increase requests and their decisions
// (one order of grant and record, see Service.Decide), and the answers of
// the self-service paths (usage, list and file limit requests). The admin
// API and the proxy's self-service path both call it with typed
// arguments; it knows nothing of HTTP requests.
package tenants

import (
	"context"
	"errors"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/limiter"
)

// Service answers for tenants over the store and its mirrors. It holds no
// state of its own: building one per call is as good as keeping one.
type Service struct {
	Store *store.Store
	// Tenants mirrors the tenants bucket; writes here update it at once
	// rather than waiting for the watcher.
	Tenants *store.TenantMirror
	// Requests mirrors the limit-requests bucket, likewise.
	Requests *store.JSONMirror[store.LimitRequest]
	// Config returns the configuration in force.
	Config func() *config.Config
	// ReadUsage reads a tenant's usage in the current period (the
	// limiter's Usage).
	ReadUsage func(ctx context.Context, tenant string) (limiter.Usage, error)
	// ReadDaily reads a tenant's requests per day (the limiter's Daily).
	ReadDaily func(ctx context.Context, tenant, from, to string) (limiter.DailyUsage, error)
	// Now is the clock of the records' times. If nil, time.Now is used.
	Now func() time.Time
	// Notify, if set, is told of each limit request filed (event
	// "filed") and decided ("decided": by an admin, or at once by
	// auto-approval) once its record is written: the webhooks of
	// internal/notify. It must not wait long.
	Notify func(ctx context.Context, r *store.LimitRequest, event string)
}

func (s *Service) now() time.Time {
	if s.Now == nil {
		return time.Now().UTC()
	}
	return s.Now().UTC()
}

// Limit is the monthly limit of t under c: a granted limit, else the
// plan's requests plus add-on units times their sizes; 0 means unlimited.
func Limit(c *config.Config, t *store.Tenant) int64 {
	if t.Granted > 0 {
		return t.Granted
	}
	l, _ := c.Limit(t.Plan, t.Addons)
	return l
}

// Tenant returns the mirrored record of tenant id, or a 404.
func (s *Service) Tenant(id string) (*store.Tenant, error) {
	t := s.Tenants.Get(id)
	if t == nil {
		return nil, notFound(id)
	}
	return t, nil
}

func notFound(id string) error {
	return problems.Newf(404, problems.CodeNotFound, "id", "no tenant %q", id)
}

// StoreErr is the answer when the store did not answer: the change may or
// may not have been applied.
func StoreErr(err error) error {
	return problems.New(503, problems.CodeStoreUnavailable, "", "the store did not answer; nothing was changed or the change may still apply, retry to be sure").Wrap(err)
}

// Update applies f to the stored tenant id with compare-and-set, retrying
// on a lost race, and returns the new record.
func (s *Service) Update(ctx context.Context, id string, f func(t *store.Tenant) error) (*store.Tenant, error) {
	ctx, cancel := s.Store.WriteCtx(ctx)
	defer cancel()
	return s.update(ctx, id, f)
}

// update is Update under a bounded ctx.
func (s *Service) update(ctx context.Context, id string, f func(t *store.Tenant) error) (*store.Tenant, error) {
	for try := 0; try < 5; try++ {
		var t store.Tenant
		rev, err := store.Get(ctx, s.Store.Tenants, id, &t)
		if errors.Is(err, store.ErrNotFound) {
			return nil, notFound(id)
		}
		if err != nil {
			return nil, StoreErr(err)
		}
		if err := f(&t); err != nil {
			return nil, err
		}
		t.Updated = s.now()
		if _, err := store.Update(ctx, s.Store.Tenants, id, &t, rev); err == nil {
			s.Tenants.Set(id, &t)
			return &t, nil
		} else if ctx.Err() != nil {
			return nil, StoreErr(err)
		}
	}
	return nil, problems.New(409, problems.CodeConflict, "id", "the tenant kept changing; retry")
}

// Usage is a tenant's usage in the current period, for the admin API: an
// unknown tenant is a 404.
func (s *Service) Usage(ctx context.Context, tenant string) (limiter.Usage, error) {
	if _, err := s.Tenant(tenant); err != nil {
		return limiter.Usage{}, err
	}
	u, err := s.usage(ctx, tenant)
	if errors.Is(err, limiter.ErrUnavailable) {
		return u, ledgerDown(err)
	}
	return u, err
}

// OwnUsage is the self-service answer of a credential's tenant about its
// own usage: a tenant that does not exist (deleted while the credential
// was cached) is a 403, the credential's fault.
func (s *Service) OwnUsage(ctx context.Context, tenant string) (limiter.Usage, error) {
	u, err := s.usage(ctx, tenant)
	if errors.Is(err, limiter.ErrUnavailable) {
		return u, ledgerDown(err)
	} else if err != nil {
		return u, problems.New(403, problems.CodeForbidden, "", "the credential's tenant does not exist")
	}
	return u, nil
}

// Daily is a tenant's usage history, one entry per day from from to to
// (YYYY-MM-DD, inclusive; "" for the default range, from the first day of
// the previous period to today).
func (s *Service) Daily(ctx context.Context, tenant, from, to string) (limiter.DailyUsage, error) {
	if _, err := s.Tenant(tenant); err != nil {
		return limiter.DailyUsage{}, err
	}
	ctx, cancel := s.Store.Ctx(ctx)
	defer cancel()
	d, err := s.ReadDaily(ctx, tenant, from, to)
	var re *limiter.RangeError
	switch {
	case errors.As(err, &re):
		return d, problems.New(400, problems.CodeInvalidField, re.Field, re.Reason)
	case errors.Is(err, limiter.ErrUnavailable):
		return d, ledgerDown(err)
	}
	return d, err
}

func (s *Service) usage(ctx context.Context, tenant string) (limiter.Usage, error) {
	ctx, cancel := s.Store.Ctx(ctx)
	defer cancel()
	return s.ReadUsage(ctx, tenant)
}

func ledgerDown(err error) error {
	return problems.New(503, problems.CodeStoreUnavailable, "", "the quota ledger is unavailable").Wrap(err)
}
