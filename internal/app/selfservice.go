package app

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"

	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/internal/tenants"
	"github.com/tollgate/tollgate/proxy"
)

// selfService answers a tenant's own requests on the proxy listener: its
// usage, and its limit increase requests (list and file), scoped to the
// credential's tenant. It decodes the query and body and calls
// internal/tenants, as the admin API does.
func (a *App) selfService(kind proxy.SelfServiceKind, id access.Principal, method string, query, body []byte) (int, []byte, error) {
	ts := a.tenantService()
	ctx := context.Background()
	var v any
	status := 200
	switch {
	case kind == proxy.SelfOAuthTenants && method == "GET":
		ts := id.Tenants
		if ts == nil {
			ts = []string{id.Tenant}
		}
		items := make([]map[string]string, len(ts))
		for i, t := range ts {
			items[i] = map[string]string{"id": t}
		}
		v = tenants.List[map[string]string]{Total: len(items), Size: len(items), OrderBy: "id", Items: items}
	case kind == proxy.SelfTenants && method == "GET":
		ts := id.Tenants
		if ts == nil {
			ts = []string{id.Tenant}
		}
		v = map[string][]string{"tenants": ts}
	case kind == proxy.SelfUsage && method == "GET":
		u, err := ts.OwnUsage(ctx, id.Tenant)
		if err != nil {
			return 0, nil, err
		}
		v = u
	case kind == proxy.SelfLimitRequests && method == "GET":
		q, err := url.ParseQuery(string(query))
		if err != nil {
			return 0, nil, problems.New(400, problems.CodeInvalidField, "query", "cannot be parsed")
		}
		p, err := tenants.ParsePage(q, tenants.DefaultLimitRequestOrder)
		if err != nil {
			return 0, nil, err
		}
		l, err := ts.OwnLimitRequests(id.Tenant, q.Get("status"), p)
		if err != nil {
			return 0, nil, err
		}
		v = l
	case kind == proxy.SelfLimitRequests && method == "POST":
		var in tenants.LimitRequestInput
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			return 0, nil, problems.Newf(400, problems.CodeInvalidField, "body", "want {\"requested\": N, \"reason\": \"…\"}: %v", err)
		}
		r, err := ts.CreateLimitRequest(ctx, id.Tenant, in)
		if err != nil {
			return 0, nil, err
		}
		v, status = r, 201
	default:
		return 0, nil, problems.New(405, problems.CodeMethodNotAllowed, "", "")
	}
	b, err := json.Marshal(v)
	return status, b, err
}

// tenantService is internal/tenants over the app's store and mirrors, the
// same the admin API is given.
func (a *App) tenantService() *tenants.Service {
	return &tenants.Service{
		Store: a.store, Tenants: a.tenants, Requests: a.requests, Config: a.Config,
		ReadUsage: a.quotas.Usage, Now: a.o.Now, Notify: a.notifier.LimitRequest,
	}
}
