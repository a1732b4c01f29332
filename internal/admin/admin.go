// Package admin owns the admin listener: the JSON admin API over tenants,
// keys and usage, protected by the admin token; health, readiness and
// Prometheus metrics; all errors in the problems shape.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/tenants"
	"github.com/tollgate/tollgate/limiter"
	"go.uber.org/zap"
)

// Options wire the admin API to the rest of tollgate.
type Options struct {
	Store   *store.Store
	Tenants *store.TenantMirror
	// LimitRequests mirrors the limit-requests bucket.
	LimitRequests *store.JSONMirror[store.LimitRequest]
	// Credentials, Users and Clients are this replica's credential sets
	// (API keys, users, OAuth clients): lists read them, and writes are
	// applied to them at once.
	Credentials *authn.Set
	Users       *authn.Set
	Clients     *authn.Set
	// Tokens is this replica's set of access tokens issued by the token
	// endpoint.
	Tokens *authn.Set
	// Hasher hashes users' passwords.
	Hasher *authn.Hasher
	// Usage reads a tenant's usage in the current period.
	Usage func(ctx context.Context, tenant string) (limiter.Usage, error)
	// Daily reads a tenant's requests per day.
	Daily func(ctx context.Context, tenant, from, to string) (limiter.DailyUsage, error)
	// Config returns the configuration in force.
	Config func() *config.Config
	// TokenDigest is SHA-256 of the admin token.
	TokenDigest [32]byte
	// Ready reports readiness for /readyz.
	Ready func() bool
	// Gatherer serves /metrics. Default prometheus.DefaultGatherer.
	Gatherer prometheus.Gatherer
	// Now is the clock. Default time.Now.
	Now func() time.Time
	Log *zap.Logger
	// Pprof serves net/http/pprof under /debug/pprof/, behind the token.
	Pprof bool
	// Notifications, if set, serves GET /v1/notifications
	// (notifications.go); NotifyLimitRequest is told of limit requests
	// filed and decided (tenants.Service.Notify).
	Notifications      Notifications
	NotifyLimitRequest func(ctx context.Context, r *store.LimitRequest, event string)
	// Reload, if set, serves POST /v1/reload: it reloads the configuration
	// and returns nil, or why not. An error that is (or wraps) a
	// ReloadRefusal is answered 422 with each of its problems; any other
	// is a 500. If nil, POST /v1/reload is not served (404).
	Reload func() error
}

// ReloadRefusal is an error of Options.Reload that refuses a new
// configuration, naming each of its problems; the old configuration
// keeps serving.
type ReloadRefusal interface {
	error
	ReloadProblems() []string
}

// API is the admin HTTP handler.
type API struct {
	o       Options
	mux     *http.ServeMux
	tenants *tenants.Service
	last    lastReload // the last reload's outcome, for GET /v1/config (config.go)
}

// New returns the admin handler.
func New(o Options) *API {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Gatherer == nil {
		o.Gatherer = prometheus.DefaultGatherer
	}
	a := &API{o: o, mux: http.NewServeMux(), tenants: &tenants.Service{
		Store: o.Store, Tenants: o.Tenants, Requests: o.LimitRequests, Config: o.Config,
		ReadUsage: o.Usage, ReadDaily: o.Daily, Now: o.Now, Notify: o.NotifyLimitRequest,
	}}
	m := a.mux
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"ok": true})
	})
	m.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if o.Ready != nil && !o.Ready() {
			a.fail(w, r, problems.New(503, problems.CodeUnavailable, "", "starting or draining"))
			return
		}
		writeJSON(w, 200, map[string]any{"ok": true})
	})
	m.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	a.handle("POST /v1/tenants", a.createTenant)
	a.handle("GET /v1/tenants", a.listTenants)
	a.handle("GET /v1/tenants/{id}", a.getTenant)
	a.handle("PATCH /v1/tenants/{id}", a.patchTenant)
	a.handle("DELETE /v1/tenants/{id}", a.deleteTenant)
	a.handle("POST /v1/tenants/{id}/keys", a.createKey)
	a.handle("GET /v1/tenants/{id}/keys", a.listKeys)
	a.handle("GET /v1/tenants/{id}/keys/{key}", a.getKey)
	a.handle("DELETE /v1/tenants/{id}/keys/{key}", a.deleteKey)
	a.handle("POST /v1/tenants/{id}/clients", a.createClient)
	a.handle("GET /v1/tenants/{id}/clients", a.listClients)
	a.handle("GET /v1/tenants/{id}/clients/{client}", a.getClient)
	a.handle("DELETE /v1/tenants/{id}/clients/{client}", a.deleteClient)
	a.handle("POST /v1/tenants/{id}/clients/{client}/regenerate", a.regenerateClient)
	a.handle("POST /v1/users", a.createUser)
	a.handle("GET /v1/users", a.listUsers)
	a.handle("GET /v1/users/{username}", a.getUser)
	a.handle("PATCH /v1/users/{username}", a.patchUser)
	a.handle("DELETE /v1/users/{username}", a.deleteUser)
	a.handle("POST /v1/users/{username}/password", a.setPassword)
	a.handle("POST /v1/tenants/{id}/keys/{key}/regenerate", a.regenerateKey)
	a.handle("GET /v1/tokens", a.listTokens)
	a.handle("GET /v1/tokens/{token}", a.getToken)
	a.handle("DELETE /v1/tokens/{token}", a.deleteToken)
	a.handle("POST /v1/tokens/revoke", a.revokeTokens)
	a.handle("GET /v1/tenants/{id}/usage", a.usage)
	a.handle("GET /v1/tenants/{id}/usage/daily", a.daily)
	a.handle("POST /v1/tenants/{id}/limit-requests", a.createLimitRequest)
	a.handle("GET /v1/tenants/{id}/limit-requests", a.listLimitRequests)
	a.handle("GET /v1/limit-requests", a.listLimitRequests)
	a.handle("GET /v1/limit-requests/{req}", a.getLimitRequest)
	a.handle("POST /v1/limit-requests/{req}/approve", a.decide(true))
	a.handle("POST /v1/limit-requests/{req}/deny", a.decide(false))
	a.handle("GET /v1/config", a.configView)
	a.handle("GET /v1/notifications", a.listNotifications)
	a.serveUI()
	if o.Reload != nil {
		a.handle("POST /v1/reload", a.reload)
	}
	if o.Pprof {
		a.servePprof()
	}
	return a
}

