package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"

	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/admin"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/limiter"
	"github.com/tollgate/tollgate/proxy"
)

// selfService answers a tenant's own requests on the proxy listener: its
// usage, and its limit increase requests (list and file). It shares the
// admin API's logic, scoped to the credential's tenant.
func (a *App) selfService(kind proxy.SelfServiceKind, id access.Principal, method string, query, body []byte) (int, []byte, error) {
	ctx, cancel := a.store.Ctx(context.Background())
	defer cancel()
	var v any
	status := 200
	switch {
	case kind == proxy.SelfUsage && method == "GET":
		u, err := a.quotas.Usage(ctx, id.Tenant)
		if errors.Is(err, limiter.ErrUnavailable) {
			return 0, nil, problems.New(503, problems.CodeStoreUnavailable, "", "the quota ledger is unavailable").Wrap(err)
		} else if err != nil {
			return 0, nil, problems.New(403, problems.CodeForbidden, "", "the credential's tenant does not exist")
		}
		v = u
	case kind == proxy.SelfLimitRequests && method == "GET":
		q, err := url.ParseQuery(string(query))
		if err != nil {
			return 0, nil, problems.New(400, problems.CodeInvalidField, "query", "cannot be parsed")
		}
		l, err := admin.ListLimitRequests(&http.Request{URL: &url.URL{RawQuery: q.Encode()}}, a.adminAPI.LimitRequestsOf(id.Tenant, q.Get("status")))
		if err != nil {
			return 0, nil, err
		}
		v = l
	case kind == proxy.SelfLimitRequests && method == "POST":
		var in admin.LimitRequestInput
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			return 0, nil, problems.Newf(400, problems.CodeInvalidField, "body", "want {\"requested\": N, \"reason\": \"…\"}: %v", err)
		}
		r, err := a.adminAPI.CreateLimitRequest(ctx, id.Tenant, in)
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
