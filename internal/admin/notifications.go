package admin

import (
	"net/http"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/notify"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/internal/tenants"
)

// Notifications lists webhook notifications: a *notify.Notifier.
type Notifications interface {
	List(keep func(*notify.Record) bool) []*notify.Record
}

var notificationOrder = map[string]func(a, b notify.Record) bool{
	"created":      func(a, b notify.Record) bool { return a.Created.Before(b.Created) },
	"tenant":       func(a, b notify.Record) bool { return a.Tenant < b.Tenant },
	"next_attempt": func(a, b notify.Record) bool { return a.NextAttempt.Before(b.NextAttempt) },
	"attempts":     func(a, b notify.Record) bool { return a.Attempts < b.Attempts },
}

// listNotifications answers GET /v1/notifications?status=pending&tenant=acme&kind=usage_threshold:
// the notifications this replica's mirror of the bucket holds (delivered
// ones for store.NotificationRetention), newest first unless the page
// says otherwise.
func (a *API) listNotifications(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	status, tenant, kind := q.Get("status"), q.Get("tenant"), q.Get("kind")
	switch status {
	case "", notify.StatusPending, notify.StatusDelivered:
	default:
		return problems.New(400, problems.CodeInvalidField, "status", "want pending or delivered")
	}
	if tenant != "" && !config.ValidName(tenant) {
		return problems.New(400, problems.CodeInvalidField, "tenant", "tenant ids are 1-64 letters, digits, '_' or '-'")
	}
	switch kind {
	case "", notify.KindUsage, notify.KindRequestFiled, notify.KindRequestDecided:
	default:
		return problems.New(400, problems.CodeInvalidField, "kind", "want usage_threshold, limit_request_filed or limit_request_decided")
	}
	if q.Get("desc") == "" {
		q.Set("desc", "true")
	}
	p, err := tenants.ParsePage(q, "created")
	if err != nil {
		return err
	}
	var recs []*notify.Record
	if a.o.Notifications != nil {
		recs = a.o.Notifications.List(func(n *notify.Record) bool {
			return (status == "" || n.Status == status) && (tenant == "" || n.Tenant == tenant) && (kind == "" || n.Kind == kind)
		})
	}
	items := make([]notify.Record, len(recs))
	for i, n := range recs {
		items[i] = *n
	}
	l, err := tenants.Paginate(items, p, notificationOrder)
	if err != nil {
		return err
	}
	writeJSON(w, 200, l)
	return nil
}
