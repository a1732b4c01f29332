// Package app is the composition root: it builds every part of tollgate
// from a configuration, wires the proxy, authn and limiter to the store,
// runs the listeners, reloads configuration live and drains on shutdown.
// It is the only package that sees both sides of every interface.
package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/admin"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/notify"
	"github.com/tollgate/tollgate/internal/oauth"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/tenants"
	"github.com/tollgate/tollgate/limiter"
	"github.com/tollgate/tollgate/proxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"
)

// Options adjust Run for the CLI, the demo and tests.
type Options struct {
	// Out receives what an operator must see once (a generated admin
	// token). Default os.Stderr.
	Out io.Writer
	// LogOut receives logs and the access log. Default os.Stderr.
	LogOut io.Writer
	// OnReady is called once both listeners serve, with their addresses.
	OnReady func(a *App)
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// App is a running tollgate.
type App struct {
	cfg      atomic.Pointer[config.Config]
	log      *zap.Logger
	level    zap.AtomicLevel
	o        Options
	store    *store.Store
	creds    *authn.Set // API keys
	users    *authn.Set
	clients  *authn.Set
	verifier *authn.Verifier // API keys
	// clientVerifier checks OAuth clients' secrets (the token endpoint).
	clientVerifier *authn.Verifier
	tokens         *authn.Set
	tokenVerifier  *authn.Verifier
	userVerifier   *authn.UserVerifier
	hasher         *authn.Hasher
	lookups        *prometheus.CounterVec
	authn          authn.Authenticator // one verifier per kind of credential
	tenants        *store.TenantMirror
	requests       *store.JSONMirror[store.LimitRequest]
	adminAPI       *admin.API
	quotas         *limiter.Quotas
	notifier       *notify.Notifier
	proxy          *proxy.Proxy
	access         *proxy.AccessLog
	ready          atomic.Bool

	reloadMu sync.Mutex // serialises reloads

	// ProxyAddr and AdminAddr are the bound listener addresses.
	ProxyAddr, AdminAddr string
}

// Config returns the configuration in force.
func (a *App) Config() *config.Config { return a.cfg.Load() }

// Store returns the open store.
func (a *App) Store() *store.Store { return a.store }

// NewLogger returns the JSON zap logger tollgate uses.
func NewLogger(w io.Writer, level string) (*zap.Logger, zap.AtomicLevel) {
	lvl := zap.NewAtomicLevel()
	_ = lvl.UnmarshalText([]byte(level))
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core), lvl
}

