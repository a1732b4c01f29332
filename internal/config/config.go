// Package config owns tollgate's configuration: the YAML schema, its
// defaults, strict parsing with ${VAR} expansion and human durations, and
// validation that reports every problem at once with its field path and
// line. What the hot path needs (routes, time zones, CIDRs, header names)
// is pre-parsed here so that no request parses configuration.
package config

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/access"
	"gopkg.in/yaml.v3"
)

// Config is the whole configuration file.
type Config struct {
	// Listen is the proxy listener's address. Default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// Admin is the admin API listener.
	Admin Admin `yaml:"admin"`
	// DataDir holds the embedded NATS JetStream store and the admin token
	// digest. Default ./data.
	DataDir string `yaml:"data_dir"`
	// NATS selects the embedded server (URL empty) or an external one.
	NATS NATS `yaml:"nats"`
	// Server tunes the proxy listener.
	Server Server `yaml:"server"`
	// TLS, when set, terminates TLS on the proxy listener.
	TLS *TLS `yaml:"tls"`
	// Auth configures how credentials are read from requests.
	Auth Auth `yaml:"auth"`
	// OAuth configures the OAuth2 token endpoint and bearer tokens.
	OAuth OAuth `yaml:"oauth"`
	// Modules names groups of routes by path prefix (DESIGN.md scenario
	// 4): a credential limited to modules may only make requests whose
	// path lies in one of them. Up to 64 modules.
	Modules map[string][]string `yaml:"modules"`
	// Headers names the identity headers sent to the backend.
	Headers Headers `yaml:"headers"`
	// TrustedProxies lists CIDRs (or addresses) whose X-Forwarded-* headers
	// are trusted and extended rather than replaced.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Quota configures monthly quotas and the ledger leases.
	Quota Quota `yaml:"quota"`
	// Plans maps a plan name to its limits.
	Plans map[string]Plan `yaml:"plans"`
	// Upstreams maps a name to a backend pool; routes refer to a name or
	// give a URL inline.
	Upstreams map[string]Upstream `yaml:"upstreams"`
	// Routes are matched by host and longest path prefix.
	Routes []Route `yaml:"routes"`
	// SelfService names the paths on the proxy listener where a tenant's
	// own credential reads its usage and files limit increase requests;
	// they do not count against the quota. Empty paths turn them off.
	SelfService SelfService `yaml:"self_service"`
	// Log configures logging.
	Log Log `yaml:"log"`
	// Metrics configures the Prometheus series on the admin listener's
	// /metrics.
	Metrics Metrics `yaml:"metrics"`

	// Parsed at load time.
	TrustedNets []netip.Prefix `yaml:"-"`
	Location    *time.Location `yaml:"-"`
	// File is the path the config was read from, if any.
	File string `yaml:"-"`
}

// Admin is the admin API listener.
type Admin struct {
	// Listen defaults to 127.0.0.1:9901. Empty string after expansion keeps the default.
	Listen string `yaml:"listen"`
	// Token is the admin bearer token. When empty, serve generates one on
	// first start, stores its digest in the data dir and prints it once.
	Token string `yaml:"token"`
	// Pprof serves Go's runtime profiles under /debug/pprof/ on the admin
	// listener, behind the admin token. Off by default.
	Pprof bool `yaml:"pprof"`
	// TLS, when set, terminates TLS on the admin listener.
	TLS *TLS `yaml:"tls"`
}

// OAuth configures the token endpoint (RFC 6749), the revocation endpoint
// (RFC 7009) and the tenants a token may act for, all on the proxy
// listener.
type OAuth struct {
	TokenPath   string `yaml:"token_path"`   // default /oauth/token; empty: off
	RevokePath  string `yaml:"revoke_path"`  // default /oauth/revoke; empty: off
	TenantsPath string `yaml:"tenants_path"` // default /oauth/tenants; empty: off
	// TokenLifetime is how long an access token is valid. Default 5m,
	// at most 24h; a plan's token_lifetime overrides it.
	TokenLifetime Duration `yaml:"token_lifetime"`
	// APIKeyHeader is where a legacy client of the password grant
	// identifies itself with an API key. Default Api-Key.
	APIKeyHeader string `yaml:"api_key_header"`
	// CountRequests makes token requests count against the tenant's
	// monthly quota. Default false.
	CountRequests bool `yaml:"count_requests"`
}

// TLS is a certificate and key for a listener, in PEM files that are
// read again when they change (rotation without a restart). TLS 1.2 is
// the oldest version accepted.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// NATS selects where data and the quota ledger live.
type NATS struct {
	// URL is empty for the embedded server, else a comma-separated list of
	// nats:// URLs.
	URL string `yaml:"url"`
	// Listen, for the embedded server only, also serves NATS clients on
	// this address (e.g. 127.0.0.1:4222) so other replicas can share it.
	// Default: in-process only.
	Listen string `yaml:"listen"`
	// Credentials is an optional .creds file for an external server.
	Credentials string `yaml:"credentials"`
	// Replicas for streams and buckets on an external cluster. Default 1.
	Replicas int `yaml:"replicas"`
	// SyncAlways makes the embedded server fsync every write. Default true:
	// a lost ledger increment would be over-admission after a crash, and
	// ledger writes are rare (one per lease).
	SyncAlways *bool `yaml:"sync_always"`
	// Timeout bounds each store operation. Default 2s.
	Timeout Duration `yaml:"timeout"`
	// LedgerShards spreads tenants' quota counters over this many streams
	// (by a hash of the tenant id) when one stream leader is not enough.
	// Default 1. Changing it on a running deployment resets usage counters.
	LedgerShards int `yaml:"ledger_shards"`
}

