package admin

import (
	"net/http"

	"github.com/tollgate/tollgate/internal/tenants"
)

// The limit-request endpoints decode, call internal/tenants and encode:
// the requests, their decisions and the order of grant and record are
// tenants'.

func (a *API) createLimitRequest(w http.ResponseWriter, r *http.Request) error {
	var in tenants.LimitRequestInput
	if err := decode(w, r, &in); err != nil {
		return err
	}
	lr, err := a.tenants.CreateLimitRequest(r.Context(), r.PathValue("id"), in)
	if err != nil {
		return err
	}
	writeJSON(w, 201, lr)
	return nil
}

func (a *API) listLimitRequests(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	p, err := tenants.ParsePage(q, tenants.DefaultLimitRequestOrder)
	if err != nil {
		return err
	}
	l, err := a.tenants.LimitRequests(r.PathValue("id"), q.Get("status"), p)
	if err != nil {
		return err
	}
	writeJSON(w, 200, l)
	return nil
}

func (a *API) getLimitRequest(w http.ResponseWriter, r *http.Request) error {
	lr, err := a.tenants.LimitRequest(r.PathValue("req"))
	if err != nil {
		return err
	}
	writeJSON(w, 200, lr)
	return nil
}

type decisionInput struct {
	Granted *int64 `json:"granted"`
}

// decide approves or denies a pending request; the body, optional, is
// {"granted": N} on an approval.
func (a *API) decide(approve bool) HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var in decisionInput
		if r.ContentLength != 0 {
			if err := decode(w, r, &in); err != nil {
				return err
			}
		}
		lr, err := a.tenants.Decide(r.Context(), r.PathValue("req"), tenants.Decision{Approve: approve, Granted: in.Granted})
		if err != nil {
			return err
		}
		writeJSON(w, 200, lr)
		return nil
	}
}