// Run starts tollgate with cfg and serves until ctx ends, then drains:
// readiness goes 503, in-flight requests finish, unused quota tokens go
// back to the ledger, and the store is closed.
func Run(ctx context.Context, cfg *config.Config, o Options) (err error) {
	if o.Out == nil {
		o.Out = os.Stderr
	}
	if o.LogOut == nil {
		o.LogOut = os.Stderr
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	a := &App{o: o, lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_credential_lookups_total",
		Help: "Credentials looked up in the store because they were not in memory, by kind.",
	}, []string{"kind"})}
	a.cfg.Store(cfg)
	a.log, a.level = NewLogger(o.LogOut, cfg.Log.Level)
	defer func() { _ = a.log.Sync() }()
	log := a.log.Named("app")

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("app: data dir: %w", err)
	}
	digest, err := a.adminToken(cfg)
	if err != nil {
		return err
	}

	// Listen first: a port in use should fail before anything is started.
	pln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("app: listen: %w", err)
	}
	defer pln.Close()
	aln, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		return fmt.Errorf("app: admin listen: %w", err)
	}
	defer aln.Close()
	a.ProxyAddr, a.AdminAddr = pln.Addr().String(), aln.Addr().String()
	// TLS termination: handshakes run in the serving goroutines; the
	// certificates are read again when their files change.
	proxyLn, _, err := tlsListener(pln, cfg.TLS, a.log.Named("tls"))
	if err != nil {
		return err
	}
	adminLn, _, err := tlsListener(aln, cfg.Admin.TLS, a.log.Named("admin.tls"))
	if err != nil {
		return err
	}

	replica := nuid.Next()
	// The ledger's duplicate window, one value for the store that keeps
	// message ids and the limiter that resends within it: a resend after
	// the store forgot its id would be counted twice.
	dupWindow := store.DefaultDuplicateWindow
	a.store, err = store.Open(ctx, store.Options{
		DuplicateWindow: dupWindow,
		URL:             cfg.NATS.URL, Credentials: cfg.NATS.Credentials, DataDir: cfg.DataDir, Listen: cfg.NATS.Listen,
		SyncAlways: cfg.NATS.SyncAlways == nil || *cfg.NATS.SyncAlways, Replicas: cfg.NATS.Replicas,
		Timeout: cfg.NATS.Timeout.D(), LedgerShards: cfg.NATS.LedgerShards,
		Name: "tollgate-" + replica, Log: a.log.Named("store"),
	})
	if err != nil {
		return err
	}
	defer a.store.Close()
	if u := a.store.ClientURL(); u != "" {
		log.Info("embedded NATS serves other replicas", zap.String("url", u))
	}

	a.creds, a.users, a.clients = authn.NewSet(), authn.NewSet(), authn.NewSet()
	a.verifier, err = authn.NewVerifier(a.creds, authn.VerifierOptions{
		Lookup: a.lookup(store.KindAPIKey), LookupTimeout: cfg.NATS.Timeout.D(),
	})
	if err != nil {
		return err
	}
	defer a.verifier.Close()
	a.clientVerifier, err = authn.NewVerifier(a.clients, authn.VerifierOptions{
		Lookup: a.lookup(store.KindClient), LookupTimeout: cfg.NATS.Timeout.D(),
	})
	if err != nil {
		return err
	}
	defer a.clientVerifier.Close()
	ba := cfg.Auth.Basic
	a.hasher = authn.NewHasher(authn.Argon2Params{Time: ba.Argon2.Time, Memory: uint32(ba.Argon2.Memory >> 10), Threads: ba.Argon2.Threads},
		// Half the cores at most hash passwords: a flood of wrong ones
		// leaves the other half to serve everyone else.
		max(1, runtime.GOMAXPROCS(0)/2))
	fl := cfg.Auth.Failures
	a.userVerifier, err = authn.NewUserVerifier(a.users, authn.UserOptions{
		Hasher: a.hasher, Lookup: a.lookup(store.KindUser), LookupTimeout: cfg.NATS.Timeout.D(),
		MemoTTL: ba.MemoTTL.D(), MemoSize: ba.MemoSize,
		Failures: authn.NewThrottle(fl.PerUsername, fl.Window.D(), 1<<16, authn.HashString),
	})
	if err != nil {
		return err
	}
	defer a.userVerifier.Close()
	a.tokens = authn.NewSet()
	a.tokenVerifier, err = authn.NewVerifier(a.tokens, authn.VerifierOptions{
		Lookup: a.lookup(store.KindToken), LookupTimeout: cfg.NATS.Timeout.D(),
	})
	if err != nil {
		return err
	}
	defer a.tokenVerifier.Close()
	a.authn.Register(access.KindAPIKey, a.verifier)
	a.authn.Register(access.KindBasic, a.userVerifier)
	a.authn.Register(access.KindBearer, authn.TokenVerifier{Verifier: a.tokenVerifier})
	a.authn.Failures = authn.NewThrottle(fl.PerAddress, fl.Window.D(), 1<<16, authn.HashAddr)

	a.notifier = a.newNotifier(replica)
	a.quotas = limiter.NewQuotas(limiter.QuotaOptions{
		Ledger: a.store.Ledger, Limits: a.limits, Now: o.Now, Location: cfg.Location,
		MaxLease: cfg.Quota.MaxLease, LeaseIdle: cfg.Quota.LeaseIdle.D(), LeaseHorizon: cfg.Quota.LeaseHorizon.D(),
		Timeout: cfg.NATS.Timeout.D(), DuplicateWindow: dupWindow,
		ReplicaID: replica, Available: a.store.Connected, Log: a.log.Named("quota"),
		Totals: a.notifier.Totals,
		Leases: a.store.Leases(), LeaseTTL: cfg.Quota.LeaseTTL.D(), FailoverHorizon: cfg.Quota.FailoverHorizon.D(),
	})
	a.requests = store.NewJSONMirror[store.LimitRequest]()
	a.tenants = store.NewTenantMirror()
	a.tenants.OnChange = func(id string) {
		if id == "" {
			a.quotas.ChangedAll()
		} else {
			a.quotas.Changed(id)
		}
	}

	// Background work (watchers, the quota loops, the access log) runs in
	// bg until everything in front of it has stopped; Run waits for all of
	// it before it returns.
	wctx, stopWatch := context.WithCancel(context.Background())
	var bg errgroup.Group
	defer func() {
		stopWatch()
		_ = bg.Wait()
	}()
	tenantsReady, keysReady, requestsReady, tokensReady := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	bg.Go(func() error {
		store.Watch(wctx, a.store.Tokens, &keyMirror{only: store.KindToken, sets: credSets{a.tokens}}, a.log.Named("watch"), tokensReady)
		return nil
	})
	bg.Go(func() error { sweepTokens(wctx, a.tokens); return nil })
	bg.Go(func() error {
		store.Watch(wctx, a.store.LimitRequests, a.requests, a.log.Named("watch"), requestsReady)
		return nil
	})
	bg.Go(func() error {
		store.Watch(wctx, a.store.Tenants, a.tenants, a.log.Named("watch"), tenantsReady)
		return nil
	})
	keys := &keyMirror{sets: credSets{a.creds, a.users, a.clients}}
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	if st, err := a.store.Keys.Status(sctx); err == nil {
		// Sized up front, the set's maps do not grow (and rehash) a
		// dozen times while a million keys load.
		keys.hint = int(min(st.Values(), 1<<26))
	}
	scancel()
	bg.Go(func() error {
		store.Watch(wctx, a.store.Keys, keys, a.log.Named("watch"), keysReady)
		return nil
	})
	// However many keys there are, loading them goes on while they keep
	// arriving; it fails only when nothing arrives for a minute.
	progress := time.NewTicker(time.Second)
	defer progress.Stop()
	lastCount, lastMove := int64(-1), time.Now()
	for _, ch := range []chan struct{}{tenantsReady, keysReady, requestsReady, tokensReady} {
	wait:
		for {
			select {
			case <-ch:
				break wait
			case <-ctx.Done():
				return nil
			case <-progress.C:
				if n := keys.loaded.Load(); n != lastCount {
					lastCount, lastMove = n, time.Now()
				} else if time.Since(lastMove) > time.Minute {
					return fmt.Errorf("app: the store delivered no tenants or keys for a minute (%d keys received)", n)
				}
			}
		}
	}
	log.Info("credential set loaded", zap.Int("credentials", a.creds.Len()), zap.Int("tenants", a.tenants.Len()))
	// Loading left garbage the size of the buckets (decoded messages):
	// hand it back to the OS rather than carry it as RSS. A forced
	// collection of a million credentials takes most of a second: done
	// beside serving, not before it.
	bg.Go(func() error { debug.FreeOSMemory(); return nil })

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "tollgate_ledger_operations_total", Help: "Operations sent to the quota ledger.",
	}, func() float64 { return float64(a.quotas.LedgerOps()) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "tollgate_lease_record_writes_total", Help: "Writes of this replica's lease records.",
	}, func() float64 { return float64(a.quotas.RecordOps()) }))
	reg.MustRegister(quotaWaits{a.quotas})
	registerLeaseMetrics(reg, a.quotas)
	registerStoreMetrics(reg, a.store)
	registerNotifyMetrics(reg, a.notifier)
	for kind, set := range map[string]*authn.Set{store.KindAPIKey: a.creds, store.KindUser: a.users, store.KindClient: a.clients, store.KindToken: a.tokens} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tollgate_credentials", Help: "Credentials held in memory, by kind.", ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 { return float64(set.Len()) }))
	}
	reg.MustRegister(a.lookups)

	var accessLog *proxy.AccessLog
	if cfg.AccessLog() {
		accessLog = proxy.NewAccessLog(o.LogOut)
		a.access = accessLog
	}
	passwordGrants := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_oauth_password_grants_total",
		Help: "Token requests of the OAuth2 password grant (legacy clients only, RFC 9700), by client.",
	}, []string{"client"})
	reg.MustRegister(passwordGrants)
	oauthServer := oauth.New(oauth.Options{
		Keys: a.verifier, Clients: a.clientVerifier, Users: a.userVerifier, Tokens: a.tokens,
		LookupToken: a.lookup(store.KindToken), Bucket: a.store.Tokens, WriteCtx: a.store.WriteCtx,
		Failures: a.authn.Failures, Config: a.Config, PasswordGrants: passwordGrants, Log: a.log.Named("oauth"), Now: o.Now,
		Plan: func(tenant string) string {
			if t := a.tenants.Get(tenant); t != nil {
				return t.Plan
			}
			return ""
		},
		Admit: func(tenant string) bool {
			d := a.quotas.AdmitRequest(tenant, "oauth", 1, limiter.ModePlan)
			if d.Acquired {
				a.quotas.Release(tenant)
			}
			return d.Allowed
		},
	})
	a.proxy, err = proxy.New(cfg, proxy.Options{
		Authenticate: a.authn.Authenticate, Admit: a.admit, Release: a.release, Refund: a.refund, SelfService: a.selfService,
		OAuth:  oauthServer.Serve,
		Log:    a.log.Named("proxy"),
		Access: accessLog, Metrics: proxy.NewMetrics(reg),
	})
	if err != nil {
		return err
	}
	srv := a.proxy.Server(cfg)
	a.adminAPI = admin.New(admin.Options{
		Store: a.store, Tenants: a.tenants, LimitRequests: a.requests, Credentials: a.creds, Users: a.users, Clients: a.clients, Tokens: a.tokens,
		Hasher: a.hasher, Usage: a.quotas.Usage, Daily: a.quotas.Daily,
		Config: a.Config, TokenDigest: digest, Ready: a.ready.Load, Gatherer: reg, Now: o.Now,
		Log: a.log.Named("admin"), Reload: a.Reload, Pprof: cfg.Admin.Pprof,
		Notifications: a.notifier, NotifyLimitRequest: a.notifier.LimitRequest,
	})
	adm := &http.Server{Handler: a.adminAPI, ReadHeaderTimeout: 10 * time.Second}

	qctx, stopQuotas := context.WithCancel(context.Background())
	bg.Go(func() error { return a.quotas.Run(qctx) })
	// Webhooks: created from the ledger totals, delivered from the
	// bucket; stopped after the quotas' last ledger operations.
	bg.Go(func() error { a.notifier.Run(qctx, nil); return nil })
	// The daily usage history keeps only the last count of days that
	// can no longer change.
	bg.Go(func() error { a.store.Ledger.RunCompaction(qctx, time.Now); return nil })
	logDone := make(chan struct{})
	if accessLog != nil {
		bg.Go(func() error { accessLog.Run(logDone); return nil })
	}
	// The listeners: the first to fail ends serving, as the context does.
	serving, servingCtx := errgroup.WithContext(ctx)
	serving.Go(func() error { return srv.Serve(proxy.Listener(proxyLn)) })
	serving.Go(func() error {
		if err := adm.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	reloadCtx, stopReload := context.WithCancel(ctx)
	defer stopReload()
	hup := notifyReloads()
	bg.Go(func() error { a.watchReloads(reloadCtx, hup); return nil })
	a.ready.Store(true)
	log.Info("tollgate serving", zap.String("listen", a.ProxyAddr), zap.String("admin", a.AdminAddr),
		zap.Bool("embedded_nats", cfg.NATS.URL == ""), zap.String("data_dir", cfg.DataDir))
	if o.OnReady != nil {
		// A test hook, not waited for: it may outlive Run.
		go o.OnReady(a)
	}

	<-servingCtx.Done()
	stopReload()
	if ctx.Err() == nil {
		log.Error("listener failed", zap.Error(context.Cause(servingCtx)))
	}

	// Drain: not ready, finish in-flight requests, return leases, stop.
	a.ready.Store(false)
	log.Info("draining")
	sctx, cancel := context.WithTimeout(context.Background(), a.Config().Server.ShutdownTimeout.D())
	defer cancel()
	if e := srv.ShutdownWithContext(sctx); e != nil {
		log.Warn("proxy shutdown", zap.Error(e))
	}
	if e := a.quotas.Close(sctx); e != nil {
		log.Warn("quota tokens not returned", zap.Error(e))
	}
	_ = adm.Shutdown(sctx)
	// A listener's own failure is Run's error; a shut-down one returns nil.
	err = serving.Wait()
	stopQuotas()
	stopWatch()
	close(logDone)
	_ = bg.Wait()
	log.Info("stopped")
	return err
}

// admit is the proxy's Admit hook: the limiter's decision for p's tenant,
// in the vocabulary both share.
func (a *App) admit(p access.Principal, cost int64, mode access.Mode) access.Decision {
	return a.quotas.AdmitRequest(p.Tenant, p.Credential, cost, mode)
}

func (a *App) release(p access.Principal) { a.quotas.Release(p.Tenant) }

// refund gives back the quota of a request that failed through the
// client's fault, or whose answer is in its refund_on.
func (a *App) refund(p access.Principal, cost int64, d access.Decision) {
	a.quotas.Refund(p.Tenant, cost, d)
}

// limits gives the limiter a tenant's limits from its record and plan.
func (a *App) limits(tenant string) (limiter.Limit, bool) {
	t := a.tenants.Get(tenant)
	if t == nil {
		return limiter.Limit{}, false
	}
	c := a.Config()
	l := limiter.Limit{Monthly: tenants.Limit(c, t), Anchor: t.AnchorDay}
	if p, ok := c.Plans[t.Plan]; ok {
		l.Location = p.Location
		l.Concurrency = p.Concurrency
		l.Overage = p.OverLimit.For(l.Monthly)
		l.Shadow = p.Mode == "shadow"
		l.RefundOn = p.Refunds
		switch p.OnStoreUnavailable {
		case "closed":
			l.Policy = limiter.PolicyClosed
		case "open":
			l.Policy, l.OpenAllowance = limiter.PolicyOpen, p.OpenAllowance
		}
		if r := p.Rate; r != nil {
			l.Rate = limiter.Rate{Requests: r.Requests, Per: r.Per.D(), Burst: r.Burst}
			l.RateByTenant = r.By == "tenant"
		}
	}
	return l, true
}

// lookup is a verifier's fallback on a miss for credentials of kind: the
// watcher may not have delivered one created a moment ago. It asks the
// bucket's leader, which has every acknowledged write.
func (a *App) lookup(kind string) authn.Lookup {
	lookups := a.lookups.WithLabelValues(kind)
	return func(ctx context.Context, id string) (*authn.Credential, error) {
		lookups.Inc()
		// Just after NATS came back, this replica's client may not have
		// reconnected yet while another replica already issued a
		// credential: wait for the reconnect, within the lookup's time,
		// rather than fail a valid credential with 503 (a request sent
		// now would fail at once: nothing is buffered while away).
		if !a.store.Connected() {
			back := a.store.Reconnected()
			if !a.store.Connected() {
				select {
				case <-back:
				case <-ctx.Done():
					return nil, authn.ErrUnavailable
				}
			}
		}
		var k store.Key
		bucket, key := a.store.Keys, store.CredentialKey(kind, id)
		if kind == store.KindToken {
			bucket, key = a.store.Tokens, id
		}
		_, err := a.store.GetAtLeader(ctx, bucket, key, &k)
		if errors.Is(err, store.ErrNotFound) {
			return nil, authn.ErrInvalid
		}
		if err != nil {
			return nil, authn.ErrUnavailable
		}
		if k.ID != id || normKind(k.Kind) != kind {
			return nil, authn.ErrInvalid
		}
		c := admin.CredentialOf(&k)
		if c == nil {
			return nil, authn.ErrInvalid
		}
		return c, nil
	}
}

// keyMirror keeps the credential set in step with the keys bucket. It
// loads the initial state as it arrives (store.Loader) straight into the
// set's next table, which replaces the current one when the state is
// complete: a million keys are held neither as raw JSON nor in a staging
// copy while they load.
type keyMirror struct {
	// only, when set, is the kind of every record (the tokens bucket,
	// keyed by token id), all in sets[0].
	only    string
	sets    credSets
	hint    int // keys expected in the initial state, to size the table
	loading [3]*authn.Loading
	interns *interns     // while loading
	loaded  atomic.Int64 // entries of the initial state received, for startup progress
}

// interns holds, while the initial state loads, one copy of each tenant id
// and of the first maxNames names (admin.Intern's weak-pointer table costs
// far more per string). Names that repeat ("default", "ci") come early;
// unique ones would only fill the map. A nil *interns interns through
// admin.Intern, for the changes that come one at a time afterwards.
type interns struct{ tenants, names map[string]string }

func (in *interns) tenant(b []byte) string {
	if in == nil {
		return admin.Intern(string(b))
	}
	return intern(in.tenants, b, math.MaxInt)
}

func (in *interns) name(b []byte) string {
	if in == nil {
		return admin.Intern(string(b))
	}
	return intern(in.names, b, maxNames)
}

// intern returns the copy of b held in tab, adding one while tab has
// fewer than limit strings.
func intern(tab map[string]string, b []byte, limit int) string {
	if s, ok := tab[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(tab) < limit {
		tab[s] = s
	}
	return s
}

const maxNames = 4096

func (m *keyMirror) BeginLoad() {
	for i, set := range m.sets {
		if set == nil {
			continue
		}
		hint := m.hint // most credentials are API keys
		if i > 0 {
			hint = 0
		}
		m.loading[i] = set.BeginLoad(hint)
	}
	m.interns = &interns{tenants: map[string]string{}, names: map[string]string{}}
}

// normKind is a record's kind, an API key's spelt out.
func normKind(k string) string {
	if k == "" {
		return store.KindAPIKey
	}
	return k
}

// sets are the credential sets by kind: API keys, users, clients.
type credSets [3]*authn.Set

// of returns the index in credSets of kind.
func setOf(kind string) int {
	if kind == store.KindToken {
		return 0 // the tokens mirror's only set
	}
	switch kind {
	case store.KindUser:
		return 1
	case store.KindClient:
		return 2
	}
	return 0
}

// parseKey returns the kind and id of the record under key.
func (m *keyMirror) parseKey(key string) (kind, id string, ok bool) {
	if m.only != "" {
		return m.only, key, true
	}
	return store.ParseCredentialKey(key)
}

func (m *keyMirror) Load(key string, v []byte) {
	m.loaded.Add(1)
	kind, id, ok := m.parseKey(key)
	if !ok {
		return
	}
	l := m.loading[setOf(kind)]
	if v == nil {
		l.Delete(id)
		return
	}
	if c := decodeKey(kind, id, v, m.interns); c != nil {
		l.Put(c)
	} else {
		// A later value of id that is damaged removes the earlier one,
		// as Update does.
		l.Delete(id)
	}
}

func (m *keyMirror) Loaded() {
	for i := range m.loading {
		if m.loading[i] != nil {
			m.loading[i].Publish()
			m.loading[i] = nil
		}
	}
	m.interns = nil
}

// Snapshot implements store.Mirror, through the Loader methods.
func (m *keyMirror) Snapshot(entries map[string][]byte) {
	m.BeginLoad()
	for id, v := range entries {
		m.Load(id, v)
	}
	m.Loaded()
}

func (m *keyMirror) Update(key string, v []byte) {
	kind, id, ok := m.parseKey(key)
	if !ok {
		return
	}
	set := m.sets[setOf(kind)]
	if v == nil {
		set.Delete(id)
		return
	}
	if c := decodeKey(kind, id, v, nil); c != nil {
		set.Put(c)
	} else {
		set.Delete(id)
	}
}

// decodeKey decodes the credential record of kind stored under id; nil
// when it is damaged or names another id or kind (every writer stores a
// credential under its own id, and the set is keyed by it: a record under
// a foreign name would be added under one id and deleted under another).
// Records as tollgate writes them are read without encoding/json
// (store.ScanKey), the rest with it; in interns the tenant ids and the
// name.
func decodeKey(kind, id string, v []byte, in *interns) *authn.Credential {
	var f store.KeyFields
	if !store.ScanKey(v, &f) {
		var k store.Key
		if err := jsonUnmarshal(v, &k); err != nil {
			return nil
		}
		f = store.KeyFieldsOf(&k)
	}
	if string(f.ID) != id || normKind(string(f.Kind)) != kind {
		return nil
	}
	return admin.CredentialOfFields(&f, admin.Interner{Tenant: in.tenant, Name: in.name})
}

// sweepTokens drops expired tokens from the set every half minute: they
// already fail verification (their expiry is checked on each use), and the
// bucket forgets them after store.MaxTokenLifetime without telling the
// watchers, so memory would hold them until then.
func sweepTokens(ctx context.Context, set *authn.Set) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		set.Range(func(c *authn.Credential) bool {
			if c.Expired(now) {
				set.Delete(c.ID)
			}
			return true
		})
	}
}

