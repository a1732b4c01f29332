package admin

import "net/http"

// daily answers GET /v1/tenants/{id}/usage/daily?from=2026-11-01&to=2026-11-30:
// the tenant's requests per day, every day of the range (at most 400),
// dates in the tenant's time zone.
func (a *API) daily(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	d, err := a.tenants.Daily(r.Context(), r.PathValue("id"), q.Get("from"), q.Get("to"))
	if err != nil {
		return err
	}
	writeJSON(w, 200, d)
	return nil
}