// HandlerFunc is an admin handler: it returns an error and Handle renders
// it. Exactly one place turns errors into problems bodies.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// handle registers an authenticated admin route.
func (a *API) handle(pattern string, h HandlerFunc) {
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if !a.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tollgate-admin"`)
			a.fail(w, r, problems.New(401, problems.CodeUnauthorized, "Authorization", ""))
			return
		}
		if err := h(w, r); err != nil {
			a.fail(w, r, err)
		}
	})
}

func (a *API) authorized(r *http.Request) bool {
	v := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(v, "Bearer ")
	if !ok {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(sum[:], a.o.TokenDigest[:]) == 1
}

// ServeHTTP implements http.Handler; unknown paths and methods answer in
// the problems shape too.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, pattern := a.mux.Handler(r)
	if pattern == "" {
		// Distinguish 405 from 404 the way ServeMux does, but in our shape.
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if rec.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", rec.header.Get("Allow"))
			a.fail(w, r, problems.New(405, problems.CodeMethodNotAllowed, "", ""))
			return
		}
		a.fail(w, r, problems.New(404, problems.CodeNotFound, "", "no such admin endpoint"))
		return
	}
	a.mux.ServeHTTP(w, r)
}

type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(code int)        { s.status = code }

func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	pe := problems.From(err)
	if pe.Status >= 500 {
		a.o.Log.Error("admin request failed", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(pe.Status)
	_, _ = w.Write(pe.Bytes())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// maxBody is the largest JSON request body the admin API reads.
const maxBody = 1 << 20

// decode reads a JSON body strictly into v: one JSON value of at most
// maxBody bytes, no unknown fields, nothing but whitespace after it.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeErr(err)
	}
	// A second value, or anything that is not whitespace, is refused; so
	// is a body that is too large once the value has been read.
	var extra json.RawMessage
	err := dec.Decode(&extra)
	if errors.Is(err, io.EOF) {
		return nil
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return tooLarge(mbe.Limit)
	}
	return problems.New(400, problems.CodeInvalidField, "body", "data after the JSON value: send exactly one JSON value")
}

func tooLarge(limit int64) error {
	return problems.Newf(413, problems.CodeBodyTooLarge, "body", "the request body is larger than the limit of %d bytes (1 MiB)", limit)
}

func decodeErr(err error) error {
	var ute *json.UnmarshalTypeError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return tooLarge(mbe.Limit)
	case errors.Is(err, io.EOF):
		return problems.New(400, problems.CodeInvalidField, "body", "a JSON body is required")
	case errors.As(err, &ute):
		return problems.Newf(400, problems.CodeInvalidField, ute.Field, "want %s", ute.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return problems.New(400, problems.CodeInvalidField, f, "unknown field")
	default:
		return problems.Newf(400, problems.CodeInvalidField, "body", "invalid JSON: %v", err)
	}
}

// ctx bounds the store calls of a request: long enough for the record
// helpers to ride out the election of a new leader of a bucket's stream
// (each of their attempts is bounded by the operation timeout); the
// request's context still ends them when the client goes away.
func (a *API) ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return a.o.Store.WriteCtx(r.Context())
}

func storeErr(err error) error { return tenants.StoreErr(err) }

// List is the paginated answer of every list endpoint.
type List[T any] = tenants.List[T]

// Paginate sorts items by the orderBy parameter (one of the keys of less,
// default def) and cuts the page given by position, size and desc.
func Paginate[T any](r *http.Request, items []T, def string, less map[string]func(a, b T) bool) (List[T], error) {
	p, err := tenants.ParsePage(r.URL.Query(), def)
	if err != nil {
		return List[T]{}, err
	}
	return tenants.Paginate(items, p, less)
}

// reload serves POST /v1/reload with Options.Reload.
func (a *API) reload(w http.ResponseWriter, r *http.Request) error {
	if err := a.o.Reload(); err != nil {
		var re ReloadRefusal
		if errors.As(err, &re) {
			pe := &problems.Error{Status: 422, Err: err}
			for _, p := range re.ReloadProblems() {
				pe.Problems = append(pe.Problems, problems.Problem{Level: problems.Severe, Code: problems.CodeInvalidField, Field: "config", Message: p})
			}
			return pe
		}
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"ok":true,"reloaded":true}` + "\n"))
	return nil
}

// servePprof registers Go's profiles (net/http/pprof) behind the admin
// token: a CPU profile of a live replica under load is how hot-path costs
// are found (go tool pprof -http : 'http://admin/debug/pprof/profile?seconds=10'
// with the header Authorization: Bearer <token>).
func (a *API) servePprof() {
	wrap := func(h http.HandlerFunc) HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) error { h(w, r); return nil }
	}
	a.handle("GET /debug/pprof/", wrap(pprof.Index))
	a.handle("GET /debug/pprof/cmdline", wrap(pprof.Cmdline))
	a.handle("GET /debug/pprof/profile", wrap(pprof.Profile))
	a.handle("GET /debug/pprof/symbol", wrap(pprof.Symbol))
	a.handle("GET /debug/pprof/trace", wrap(pprof.Trace))
}