// Server tunes the proxy listener.
type Server struct {
	ReadTimeout  Duration `yaml:"read_timeout"`  // default 30s
	WriteTimeout Duration `yaml:"write_timeout"` // default 30s
	IdleTimeout  Duration `yaml:"idle_timeout"`  // default 90s
	// MaxRequestBody in bytes; larger bodies get 413. Default 10 MiB.
	MaxRequestBody ByteSize `yaml:"max_request_body"`
	// MaxHeaderBytes bounds the request line and headers. Default 16 KiB.
	MaxHeaderBytes ByteSize `yaml:"max_header_bytes"`
	// Concurrency caps simultaneous connections. Default 256 Ki.
	Concurrency int `yaml:"concurrency"`
	// ShutdownTimeout bounds draining on SIGTERM. Default 20s.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
}

// Auth configures credential extraction and verification.
type Auth struct {
	APIKey APIKeyAuth `yaml:"api_key"`
	// Basic configures users' passwords (HTTP Basic).
	Basic BasicAuth `yaml:"basic"`
	// Failures limits failed authentications, per replica.
	Failures Failures `yaml:"failures"`
}

// BasicAuth configures how users' passwords are hashed and how successful
// checks are remembered.
type BasicAuth struct {
	// Argon2 are the argon2id parameters of newly set passwords. Default
	// RFC 9106's second recommended option: time 3, memory 64MiB,
	// threads 4. Stored hashes keep the parameters they were made with.
	Argon2 Argon2 `yaml:"argon2"`
	// MemoTTL is how long a successful check is remembered, so that the
	// slow hash is not paid per request. A changed or deleted user is
	// forgotten at once whatever this says. Default 5m.
	MemoTTL Duration `yaml:"memo_ttl"`
	// MemoSize bounds the remembered checks. Default 100000.
	MemoSize int `yaml:"memo_size"`
}

// Argon2 are argon2id parameters.
type Argon2 struct {
	Time    uint32   `yaml:"time"`
	Memory  ByteSize `yaml:"memory"`
	Threads uint8    `yaml:"threads"`
}

// Failures limits failed authentications: a client address or a user
// name may fail this many times within Window (a token bucket that
// refills over the window); past that, attempts are answered 429 until
// the bucket allows one more. Counted per replica.
type Failures struct {
	// PerAddress, per client address. Default 30; 0 turns it off.
	PerAddress int `yaml:"per_address"`
	// PerUsername, per user name presented with HTTP Basic. Default 10;
	// 0 turns it off.
	PerUsername int `yaml:"per_username"`
	// Window over which failures are counted. Default 1m.
	Window Duration `yaml:"window"`
}

// APIKeyAuth names where API keys are read from.
type APIKeyAuth struct {
	// Headers that carry the key. Default [X-API-Key].
	Headers []string `yaml:"headers"`
	// AuthorizationScheme, when set (e.g. "ApiKey"), also accepts
	// "Authorization: <scheme> <key>".
	AuthorizationScheme string `yaml:"authorization_scheme"`
}

// Headers names the identity headers set for the backend. Any copy the
// client sent is removed first.
type Headers struct {
	Tenant     string `yaml:"tenant"`     // default X-Tollgate-Tenant
	Credential string `yaml:"credential"` // default X-Tollgate-Credential
	AuthMethod string `yaml:"auth"`       // default X-Tollgate-Auth
	RequestID  string `yaml:"request_id"` // default X-Request-Id
	User       string `yaml:"user"`       // default X-Tollgate-User
	UserType   string `yaml:"user_type"`  // default X-Tollgate-User-Type
	Scopes     string `yaml:"scopes"`     // default X-Tollgate-Scopes
}

// Quota configures monthly quotas.
type Quota struct {
	// Timezone of the calendar month. Default UTC.
	Timezone string `yaml:"timezone"`
	// MaxLease is the largest number of tokens one replica reserves at a
	// time for one tenant. Leases are sized to lease_horizon of the
	// tenant's traffic and to at most a thousandth of its monthly limit
	// (or 1,000 tokens, whichever is more) and half of 1% of it (or 5
	// tokens: a crash strands at most 1% of the month, or 10 tokens), so
	// this caps only busy tenants of big plans. Default 10000.
	MaxLease int64 `yaml:"max_lease"`
	// LeaseIdle returns unused tokens of a lease not used for this long.
	// Default 30s.
	LeaseIdle Duration `yaml:"lease_idle"`
	// LeaseHorizon sizes leases to this much of a tenant's traffic, up to
	// max_lease. Default 10s.
	LeaseHorizon Duration `yaml:"lease_horizon"`
	// LeaseTTL is how long a replica's lease record lives unrefreshed;
	// once it expires (the replica crashed or lost NATS) the others
	// return what it reserved beyond its recorded spending. Default 30s.
	LeaseTTL Duration `yaml:"lease_ttl"`
	// FailoverHorizon is how long a replica goes on admitting from what
	// it holds while NATS elects a new leader: refills and raises of the
	// recorded spending bound start while what is left lasts this long at
	// the tenant's rate. Default nats.timeout + 10s (a crashed leader is
	// replaced after 4-9 s); longer holds more tokens per replica, up to
	// two leases, which a crashed replica may strand (at most 1% of the
	// month, or 10 tokens: see max_lease).
	FailoverHorizon Duration `yaml:"failover_horizon"`
}

