package admin

import (
	"errors"
	"net/http"
	"slices"

	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/tenants"
)

// TenantView is a tenant as the admin API shows it: the record plus the
// limit it adds up to.
type TenantView struct {
	*store.Tenant
	Limit int64 `json:"limit"`
}

func (a *API) view(t *store.Tenant) TenantView {
	return TenantView{Tenant: t, Limit: tenants.Limit(a.o.Config(), t)}
}

type tenantInput struct {
	ID        *string          `json:"id"`
	Plan      *string          `json:"plan"`
	Addons    map[string]int64 `json:"addons"`
	Granted   *int64           `json:"granted"`
	AnchorDay *int             `json:"anchor_day"`
}

func (a *API) checkTenant(in *tenantInput, t *store.Tenant) error {
	c := a.o.Config()
	if in.Plan != nil {
		if _, ok := c.Plans[*in.Plan]; !ok {
			return problems.Newf(400, problems.CodeInvalidField, "plan", "unknown plan %q", *in.Plan)
		}
		t.Plan = *in.Plan
	}
	if in.Addons != nil {
		for name, units := range in.Addons {
			if _, ok := c.Plans[t.Plan].Addons[name]; !ok {
				return problems.Newf(400, problems.CodeInvalidField, "addons."+name, "plan %q has no add-on %q", t.Plan, name)
			}
			if units < 0 {
				return problems.New(400, problems.CodeInvalidField, "addons."+name, "units must not be negative")
			}
		}
		t.Addons = in.Addons
	}
	if in.Granted != nil {
		if *in.Granted < 0 {
			return problems.New(400, problems.CodeInvalidField, "granted", "must not be negative")
		}
		t.Granted = *in.Granted
	}
	if in.AnchorDay != nil {
		if *in.AnchorDay < 0 || *in.AnchorDay > 31 {
			return problems.New(400, problems.CodeInvalidField, "anchor_day", "want 1 to 31 (0 for calendar months)")
		}
		t.AnchorDay = *in.AnchorDay
	}
	return nil
}

func (a *API) createTenant(w http.ResponseWriter, r *http.Request) error {
	var in tenantInput
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if in.ID == nil || !config.ValidName(*in.ID) {
		return problems.New(400, problems.CodeInvalidField, "id", "required: 1-64 letters, digits, '_' or '-'")
	}
	if in.Plan == nil {
		return problems.New(400, problems.CodeInvalidField, "plan", "required")
	}
	now := a.o.Now().UTC()
	t := &store.Tenant{ID: *in.ID, Created: now, Updated: now}
	if err := a.checkTenant(&in, t); err != nil {
		return err
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	if _, err := store.Create(ctx, a.o.Store.Tenants, t.ID, t); err != nil {
		if errors.Is(err, store.ErrExists) {
			return problems.Newf(409, problems.CodeConflict, "id", "tenant %q already exists", t.ID)
		}
		return storeErr(err)
	}
	a.o.Tenants.Set(t.ID, t)
	writeJSON(w, 201, a.view(t))
	return nil
}

func (a *API) tenant(r *http.Request) (*store.Tenant, error) {
	return a.tenants.Tenant(r.PathValue("id"))
}

func (a *API) getTenant(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenant(r)
	if err != nil {
		return err
	}
	writeJSON(w, 200, a.view(t))
	return nil
}

var tenantOrder = map[string]func(a, b TenantView) bool{
	"id":      func(a, b TenantView) bool { return a.ID < b.ID },
	"plan":    func(a, b TenantView) bool { return a.Plan < b.Plan },
	"created": func(a, b TenantView) bool { return a.Created.Before(b.Created) },
	"limit":   func(a, b TenantView) bool { return a.Limit < b.Limit },
}

func (a *API) listTenants(w http.ResponseWriter, r *http.Request) error {
	ts := a.o.Tenants.List(nil)
	views := make([]TenantView, len(ts))
	for i, t := range ts {
		views[i] = a.view(t)
	}
	l, err := Paginate(r, views, "id", tenantOrder)
	if err != nil {
		return err
	}
	writeJSON(w, 200, l)
	return nil
}

func (a *API) patchTenant(w http.ResponseWriter, r *http.Request) error {
	var in tenantInput
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if in.ID != nil {
		return problems.New(400, problems.CodeInvalidField, "id", "cannot be changed")
	}
	t, err := a.tenants.Update(r.Context(), r.PathValue("id"), func(t *store.Tenant) error { return a.checkTenant(&in, t) })
	if err != nil {
		return err
	}
	writeJSON(w, 200, a.view(t))
	return nil
}

func (a *API) deleteTenant(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenant(r)
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	// Credentials first, so none outlives its tenant: its keys and
	// clients, its users of no other tenant; users of several lose it.
	for kind, set := range map[string]*authn.Set{store.KindAPIKey: a.o.Credentials, store.KindClient: a.o.Clients, store.KindUser: a.o.Users} {
		for _, c := range a.credsOf(set, t.ID) {
			if kind == store.KindUser && len(c.Tenants) > 1 {
				if err := a.dropTenant(r, c.ID, t.ID); err != nil {
					return err
				}
				continue
			}
			if err := store.Delete(ctx, a.o.Store.Keys, store.CredentialKey(kind, c.ID)); err != nil && !errors.Is(err, store.ErrNotFound) {
				return storeErr(err)
			}
			set.Delete(c.ID)
		}
	}
	if _, err := a.RevokeTokens(r, func(c *authn.Credential) bool {
		return c.Tenant == t.ID || slices.Contains(c.Tenants(), t.ID)
	}); err != nil {
		return err
	}
	if err := store.Delete(ctx, a.o.Store.Tenants, t.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return storeErr(err)
	}
	a.o.Tenants.Set(t.ID, nil)
	w.WriteHeader(204)
	return nil
}

// dropTenant removes tenant from the tenants of user.
func (a *API) dropTenant(r *http.Request, user, tenant string) error {
	for try := 0; try < 5; try++ {
		k, rev, err := a.record(r, store.KindUser, user, "", problems.New(404, problems.CodeNotFound, "", ""))
		if err != nil {
			return nil // gone meanwhile
		}
		k.Tenants = slices.DeleteFunc(k.Tenants, func(t string) bool { return t == tenant })
		if len(k.Tenants) == 1 {
			k.Tenant, k.Tenants = k.Tenants[0], nil
		}
		if _, err := a.update(r, store.KindUser, k, rev); err == nil {
			return nil
		} else if pe := problems.From(err); pe.Status != 409 {
			return err
		}
	}
	return problems.New(409, problems.CodeConflict, "", "a user of the tenant kept changing; retry")
}

func (a *API) usage(w http.ResponseWriter, r *http.Request) error {
	u, err := a.tenants.Usage(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, 200, u)
	return nil
}
