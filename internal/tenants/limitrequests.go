package tenants

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/internal/store"
)

// LimitRequestInput is the body of a new limit increase request.
type LimitRequestInput struct {
	Requested *int64  `json:"requested"`
	Reason    *string `json:"reason"`
}

// Decision is an admin's answer to a pending limit request.
type Decision struct {
	// Approve grants the request; false denies it.
	Approve bool
	// Granted, when set on an approval, grants less than was requested
	// (a positive number up to it). It must be nil on a denial.
	Granted *int64
}

// CreateLimitRequest files a request of tenant for a higher monthly
// limit. Up to the plan's auto_approve_up_to it is granted at once (and
// the tenant's limit set to it, see settle); above, it waits for Decide.
func (s *Service) CreateLimitRequest(ctx context.Context, tenant string, in LimitRequestInput) (*store.LimitRequest, error) {
	t, err := s.Tenant(tenant)
	if err != nil {
		return nil, err
	}
	if in.Requested == nil || *in.Requested <= 0 {
		return nil, problems.New(400, problems.CodeInvalidField, "requested", "required: the monthly limit wanted, a positive number")
	}
	reason := ""
	if in.Reason != nil {
		reason = strings.TrimSpace(*in.Reason)
		if len(reason) > 1000 {
			return nil, problems.New(400, problems.CodeInvalidField, "reason", "at most 1000 characters")
		}
	}
	now := s.now()
	r := &store.LimitRequest{ID: "lr_" + authn.NewID(16), Tenant: tenant, Requested: *in.Requested,
		Status: store.RequestPending, Reason: reason, Created: now}
	if limit := s.Config().Plans[t.Plan].AutoApproveUpTo; limit > 0 && r.Requested <= limit {
		r.Status, r.Granted, r.DecidedBy, r.DecidedAt = store.RequestGranted, r.Requested, "auto", &now
	}
	ctx, cancel := s.Store.WriteCtx(ctx)
	defer cancel()
	err = s.settle(ctx, r, func(ctx context.Context) error {
		if _, err := store.Create(ctx, s.Store.LimitRequests, r.ID, r); err != nil {
			return StoreErr(err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if s.Notify != nil {
		s.Notify(ctx, r, "filed")
		if r.Status != store.RequestPending {
			s.Notify(ctx, r, "decided")
		}
	}
	return r, nil
}

// claimSkew is how long past a claim's deadline other deciders wait
// before they take it over: room for replicas' clocks that differ a
// little.
const claimSkew = 2 * time.Second

// Decide approves or denies the pending request id. Every write of the
// request is a compare-and-set at the revision just read, so of admins
// deciding at once exactly one wins; the others get a 409.
//
// An approval first claims the request: it stays pending, with the value
// to grant and, as its decided_at, the deadline of this call (claims are
// internal; lists and gets show a claimed request as plainly pending).
// Only the claimant grants, so a losing decision never sets a limit.
// Then settle grants and records. A claimant that crashed before the
// record leaves its claim; once the claim's deadline (plus claimSkew) is
// past, approving again takes it over and finishes: the grant sets the
// limit, it does not add, so the limit is set once in effect. Denying
// such a request is refused, because its limit may already be set:
// approve it, then set the limit with PATCH if need be.
func (s *Service) Decide(ctx context.Context, id string, d Decision) (*store.LimitRequest, error) {
	ctx, cancel := s.Store.WriteCtx(ctx)
	defer cancel()
	var lr store.LimitRequest
	rev, err := store.Get(ctx, s.Store.LimitRequests, id, &lr)
	if errors.Is(err, store.ErrNotFound) {
		return nil, problems.Newf(404, problems.CodeNotFound, "id", "no limit request %q", id)
	}
	if err != nil {
		return nil, StoreErr(err)
	}
	if lr.Status != store.RequestPending {
		return nil, problems.Newf(409, problems.CodeConflict, "status", "the request is already %s", lr.Status)
	}
	granted := lr.Requested
	if d.Approve {
		if d.Granted != nil {
			if *d.Granted <= 0 || *d.Granted > lr.Requested {
				return nil, problems.New(400, problems.CodeInvalidField, "granted", "want a positive number up to what was requested")
			}
			granted = *d.Granted
		}
	} else if d.Granted != nil {
		return nil, problems.New(400, problems.CodeInvalidField, "granted", "not allowed when denying")
	}
	// Claims are timed by the real clock, as the contexts they outlive
	// are, not by s.Now.
	if lr.DecidedAt != nil {
		if time.Now().Before(lr.DecidedAt.Add(claimSkew)) {
			return nil, problems.New(409, problems.CodeConflict, "status", "the request is being approved; retry in a few seconds")
		}
		if !d.Approve {
			return nil, problems.New(409, problems.CodeConflict, "status", "an approval of the request was interrupted and the limit may be set already: approve it to finish, then change the tenant's granted limit if need be")
		}
	}
	write := func(ctx context.Context) error {
		n, err := store.Update(ctx, s.Store.LimitRequests, id, &lr, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return problems.New(409, problems.CodeConflict, "id", "the request changed meanwhile; reload it").Wrap(err)
		}
		if err != nil {
			return StoreErr(err)
		}
		rev = n
		return nil
	}
	if d.Approve {
		deadline, _ := ctx.Deadline()
		lr.Granted, lr.DecidedBy, lr.DecidedAt = granted, "admin", &deadline
		if err := write(ctx); err != nil {
			return nil, err
		}
		lr.Status = store.RequestGranted
	} else {
		lr.Status = store.RequestDenied
	}
	now := s.now()
	lr.DecidedBy, lr.DecidedAt = "admin", &now
	if err := s.settle(ctx, &lr, write); err != nil {
		return nil, err
	}
	if s.Notify != nil {
		s.Notify(ctx, &lr, "decided")
	}
	return &lr, nil
}

// settle makes r's decision take effect: the one place where a grant and
// its record are written, for auto-approval and admin decisions alike.
//
// The grant comes first, the record second. A record that says granted is
// thus only written once the tenant's limit is set, and a crash (or a
// store that stops answering) between the two leaves the request pending,
// or not filed at all: never shown as granted with a limit that was not
// applied. The other order fails exactly that way, and its retry would
// meet a 409 "already granted". A grant sets the limit to a value and adds
// nothing, so applying it again when the decision is retried (approving
// the still-pending request, filing again) sets the same limit: it is
// not applied twice in effect. Concurrent decisions cannot interleave
// here: see Decide's claim.
func (s *Service) settle(ctx context.Context, r *store.LimitRequest, write func(ctx context.Context) error) error {
	if r.Status == store.RequestGranted {
		if _, err := s.update(ctx, r.Tenant, func(t *store.Tenant) error { t.Granted = r.Granted; return nil }); err != nil {
			return err
		}
	}
	if err := write(ctx); err != nil {
		return err
	}
	s.Requests.Set(r.ID, r)
	return nil
}

// LimitRequest returns the request id as the API shows it, or a 404.
func (s *Service) LimitRequest(id string) (*store.LimitRequest, error) {
	r := s.Requests.Get(id)
	if r == nil {
		return nil, problems.Newf(404, problems.CodeNotFound, "id", "no limit request %q", id)
	}
	v := view(*r)
	return &v, nil
}

// view is r as the API shows it: a pending request's claim (see Decide)
// is internal.
func view(r store.LimitRequest) store.LimitRequest {
	if r.Status == store.RequestPending {
		r.Granted, r.DecidedBy, r.DecidedAt = 0, "", nil
	}
	return r
}

var limitRequestOrder = map[string]func(a, b store.LimitRequest) bool{
	"created":   func(a, b store.LimitRequest) bool { return a.Created.Before(b.Created) },
	"requested": func(a, b store.LimitRequest) bool { return a.Requested < b.Requested },
	"tenant":    func(a, b store.LimitRequest) bool { return a.Tenant < b.Tenant },
	"status":    func(a, b store.LimitRequest) bool { return a.Status < b.Status },
}

// DefaultLimitRequestOrder is the order of limit request lists when the
// page names none.
const DefaultLimitRequestOrder = "created"

// LimitRequests lists the requests of tenant (of every tenant when tenant
// is empty) with status (any when empty), for the admin API: an unknown
// tenant is a 404 and an unknown status a 400.
func (s *Service) LimitRequests(tenant, status string, p Page) (List[store.LimitRequest], error) {
	if tenant != "" {
		if _, err := s.Tenant(tenant); err != nil {
			return List[store.LimitRequest]{}, err
		}
	}
	switch status {
	case "", store.RequestPending, store.RequestGranted, store.RequestDenied:
	default:
		return List[store.LimitRequest]{}, problems.New(400, problems.CodeInvalidField, "status", "want pending, granted or denied")
	}
	return s.list(tenant, status, p)
}

// OwnLimitRequests is the self-service answer of a credential's tenant
// about its own requests. A status that is none of the statuses matches
// nothing. A credential that acts for no single tenant (tenant empty) is
// refused, so that it cannot list every tenant's requests.
func (s *Service) OwnLimitRequests(tenant, status string, p Page) (List[store.LimitRequest], error) {
	if tenant == "" {
		return List[store.LimitRequest]{}, problems.New(403, problems.CodeForbidden, "", "the credential acts for no single tenant")
	}
	return s.list(tenant, status, p)
}

func (s *Service) list(tenant, status string, p Page) (List[store.LimitRequest], error) {
	rs := s.Requests.List(func(r *store.LimitRequest) bool {
		return (tenant == "" || r.Tenant == tenant) && (status == "" || r.Status == status)
	})
	items := make([]store.LimitRequest, len(rs))
	for i, r := range rs {
		items[i] = view(*r)
	}
	return Paginate(items, p, limitRequestOrder)
}