// Plan is a set of limits tenants subscribe to.
type Plan struct {
	// MonthlyRequests is the base monthly limit; 0 means unlimited.
	MonthlyRequests int64 `yaml:"monthly_requests"`
	// Addons maps an add-on name to the requests one unit adds.
	Addons map[string]int64 `yaml:"addons"`
	// Rate is a short-window rate limit, e.g. {requests: 10, per: 1s,
	// burst: 20}, per credential (default) or per tenant (by: tenant).
	Rate *Rate `yaml:"rate"`
	// Concurrency caps a tenant's requests in flight on each replica; 0
	// means no cap.
	Concurrency int64 `yaml:"concurrency"`
	// OnStoreUnavailable is what happens while the quota ledger cannot be
	// reached: "lease" (default: spend what is already reserved, then
	// refuse), "closed" (refuse at once) or "open" (then admit up to
	// open_allowance more per replica and outage, counted when the ledger
	// is back).
	OnStoreUnavailable string `yaml:"on_store_unavailable"`
	// OpenAllowance bounds what "open" admits per replica and outage.
	OpenAllowance int64 `yaml:"open_allowance"`
	// AutoApproveUpTo grants limit increase requests up to this monthly
	// limit at once; larger ones wait for an admin. 0: all wait.
	AutoApproveUpTo int64 `yaml:"auto_approve_up_to"`
	// Timezone overrides quota.timezone for this plan's periods.
	Timezone string `yaml:"timezone"`
	// TokenLifetime overrides oauth.token_lifetime for this plan's
	// tenants.
	TokenLifetime Duration `yaml:"token_lifetime"`
	// Notify sends signed webhooks when a tenant's usage crosses a
	// threshold of its monthly limit, and when it files a limit increase
	// request or one is decided (see Notify). Nil: none.
	Notify *Notify `yaml:"notify"`
	// RefundOn lists the answers of an admitted request that are given
	// back to the tenant's quota: statuses (503), classes (5xx), and
	// tollgate's own upstream_unreachable (502) and upstream_timeout
	// (504). A route's refund_on replaces it on that route.
	RefundOn []string `yaml:"refund_on"`
	// Mode is "enforce" (default) or "shadow": every limit is evaluated
	// and counts what it admits, none refuses, and the answer says what
	// would have (Tollgate-Shadow). A route's mode replaces it there.
	Mode string `yaml:"mode"`
	// OverLimit is "refuse" (default) or {allow: 10%} (or a count):
	// past the limit, requests are admitted up to the allowance and
	// counted as overage.
	OverLimit OverLimit `yaml:"over_limit"`

	// Parsed.
	Location *time.Location `yaml:"-"`
	// Refunds is RefundOn parsed; nil when unset.
	Refunds *access.StatusSet `yaml:"-"`
}

// OverLimit is a plan's over_limit: what happens past the monthly limit.
type OverLimit struct {
	// Allow is the overage allowed past the limit: a share of the
	// tenant's limit ("10%") or a number of requests ("500"). Empty:
	// refuse at the limit.
	Allow string `yaml:"allow"`

	// Parsed: Allow as a percentage (Pct) or a count.
	Pct   float64 `yaml:"-"`
	Count int64   `yaml:"-"`
}

// UnmarshalYAML takes "refuse" or a mapping {allow: …}.
func (o *OverLimit) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if n.Value == "refuse" || n.Value == "" {
			*o = OverLimit{}
			return nil
		}
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q: want refuse or {allow: 10%%}", n.Line, n.Value)}}
	}
	type plain OverLimit
	return n.Decode((*plain)(o))
}

// For is the overage allowed to a tenant whose monthly limit is limit.
func (o OverLimit) For(limit int64) int64 {
	if limit <= 0 {
		return 0
	}
	if o.Pct > 0 {
		return int64(float64(limit) * o.Pct / 100)
	}
	return o.Count
}

// parseRefunds parses a refund_on list into a set; field names the list
// for errors.
func parseRefunds(list []string, field string, add func(path, format string, args ...any)) *access.StatusSet {
	if list == nil {
		return nil
	}
	set := new(access.StatusSet)
	for i, v := range list {
		v = strings.TrimSpace(strings.ToLower(v))
		f := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case v == "upstream_unreachable":
			set.AddFailure(access.FailureUnreachable)
		case v == "upstream_timeout":
			set.AddFailure(access.FailureTimeout)
		case len(v) == 3 && v[0] >= '4' && v[0] <= '5' && v[1:] == "xx":
			base := int(v[0]-'0') * 100
			for s := base; s < base+100; s++ {
				set.AddStatus(s)
			}
		default:
			n, err := strconv.Atoi(v)
			if err != nil || n < 100 || n > 599 {
				add(f, "%q: want a status (400-599), a class (4xx, 5xx), upstream_unreachable or upstream_timeout", v)
				continue
			}
			if n < 400 {
				add(f, "%d: only error answers (4xx, 5xx) can be refunded", n)
				continue
			}
			set.AddStatus(n)
		}
	}
	return set
}

// Notify is a plan's webhook notifications (internal/notify).
type Notify struct {
	// At are thresholds in percent of the tenant's monthly limit, e.g.
	// ["80%", "100%"]; each from 1% to 1000% (above 100% for plans that
	// admit overage), no duplicates. One webhook per tenant, period,
	// threshold and limit.
	At []string `yaml:"at"`
	// URL receives the webhooks (POST, JSON); http or https. Required.
	URL string `yaml:"url"`
	// Secret signs each webhook (HMAC-SHA256, the Tollgate-Signature
	// header); write it as ${VAR}. Required, at least 16 characters.
	Secret string `yaml:"secret"`
	// Events are the kinds sent: usage_threshold, limit_request_filed,
	// limit_request_decided. Default: all of them.
	Events []string `yaml:"events"`

	// Parsed.
	Percents []int64 `yaml:"-"` // At as numbers, ascending
	// Kinds says which Events are on.
	Kinds map[string]bool `yaml:"-"`
}

