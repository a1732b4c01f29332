package admin

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/internal/store"
)

// LimitRequestInput is the body of a new limit increase request.
type LimitRequestInput struct {
	Requested *int64  `json:"requested"`
	Reason    *string `json:"reason"`
}

// CreateLimitRequest files a request of tenant for a higher monthly
// limit. Up to the plan's auto_approve_up_to it is granted at once (and
// the tenant's limit set to it); above, it waits for an admin. by names
// who filed it, for the record.
func (a *API) CreateLimitRequest(ctx context.Context, tenant string, in LimitRequestInput) (*store.LimitRequest, error) {
	t := a.o.Tenants.Get(tenant)
	if t == nil {
		return nil, problems.Newf(404, problems.CodeNotFound, "id", "no tenant %q", tenant)
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
	now := a.o.Now().UTC()
	r := &store.LimitRequest{ID: "lr_" + authn.NewID(16), Tenant: tenant, Requested: *in.Requested,
		Status: store.RequestPending, Reason: reason, Created: now}
	c := a.o.Config()
	if limit := c.Plans[t.Plan].AutoApproveUpTo; limit > 0 && r.Requested <= limit {
		r.Status, r.Granted, r.DecidedBy, r.DecidedAt = store.RequestGranted, r.Requested, "auto", &now
	}
	sctx, cancel := a.o.Store.Ctx(ctx)
	defer cancel()
	// Grant first: a record that says granted must not exist for a limit
	// that was never set.
	if r.Status == store.RequestGranted {
		if err := a.setGranted(sctx, tenant, r.Granted); err != nil {
			return nil, err
		}
	}
	if _, err := store.Create(sctx, a.o.Store.LimitRequests, r.ID, r); err != nil {
		return nil, storeErr(err)
	}
	a.o.LimitRequests.Set(r.ID, r)
	return r, nil
}

// setGranted sets the tenant's granted monthly limit.
func (a *API) setGranted(ctx context.Context, tenant string, granted int64) error {
	_, err := a.updateTenant(ctx, tenant, func(t *store.Tenant) error { t.Granted = granted; return nil })
	return err
}

// LimitRequestsOf lists a tenant's requests (all tenants' when tenant is
// empty), optionally only those with status.
func (a *API) LimitRequestsOf(tenant, status string) []store.LimitRequest {
	rs := a.o.LimitRequests.List(func(r *store.LimitRequest) bool {
		return (tenant == "" || r.Tenant == tenant) && (status == "" || r.Status == status)
	})
	out := make([]store.LimitRequest, len(rs))
	for i, r := range rs {
		out[i] = *r
	}
	return out
}

var limitRequestOrder = map[string]func(a, b store.LimitRequest) bool{
	"created":   func(a, b store.LimitRequest) bool { return a.Created.Before(b.Created) },
	"requested": func(a, b store.LimitRequest) bool { return a.Requested < b.Requested },
	"tenant":    func(a, b store.LimitRequest) bool { return a.Tenant < b.Tenant },
	"status":    func(a, b store.LimitRequest) bool { return a.Status < b.Status },
}

// ListLimitRequests answers a paginated list; used by the admin API and
// the self-service path.
func ListLimitRequests(r *http.Request, items []store.LimitRequest) (List[store.LimitRequest], error) {
	return Paginate(r, items, "created", limitRequestOrder)
}

func (a *API) createLimitRequest(w http.ResponseWriter, r *http.Request) error {
	var in LimitRequestInput
	if err := decode(w, r, &in); err != nil {
		return err
	}
	lr, err := a.CreateLimitRequest(r.Context(), r.PathValue("id"), in)
	if err != nil {
		return err
	}
	writeJSON(w, 201, lr)
	return nil
}

func (a *API) listLimitRequests(w http.ResponseWriter, r *http.Request) error {
	tenant := r.PathValue("id")
	if tenant != "" && a.o.Tenants.Get(tenant) == nil {
		return problems.Newf(404, problems.CodeNotFound, "id", "no tenant %q", tenant)
	}
	status := r.URL.Query().Get("status")
	switch status {
	case "", store.RequestPending, store.RequestGranted, store.RequestDenied:
	default:
		return problems.New(400, problems.CodeInvalidField, "status", "want pending, granted or denied")
	}
	l, err := ListLimitRequests(r, a.LimitRequestsOf(tenant, status))
	if err != nil {
		return err
	}
	writeJSON(w, 200, l)
	return nil
}

func (a *API) getLimitRequest(w http.ResponseWriter, r *http.Request) error {
	lr := a.o.LimitRequests.Get(r.PathValue("req"))
	if lr == nil {
		return problems.Newf(404, problems.CodeNotFound, "id", "no limit request %q", r.PathValue("req"))
	}
	writeJSON(w, 200, lr)
	return nil
}

type decisionInput struct {
	Granted *int64 `json:"granted"`
}

// decide approves or denies a pending request with compare-and-set, so
// two admins deciding at once cannot both win.
func (a *API) decide(approve bool) HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var in decisionInput
		if r.ContentLength != 0 {
			if err := decode(w, r, &in); err != nil {
				return err
			}
		}
		id := r.PathValue("req")
		ctx, cancel := a.ctx(r)
		defer cancel()
		var lr store.LimitRequest
		rev, err := store.Get(ctx, a.o.Store.LimitRequests, id, &lr)
		if errors.Is(err, store.ErrNotFound) {
			return problems.Newf(404, problems.CodeNotFound, "id", "no limit request %q", id)
		}
		if err != nil {
			return storeErr(err)
		}
		if lr.Status != store.RequestPending {
			return problems.Newf(409, problems.CodeConflict, "status", "the request is already %s", lr.Status)
		}
		now := a.o.Now().UTC()
		lr.DecidedBy, lr.DecidedAt = "admin", &now
		if approve {
			lr.Status, lr.Granted = store.RequestGranted, lr.Requested
			if in.Granted != nil {
				if *in.Granted <= 0 || *in.Granted > lr.Requested {
					return problems.New(400, problems.CodeInvalidField, "granted", "want a positive number up to what was requested")
				}
				lr.Granted = *in.Granted
			}
		} else {
			if in.Granted != nil {
				return problems.New(400, problems.CodeInvalidField, "granted", "not allowed when denying")
			}
			lr.Status = store.RequestDenied
		}
		if _, err := store.Update(ctx, a.o.Store.LimitRequests, id, &lr, rev); err != nil {
			return problems.New(409, problems.CodeConflict, "id", "the request changed meanwhile; reload it").Wrap(err)
		}
		if approve {
			// The decision is recorded first, so a grant is applied at
			// most for a request that says granted; a failure here is
			// reported and the grant can be set with PATCH granted.
			if err := a.setGranted(ctx, lr.Tenant, lr.Granted); err != nil {
				return err
			}
		}
		a.o.LimitRequests.Set(id, &lr)
		writeJSON(w, 200, &lr)
		return nil
	}
}