const tokenFile = "admin-token.sha256"

// adminToken returns the digest of the admin token: the configured one,
// or one generated on first start, whose digest is kept in the data dir
// and which is printed once.
func (a *App) adminToken(cfg *config.Config) ([32]byte, error) {
	if cfg.Admin.Token != "" {
		return sha256.Sum256([]byte(cfg.Admin.Token)), nil
	}
	path := filepath.Join(cfg.DataDir, tokenFile)
	if b, err := os.ReadFile(path); err == nil {
		var d [32]byte
		if n, err := hex.Decode(d[:], []byte(strings.TrimSpace(string(b)))); err == nil && n == 32 {
			return d, nil
		}
		return [32]byte{}, fmt.Errorf("app: %s is damaged: delete it to generate a new admin token", path)
	}
	token := "tga_" + authn.NewID(40)
	d := sha256.Sum256([]byte(token))
	if err := writeFileAtomic(path, []byte(hex.EncodeToString(d[:])+"\n"), 0o600); err != nil {
		return [32]byte{}, fmt.Errorf("app: store admin token digest: %w", err)
	}
	fmt.Fprintf(a.o.Out, "\nGenerated an admin token. It is shown only this once; only its digest is stored in %s.\n\n    export TOLLGATE_ADMIN_TOKEN=%s\n\n", path, token)
	return d, nil
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// quotaWaits exports the admissions that waited on the quota ledger or a
// lease record (the limiter's slow path) as a histogram: its count is the
// number of such admissions, its sum their total wait.
type quotaWaits struct{ q *limiter.Quotas }

var quotaWaitsDesc = prometheus.NewDesc("tollgate_quota_wait_seconds",
	"Time admissions waited on the quota ledger or a lease record (reservations and record writes on the request path).", nil, nil)

func (w quotaWaits) Describe(ch chan<- *prometheus.Desc) { ch <- quotaWaitsDesc }

func (w quotaWaits) Collect(ch chan<- prometheus.Metric) {
	ws := w.q.Waits()
	buckets := make(map[float64]uint64, len(ws.Buckets))
	for i, ub := range limiter.WaitBuckets {
		buckets[ub.Seconds()] = uint64(ws.Buckets[i])
	}
	ch <- prometheus.MustNewConstHistogram(quotaWaitsDesc, uint64(ws.Count), ws.Sum.Seconds(), buckets)
}