// NotifyKinds are the kinds of notification notify.events may name.
var NotifyKinds = []string{"usage_threshold", "limit_request_filed", "limit_request_decided"}

// Sends reports whether n (nil: no notifications) sends kind.
func (n *Notify) Sends(kind string) bool { return n != nil && n.Kinds[kind] }

// Rate is a short-window limit.
type Rate struct {
	Requests int64    `yaml:"requests"`
	Per      Duration `yaml:"per"`
	// Burst is how many requests may come at once. Default: Requests.
	Burst int64 `yaml:"burst"`
	// By is "credential" (default) or "tenant".
	By string `yaml:"by"`
}

// Upstream is a backend pool.
type Upstream struct {
	URL            string   `yaml:"url"`
	ConnectTimeout Duration `yaml:"connect_timeout"` // default 5s
	ReadTimeout    Duration `yaml:"read_timeout"`    // default 30s
	WriteTimeout   Duration `yaml:"write_timeout"`   // default 30s
	IdleTimeout    Duration `yaml:"idle_timeout"`    // default 60s
	MaxConns       int      `yaml:"max_conns"`       // default 1024
	// Pipeline, when set, sends bodiless requests (GET, HEAD, DELETE…)
	// pipelined over a few connections: the backend reads and answers many
	// requests per system call. Trade-offs: one slow answer delays those
	// behind it on its connection, answers are buffered whole (up to
	// max_body; larger ones fail with 502), and the backend must handle
	// pipelining correctly. Requests with a body always use the pool.
	Pipeline *Pipeline `yaml:"pipeline"`

	// Parsed.
	Scheme string `yaml:"-"`
	Addr   string `yaml:"-"` // host:port
	Path   string `yaml:"-"` // path prefix joined in front of the request path
}

// Pipeline configures HTTP/1.1 pipelining to an upstream.
type Pipeline struct {
	// Conns is the number of pipelined connections. Default 4.
	Conns int `yaml:"conns"`
	// MaxBody bounds a pipelined answer. Default 1MiB.
	MaxBody ByteSize `yaml:"max_body"`
}

// Route maps requests to an upstream and says how they are authenticated.
type Route struct {
	Name       string   `yaml:"name"`
	Host       string   `yaml:"host"`
	PathPrefix string   `yaml:"path_prefix"`
	Upstream   string   `yaml:"upstream"`
	Auth       []string `yaml:"auth"`
	// Cost in quota units per request. Default 1.
	Cost int64 `yaml:"cost"`
	// StripPrefix removes PathPrefix before forwarding.
	StripPrefix bool `yaml:"strip_prefix"`
	// Errors says how upstream errors are answered.
	Errors RouteErrors `yaml:"errors"`
	// AllowUpgrade proxies protocol upgrades (WebSocket and others):
	// authentication and quota apply to the handshake, then bytes flow
	// both ways until either side closes. Default false: an upgrade is
	// refused with 501 upgrade_refused.
	AllowUpgrade bool `yaml:"allow_upgrade"`
	// MaxRequestBody overrides server.max_request_body for this route.
	MaxRequestBody ByteSize `yaml:"max_request_body"`
	// Module names the module of every request on the route; without it
	// a request's module is the one of modules whose prefix its path
	// matches, if any.
	Module string `yaml:"module"`
	// Scopes overrides the scope a method needs on this route, e.g.
	// {POST: READ} for a search endpoint. Methods not named keep the
	// default: POST CREATE; GET, HEAD, OPTIONS READ; PUT, PATCH UPDATE;
	// DELETE DELETE.
	Scopes map[string]string `yaml:"scopes"`
	// TenantFrom says where a request names the tenant it acts for when
	// its credential may act for several: a header (default X-Tenant) or
	// a segment of the path (1 is the first).
	TenantFrom TenantFrom `yaml:"tenant_from"`
	// RequireTLS refuses requests that did not arrive over TLS (421).
	// Default: on for routes that accept basic, unless the proxy listens
	// on a loopback address only.
	RequireTLS *bool `yaml:"require_tls"`
	// RefundOn, when set, replaces the plan's refund_on on this route
	// ([] refunds nothing here).
	RefundOn *[]string `yaml:"refund_on"`
	// Mode, when set ("enforce" or "shadow"), replaces the plan's mode on
	// this route.
	Mode string `yaml:"mode"`
	// Refunds is RefundOn parsed (nil: the plan's; empty: none). LimitMode
	// is Mode parsed (ModePlan: the plan's).
	Refunds   *access.StatusSet `yaml:"-"`
	LimitMode access.Mode       `yaml:"-"`

	// Parsed: the upstream pool (inline URLs get a generated name).
	UpstreamName string `yaml:"-"`
	// MethodScopes is Scopes parsed.
	MethodScopes map[string]access.Scopes `yaml:"-"`
}

// TenantFrom names where a request names its tenant.
type TenantFrom struct {
	Header      string `yaml:"header"`
	PathSegment int    `yaml:"path_segment"`
}

// RequiresTLS reports whether route r refuses clear-text requests on a
// proxy listening on listen.
func (r *Route) RequiresTLS(listen string) bool {
	if r.RequireTLS != nil {
		return *r.RequireTLS
	}
	basic := false
	for _, a := range r.Auth {
		basic = basic || a == "basic"
	}
	return basic && !loopbackOnly(listen)
}

// loopbackOnly reports whether addr listens on a loopback address only.
func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// SelfService names the self-service paths.
type SelfService struct {
	Usage         string `yaml:"usage"`          // default /_tollgate/usage
	LimitRequests string `yaml:"limit_requests"` // default /_tollgate/limit-requests
	// Tenants lists the tenants the credential may act for.
	Tenants string `yaml:"tenants"` // default /_tollgate/tenants
}

// RouteErrors configures how a route answers errors.
type RouteErrors struct {
	// Normalize rewrites upstream error bodies (status ≥ 400) into the
	// problems shape. Default true.
	Normalize *bool `yaml:"normalize"`
	// Format of error bodies: "problems" (default) or "rfc9457"
	// (application/problem+json). A client asking for
	// application/problem+json in Accept gets it either way.
	Format string `yaml:"format"`
	// MaxBody is how much of an upstream error body is read. Default 64KiB.
	MaxBody ByteSize `yaml:"max_body"`
}

// NormalizeErrors reports whether upstream errors are rewritten.
func (e RouteErrors) NormalizeErrors() bool { return e.Normalize == nil || *e.Normalize }

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error. Default info.
	Access *bool  `yaml:"access"` // access log line per request. Default true.
}

// Metrics configures the Prometheus series. It may change on reload.
type Metrics struct {
	// TenantLabels adds tollgate_tenant_requests_total{tenant,class}:
	// requests by tenant and status class. Default false. Only verified
	// credentials name a tenant, so a client cannot make up series, but
	// each tenant that makes requests costs up to six series (one per
	// class it is answered with) for as long as tollgate runs, in every
	// replica and in Prometheus: with tens of thousands of active tenants
	// that is hundreds of thousands of series. Turning it off on reload
	// drops them.
	TenantLabels bool `yaml:"tenant_labels"`
}

// Default returns the configuration used for every key the file leaves out.
func Default() *Config {
	// Each pointer field gets its own variable: YAML decodes through them.
	syncAlways, access := true, true
	return &Config{
		Listen:  "127.0.0.1:8080",
		Admin:   Admin{Listen: "127.0.0.1:9901"},
		DataDir: "./data",
		NATS:    NATS{Replicas: 1, SyncAlways: &syncAlways, Timeout: Duration(2 * time.Second), LedgerShards: 1},
		Server: Server{
			ReadTimeout: Duration(30 * time.Second), WriteTimeout: Duration(30 * time.Second),
			IdleTimeout: Duration(90 * time.Second), MaxRequestBody: 10 << 20,
			MaxHeaderBytes: 16 << 10, Concurrency: 256 << 10, ShutdownTimeout: Duration(20 * time.Second),
		},
		Auth: Auth{
			APIKey: APIKeyAuth{Headers: []string{"X-API-Key"}},
			Basic: BasicAuth{Argon2: Argon2{Time: 3, Memory: 64 << 20, Threads: 4},
				MemoTTL: Duration(5 * time.Minute), MemoSize: 100000},
			Failures: Failures{PerAddress: 30, PerUsername: 10, Window: Duration(time.Minute)},
		},
		Headers: Headers{
			Tenant: "X-Tollgate-Tenant", Credential: "X-Tollgate-Credential",
			AuthMethod: "X-Tollgate-Auth", RequestID: "X-Request-Id",
			User: "X-Tollgate-User", UserType: "X-Tollgate-User-Type", Scopes: "X-Tollgate-Scopes",
		},
		Quota: Quota{Timezone: "UTC", MaxLease: 10000, LeaseIdle: Duration(30 * time.Second), LeaseHorizon: Duration(10 * time.Second), LeaseTTL: Duration(30 * time.Second)},
		OAuth: OAuth{TokenPath: "/oauth/token", RevokePath: "/oauth/revoke", TenantsPath: "/oauth/tenants",
			TokenLifetime: Duration(5 * time.Minute), APIKeyHeader: "Api-Key"},
		SelfService: SelfService{Usage: "/_tollgate/usage", LimitRequests: "/_tollgate/limit-requests", Tenants: "/_tollgate/tenants"},
		Log:         Log{Level: "info", Access: &access},
	}
}

// AccessLog reports whether the access log is on.
func (c *Config) AccessLog() bool { return c.Log.Access == nil || *c.Log.Access }

// Limit returns a tenant's monthly limit for plan with the given add-on
// units, 0 meaning unlimited; ok is false for an unknown plan.
func (c *Config) Limit(plan string, addons map[string]int64) (limit int64, ok bool) {
	p, ok := c.Plans[plan]
	if !ok {
		return 0, false
	}
	if p.MonthlyRequests == 0 {
		return 0, true
	}
	limit = p.MonthlyRequests
	for name, units := range addons {
		limit += p.Addons[name] * units
	}
	return limit, true
}

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	headerRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// ValidName reports whether s may name a tenant, plan or add-on: 1–64 of
// letters, digits, '_' and '-'. Names become NATS subject tokens.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// AuthAPIKey names the API key method in routes[].auth.
const AuthAPIKey = "api_key"

// scopeNames are the scopes a route's scopes may name.
var scopeNames = map[string]access.Scopes{
	"CREATE": access.ScopeCreate, "READ": access.ScopeRead, "UPDATE": access.ScopeUpdate, "DELETE": access.ScopeDelete,
}

// ScopeNamed returns the scope called name (CREATE, READ, UPDATE or
// DELETE), or 0.
func ScopeNamed(name string) access.Scopes { return scopeNames[name] }

// validate checks and pre-parses c. It returns every problem found.
func (c *Config) validate() []FieldError {
	var errs []FieldError
	add := func(path, format string, args ...any) {
		errs = append(errs, FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	checkAddr := func(path, addr string) {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			add(path, "%q: want host:port", addr)
		}
	}
	checkAddr("listen", c.Listen)
	checkAddr("admin.listen", c.Admin.Listen)
	if c.Admin.Listen == c.Listen && !strings.HasSuffix(c.Listen, ":0") {
		add("admin.listen", "must differ from listen")
	}
	if c.Admin.Token != "" && len(c.Admin.Token) < 16 {
		add("admin.token", "must be at least 16 characters")
	}
	if c.DataDir == "" {
		add("data_dir", "must not be empty")
	}
	if c.NATS.URL != "" {
		for _, u := range strings.Split(c.NATS.URL, ",") {
			pu, err := url.Parse(strings.TrimSpace(u))
			if err != nil || (pu.Scheme != "nats" && pu.Scheme != "tls" && pu.Scheme != "ws" && pu.Scheme != "wss") || pu.Host == "" {
				add("nats.url", "%q: want nats://host:port", u)
			}
		}
	}
	if c.NATS.Replicas < 1 || c.NATS.Replicas > 5 {
		add("nats.replicas", "%d: want 1 to 5", c.NATS.Replicas)
	}
	if c.NATS.Listen != "" {
		if c.NATS.URL != "" {
			add("nats.listen", "only for the embedded server (nats.url empty)")
		}
		checkAddr("nats.listen", c.NATS.Listen)
	}
	if c.NATS.LedgerShards < 1 || c.NATS.LedgerShards > 64 {
		add("nats.ledger_shards", "%d: want 1 to 64", c.NATS.LedgerShards)
	}
	if c.NATS.Timeout <= 0 {
		add("nats.timeout", "must be positive")
	}
	if c.Server.MaxRequestBody <= 0 {
		add("server.max_request_body", "must be positive")
	}
	if c.Server.MaxHeaderBytes < 1024 {
		add("server.max_header_bytes", "must be at least 1KiB")
	}
	for i, h := range c.Auth.APIKey.Headers {
		if !headerRE.MatchString(h) {
			add(fmt.Sprintf("auth.api_key.headers[%d]", i), "%q is not a header name", h)
		}
	}
	if len(c.Auth.APIKey.Headers) == 0 && c.Auth.APIKey.AuthorizationScheme == "" {
		add("auth.api_key.headers", "name at least one header or an authorization_scheme")
	}
	if a := c.Auth.Basic.Argon2; a.Time < 1 || a.Time > 100 || a.Threads < 1 || a.Memory < 1<<20 || a.Memory > 4<<30 || a.Memory < ByteSize(a.Threads)*8<<10 {
		add("auth.basic.argon2", "want time from 1 to 100, threads ≥ 1 and memory from 1MiB to 4GiB (and 8KiB a thread)")
	}
	if c.Auth.Basic.MemoTTL <= 0 {
		add("auth.basic.memo_ttl", "must be positive")
	}
	if c.Auth.Basic.MemoSize < 0 {
		add("auth.basic.memo_size", "must not be negative")
	}
	if f := c.Auth.Failures; f.PerAddress < 0 || f.PerUsername < 0 {
		add("auth.failures", "per_address and per_username must not be negative")
	}
	if c.Auth.Failures.Window <= 0 {
		add("auth.failures.window", "must be positive")
	}
	if c.TLS != nil {
		checkTLS("tls", c.TLS, add)
	}
	if c.Admin.TLS != nil {
		checkTLS("admin.tls", c.Admin.TLS, add)
	}
	if c.OAuth.TokenLifetime < Duration(time.Second) || c.OAuth.TokenLifetime > Duration(24*time.Hour) {
		add("oauth.token_lifetime", "want 1s to 24h")
	}
	if !headerRE.MatchString(c.OAuth.APIKeyHeader) {
		add("oauth.api_key_header", "%q is not a header name", c.OAuth.APIKeyHeader)
	}
	for path, v := range map[string]string{"oauth.token_path": c.OAuth.TokenPath, "oauth.revoke_path": c.OAuth.RevokePath, "oauth.tenants_path": c.OAuth.TenantsPath} {
		if v != "" && !strings.HasPrefix(v, "/") {
			add(path, "%q must start with /", v)
		}
	}
	if len(c.Modules) > 64 {
		add("modules", "at most 64 modules")
	}
	for _, name := range sortedKeys(c.Modules) {
		if !ValidName(name) {
			add("modules."+name, "module names are 1-64 letters, digits, '_' or '-'")
		}
		if len(c.Modules[name]) == 0 {
			add("modules."+name, "list at least one path prefix")
		}
		for i, pfx := range c.Modules[name] {
			if !strings.HasPrefix(pfx, "/") {
				add(fmt.Sprintf("modules.%s[%d]", name, i), "%q must start with /", pfx)
			}
		}
	}
	for path, h := range map[string]string{"headers.tenant": c.Headers.Tenant, "headers.credential": c.Headers.Credential,
		"headers.auth": c.Headers.AuthMethod, "headers.request_id": c.Headers.RequestID,
		"headers.user": c.Headers.User, "headers.user_type": c.Headers.UserType, "headers.scopes": c.Headers.Scopes} {
		if !headerRE.MatchString(h) {
			add(path, "%q is not a header name", h)
		}
	}
	c.TrustedNets = nil
	for i, s := range c.TrustedProxies {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, err2 := netip.ParseAddr(s)
			if err2 != nil {
				add(fmt.Sprintf("trusted_proxies[%d]", i), "%q: want a CIDR or an IP address", s)
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		c.TrustedNets = append(c.TrustedNets, p.Masked())
	}
	loc, err := time.LoadLocation(c.Quota.Timezone)
	if err != nil || c.Quota.Timezone == "" {
		add("quota.timezone", "%q: unknown time zone", c.Quota.Timezone)
		loc = time.UTC
	}
	c.Location = loc
	if c.Quota.MaxLease < 1 {
		add("quota.max_lease", "must be at least 1")
	}
	if c.Quota.LeaseIdle <= 0 {
		add("quota.lease_idle", "must be positive")
	}
	if c.Quota.LeaseHorizon <= 0 {
		add("quota.lease_horizon", "must be positive")
	}
	if c.Quota.LeaseTTL < Duration(time.Second) {
		add("quota.lease_ttl", "must be at least 1s")
	}
	for _, name := range sortedKeys(c.Plans) {
		p := c.Plans[name]
		path := "plans." + name
		if !ValidName(name) {
			add(path, "plan names are 1-64 letters, digits, '_' or '-'")
		}
		if p.MonthlyRequests < 0 {
			add(path+".monthly_requests", "must not be negative")
		}
		for _, a := range sortedKeys(p.Addons) {
			if !ValidName(a) {
				add(path+".addons."+a, "add-on names are 1-64 letters, digits, '_' or '-'")
			}
			if p.Addons[a] <= 0 {
				add(path+".addons."+a, "size must be positive")
			}
		}
		if r := p.Rate; r != nil {
			if r.Requests <= 0 {
				add(path+".rate.requests", "must be positive")
			}
			if r.Per <= 0 {
				add(path+".rate.per", "must be a positive duration")
			}
			if r.Burst == 0 {
				r.Burst = r.Requests
			}
			if r.Burst < 0 {
				add(path+".rate.burst", "must be positive")
			}
			switch r.By {
			case "":
				r.By = "credential"
			case "credential", "tenant":
			default:
				add(path+".rate.by", "%q: want credential or tenant", r.By)
			}
		}
		if p.Concurrency < 0 {
			add(path+".concurrency", "must not be negative")
		}
		switch p.OnStoreUnavailable {
		case "":
			p.OnStoreUnavailable = "lease"
		case "lease", "closed":
		case "open":
			if p.OpenAllowance <= 0 {
				add(path+".open_allowance", "required and positive with on_store_unavailable: open")
			}
		default:
			add(path+".on_store_unavailable", "%q: want closed, lease or open", p.OnStoreUnavailable)
		}
		if p.TokenLifetime != 0 && (p.TokenLifetime < Duration(time.Second) || p.TokenLifetime > Duration(24*time.Hour)) {
			add(path+".token_lifetime", "want 1s to 24h (0: oauth.token_lifetime)")
		}
		if p.AutoApproveUpTo < 0 {
			add(path+".auto_approve_up_to", "must not be negative")
		}
		p.Refunds = parseRefunds(p.RefundOn, path+".refund_on", add)
		switch p.Mode {
		case "":
			p.Mode = "enforce"
		case "enforce", "shadow":
		default:
			add(path+".mode", "%q: want enforce or shadow", p.Mode)
		}
		p.OverLimit.Pct, p.OverLimit.Count = 0, 0
		if a := strings.TrimSpace(p.OverLimit.Allow); a != "" {
			if pct, ok := strings.CutSuffix(a, "%"); ok {
				v, err := strconv.ParseFloat(strings.TrimSpace(pct), 64)
				if err != nil || v <= 0 || v > 1000 {
					add(path+".over_limit.allow", "%q: want a share of the limit from 0%% to 1000%% (10%%) or a number of requests", a)
				}
				p.OverLimit.Pct = v
			} else {
				v, err := strconv.ParseInt(a, 10, 64)
				if err != nil || v < 0 {
					add(path+".over_limit.allow", "%q: want a share of the limit (10%%) or a number of requests", a)
				}
				p.OverLimit.Count = v
			}
			if p.MonthlyRequests == 0 {
				add(path+".over_limit", "an unlimited plan (monthly_requests 0) has no overage")
			}
		}
		if p.Notify != nil {
			checkNotify(path+".notify", p.Notify, add)
		}
		p.Location = c.Location
		if p.Timezone != "" {
			if l, err := time.LoadLocation(p.Timezone); err != nil {
				add(path+".timezone", "%q: unknown time zone", p.Timezone)
			} else {
				p.Location = l
			}
		}
		c.Plans[name] = p
	}
	for _, name := range sortedKeys(c.Upstreams) {
		u := c.Upstreams[name]
		if e := u.parse(); e != "" {
			add("upstreams."+name+".url", "%s", e)
		}
		c.Upstreams[name] = u
	}
	if len(c.Routes) == 0 {
		add("routes", "at least one route is required")
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		path := fmt.Sprintf("routes[%d]", i)
		if r.PathPrefix == "" {
			r.PathPrefix = "/"
		}
		if !strings.HasPrefix(r.PathPrefix, "/") {
			add(path+".path_prefix", "%q must start with /", r.PathPrefix)
		}
		r.Host = strings.ToLower(r.Host)
		if r.Cost == 0 {
			r.Cost = 1
		}
		if r.Cost < 0 {
			add(path+".cost", "must be positive")
		}
		if r.RefundOn != nil {
			r.Refunds = parseRefunds(append([]string{}, *r.RefundOn...), path+".refund_on", add)
		}
		switch r.Mode {
		case "":
			r.LimitMode = access.ModePlan
		case "enforce":
			r.LimitMode = access.ModeEnforce
		case "shadow":
			r.LimitMode = access.ModeShadow
		default:
			add(path+".mode", "%q: want enforce or shadow", r.Mode)
		}
		seen := access.Kinds(0)
		for j, a := range r.Auth {
			k := access.KindNamed(a)
			switch {
			case k == 0 || k == access.KindClient:
				add(fmt.Sprintf("%s.auth[%d]", path, j), "%q: unknown method (known: api_key, basic, bearer)", a)
			case seen.Has(k):
				add(fmt.Sprintf("%s.auth[%d]", path, j), "%q: listed twice", a)
			}
			seen = seen.With(k)
		}
		if r.Module != "" && !ValidName(r.Module) {
			add(path+".module", "module names are 1-64 letters, digits, '_' or '-'")
		}
		r.MethodScopes = nil
		for _, m := range sortedKeys(r.Scopes) {
			sc := ScopeNamed(r.Scopes[m])
			switch {
			case !headerRE.MatchString(m) || strings.ToUpper(m) != m:
				add(path+".scopes."+m, "%q is not a method name in upper case", m)
			case sc == 0:
				add(path+".scopes."+m, "%q: want CREATE, READ, UPDATE or DELETE", r.Scopes[m])
			default:
				if r.MethodScopes == nil {
					r.MethodScopes = map[string]access.Scopes{}
				}
				r.MethodScopes[m] = sc
			}
		}
		switch tf := r.TenantFrom; {
		case tf.Header != "" && tf.PathSegment != 0:
			add(path+".tenant_from", "name a header or a path_segment, not both")
		case tf.Header != "" && !headerRE.MatchString(tf.Header):
			add(path+".tenant_from.header", "%q is not a header name", tf.Header)
		case tf.PathSegment < 0 || tf.PathSegment > 32:
			add(path+".tenant_from.path_segment", "%d: want 1 to 32 (1 is the path's first segment)", tf.PathSegment)
		}
		switch {
		case r.Upstream == "":
			add(path+".upstream", "required: a URL or the name of an upstream")
		case strings.Contains(r.Upstream, "://"):
			u := Upstream{URL: r.Upstream}
			if e := u.parse(); e != "" {
				add(path+".upstream", "%s", e)
				break
			}
			name := "route-" + strconv.Itoa(i)
			if c.Upstreams == nil {
				c.Upstreams = map[string]Upstream{}
			}
			c.Upstreams[name] = u
			r.UpstreamName = name
		default:
			if _, ok := c.Upstreams[r.Upstream]; !ok {
				add(path+".upstream", "%q: no such upstream", r.Upstream)
			}
			r.UpstreamName = r.Upstream
		}
		switch r.Errors.Format {
		case "":
			r.Errors.Format = "problems"
		case "problems", "rfc9457":
		default:
			add(path+".errors.format", "%q: want problems or rfc9457", r.Errors.Format)
		}
		if r.Errors.MaxBody == 0 {
			r.Errors.MaxBody = 64 << 10
		}
		if r.MaxRequestBody == 0 {
			r.MaxRequestBody = c.Server.MaxRequestBody
		}
		for j := 0; j < i; j++ {
			if c.Routes[j].Host == r.Host && c.Routes[j].PathPrefix == r.PathPrefix {
				add(path, "duplicates routes[%d] (same host and path_prefix)", j)
			}
		}
	}
	for path, v := range map[string]string{"self_service.usage": c.SelfService.Usage, "self_service.limit_requests": c.SelfService.LimitRequests,
		"self_service.tenants": c.SelfService.Tenants} {
		if v != "" && !strings.HasPrefix(v, "/") {
			add(path, "%q must start with /", v)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	return errs
}

// checkTLS checks that t names a certificate and key that load together.
func checkTLS(path string, t *TLS, add func(path, format string, args ...any)) {
	if t.CertFile == "" || t.KeyFile == "" {
		add(path, "cert_file and key_file are both required")
		return
	}
	if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
		add(path, "%v", err)
	}
}

func (u *Upstream) parse() string {
	pu, err := url.Parse(u.URL)
	if err != nil {
		return fmt.Sprintf("%q: %v", u.URL, err)
	}
	if pu.Scheme != "http" && pu.Scheme != "https" {
		return fmt.Sprintf("%q: unsupported scheme (want http or https)", u.URL)
	}
	if pu.Host == "" {
		return fmt.Sprintf("%q: missing host", u.URL)
	}
	u.Scheme = pu.Scheme
	u.Addr = pu.Host
	if pu.Port() == "" {
		port := "80"
		if pu.Scheme == "https" {
			port = "443"
		}
		u.Addr = net.JoinHostPort(pu.Hostname(), port)
	}
	u.Path = strings.TrimSuffix(pu.EscapedPath(), "/")
	if u.ConnectTimeout == 0 {
		u.ConnectTimeout = Duration(5 * time.Second)
	}
	if u.ReadTimeout == 0 {
		u.ReadTimeout = Duration(30 * time.Second)
	}
	if u.WriteTimeout == 0 {
		u.WriteTimeout = Duration(30 * time.Second)
	}
	if u.IdleTimeout == 0 {
		u.IdleTimeout = Duration(60 * time.Second)
	}
	if u.MaxConns == 0 {
		u.MaxConns = 1024
	}
	if p := u.Pipeline; p != nil {
		if p.Conns == 0 {
			p.Conns = 4
		}
		if p.MaxBody == 0 {
			p.MaxBody = 1 << 20
		}
		if p.Conns < 0 || p.MaxBody < 0 {
			return "pipeline: conns and max_body must be positive"
		}
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Expand replaces ${VAR} and ${VAR:-default} with environment values. A
// lone $ is kept as it is, so secrets and regexps with $ survive.
func Expand(s string, getenv func(string) string) string {
	if getenv == nil {
		getenv = os.Getenv
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		expr := s[i+2 : i+j]
		name, def, hasDef := strings.Cut(expr, ":-")
		v := getenv(name)
		if v == "" && hasDef {
			v = def
		}
		b.WriteString(v)
		s = s[i+j+1:]
	}
}
