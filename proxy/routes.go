package proxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/proxy/wire"
	"github.com/valyala/fasthttp"
)

// table is one configuration compiled for the hot path. It is immutable
// and swapped whole on reload.
type table struct {
	routes    []*route // most specific first: hosts before any-host, longer prefixes first
	apiKeyHdr [][]byte
	authzSch  []byte // "ApiKey", or nil
	hTenant   []byte
	hCred     []byte
	hAuth     []byte
	hReqID    []byte
	trusted   []netip.Prefix
	hUser     []byte
	hUserType []byte
	hScopes   []byte
	selfUsage []byte
	selfReqs  []byte
	selfTens  []byte
	// The OAuth2 endpoints, and the header a legacy client's API key
	// comes in.
	oauthToken, oauthRevoke, oauthTenants, oauthKeyHdr []byte
	selfAuth                                           access.Kinds // what authenticates on the self-service paths
	// selfTLS refuses Basic on the self-service paths in clear text, as
	// a route accepting basic does by default.
	selfTLS bool
	// modules are the module prefixes, longest first.
	modules []modulePrefix
	// tenantLabels counts requests by tenant (metrics.tenant_labels).
	tenantLabels bool
	cfg          *config.Config
}

type modulePrefix struct {
	prefix []byte
	name   string
	bit    access.Modules
}

// moduleOf returns the module whose prefix path matches, if any.
func (t *table) moduleOf(path []byte) (access.Modules, string) {
	for _, m := range t.modules {
		if hasPathPrefix(path, m.prefix) {
			return m.bit, m.name
		}
	}
	return 0, ""
}

type route struct {
	name        string
	label       string       // the route label of its metrics (routeLabel)
	counts      *routeCounts // its request counters; nil without metrics
	host        []byte       // lower case; empty matches any host
	prefix      []byte
	stripPrefix bool
	cost        int64
	auth        access.Kinds // the credentials the route accepts; 0: an open route
	// methodScopes overrides the scope a method needs.
	methodScopes map[string]access.Scopes
	module       access.Modules // 0: the module of the path, if any
	moduleName   string
	tenantHdr    []byte // where a request names its tenant: a header,
	tenantSeg    int    // or a path segment (1 is the first)
	requireTLS   bool
	upstream     *upstream
	normalize    bool
	rfc9457      bool
	errMaxBody   int
	maxBody      int
	upgrade      bool
	// refunds, when set, replaces the plan's refund_on; mode is the
	// route's limit mode (ModePlan: the plan's).
	refunds *access.StatusSet
	mode    access.Mode
}

type upstream struct {
	name   string
	client *fasthttp.HostClient
	path   []byte // prefix joined in front of the forwarded path
	https  bool
	label  string // the upstream label of its metrics (upstreamLabel)
	// latency is its latency histogram; nil without metrics.
	latency prometheus.Observer
	// pipe, when set, takes bodiless requests pipelined.
	pipe *wire.Pipeline
	// For upgrades, which bypass the HostClient.
	addr        string
	connect     time.Duration
	readTimeout time.Duration
	tls         *tls.Config
}

func compile(c *config.Config, old *table, dial func(string) (net.Conn, error)) (*table, error) {
	t := &table{cfg: c, tenantLabels: c.Metrics.TenantLabels,
		selfUsage: []byte(c.SelfService.Usage), selfReqs: []byte(c.SelfService.LimitRequests), selfTens: []byte(c.SelfService.Tenants)}
	for name, prefixes := range c.Modules {
		bit := access.ModuleNamed(name)
		for _, pfx := range prefixes {
			t.modules = append(t.modules, modulePrefix{prefix: []byte(pfx), name: name, bit: bit})
		}
	}
	sort.SliceStable(t.modules, func(i, j int) bool {
		a, b := t.modules[i], t.modules[j]
		if len(a.prefix) != len(b.prefix) {
			return len(a.prefix) > len(b.prefix)
		}
		return a.name < b.name
	})
	for _, h := range c.Auth.APIKey.Headers {
		t.apiKeyHdr = append(t.apiKeyHdr, []byte(h))
	}
	if c.Auth.APIKey.AuthorizationScheme != "" {
		t.authzSch = []byte(c.Auth.APIKey.AuthorizationScheme)
	}
	t.selfAuth = t.selfAuth.With(access.KindAPIKey).With(access.KindBasic).With(access.KindBearer)
	t.oauthToken, t.oauthRevoke, t.oauthTenants = []byte(c.OAuth.TokenPath), []byte(c.OAuth.RevokePath), []byte(c.OAuth.TenantsPath)
	t.oauthKeyHdr = []byte(c.OAuth.APIKeyHeader)
	t.selfTLS = (&config.Route{Auth: []string{"basic"}}).RequiresTLS(c.Listen)
	t.hTenant, t.hCred, t.hAuth, t.hReqID = []byte(c.Headers.Tenant), []byte(c.Headers.Credential),
		[]byte(c.Headers.AuthMethod), []byte(c.Headers.RequestID)
	t.hUser, t.hUserType, t.hScopes = []byte(c.Headers.User), []byte(c.Headers.UserType), []byte(c.Headers.Scopes)
	t.trusted = append(t.trusted, c.TrustedNets...)
	ups := map[string]*upstream{}
	for name, u := range c.Upstreams {
		// Reuse the old pool when nothing about it changed, so a reload
		// keeps warm connections.
		if old != nil {
			if ou := old.upstreamNamed(name); ou != nil && sameUpstream(old.cfg.Upstreams[name], u) {
				ups[name] = ou
				continue
			}
		}
		ups[name] = newUpstream(name, u, dial)
		ups[name].label = upstreamLabel(c, name)
	}
	for i, r := range c.Routes {
		up := ups[r.UpstreamName]
		if up == nil {
			return nil, fmt.Errorf("proxy: routes[%d]: no upstream %q", i, r.UpstreamName)
		}
		rt := &route{
			name: r.Name, label: routeLabel(&r), host: []byte(r.Host), prefix: []byte(r.PathPrefix), stripPrefix: r.StripPrefix,
			cost: r.Cost, upstream: up, normalize: r.Errors.NormalizeErrors(), rfc9457: r.Errors.Format == "rfc9457",
			errMaxBody: int(r.Errors.MaxBody), maxBody: int(r.MaxRequestBody), upgrade: r.AllowUpgrade,
			refunds: r.Refunds, mode: r.LimitMode,
		}
		if rt.name == "" {
			rt.name = fmt.Sprintf("routes[%d]", i)
		}
		for _, a := range r.Auth {
			rt.auth = rt.auth.With(access.KindNamed(a))
		}
		rt.methodScopes = r.MethodScopes
		if r.Module != "" {
			rt.module, rt.moduleName = access.ModuleNamed(r.Module), r.Module
		}
		rt.tenantHdr, rt.tenantSeg = []byte(defaultTenantHeader), r.TenantFrom.PathSegment
		if r.TenantFrom.Header != "" {
			rt.tenantHdr = []byte(r.TenantFrom.Header)
		}
		rt.requireTLS = r.RequiresTLS(c.Listen)
		t.routes = append(t.routes, rt)
	}
	sort.SliceStable(t.routes, func(i, j int) bool {
		a, b := t.routes[i], t.routes[j]
		if (len(a.host) > 0) != (len(b.host) > 0) {
			return len(a.host) > 0
		}
		return len(a.prefix) > len(b.prefix)
	})
	return t, nil
}

// defaultTenantHeader is where a request names the tenant it acts for
// when its credential may act for several and the route says nothing.
const defaultTenantHeader = "X-Tenant"

func (t *table) upstreamNamed(name string) *upstream {
	for _, r := range t.routes {
		if r.upstream.name == name {
			return r.upstream
		}
	}
	return nil
}

func sameUpstream(a, b config.Upstream) bool {
	pa, pb := a.Pipeline, b.Pipeline
	a.Pipeline, b.Pipeline = nil, nil
	return a == b && (pa == nil) == (pb == nil) && (pa == nil || *pa == *pb)
}

func newUpstream(name string, u config.Upstream, dial func(string) (net.Conn, error)) *upstream {
	if dial == nil {
		dial = func(addr string) (net.Conn, error) { return fasthttp.DialTimeout(addr, u.ConnectTimeout.D()) }
	}
	connect, rt, wt := u.ConnectTimeout.D(), u.ReadTimeout.D(), u.WriteTimeout.D()
	hc := &fasthttp.HostClient{
		Addr:  u.Addr,
		IsTLS: u.Scheme == "https",
		// fasthttp's ReadTimeout bounds a whole response, body included,
		// which would cut a long download. Timeouts here bound the wait
		// for each read and write instead: an upstream that stops
		// sending for read_timeout fails with 504, one that streams
		// steadily is never cut.
		Dial: func(addr string) (net.Conn, error) {
			c, err := dial(addr)
			if err != nil {
				return nil, err
			}
			return wire.NewIdleConn(c, rt, wt), nil
		},
		MaxConns:                      u.MaxConns,
		MaxIdleConnDuration:           u.IdleTimeout.D(),
		MaxConnWaitTimeout:            connect,
		StreamResponseBody:            false, // the transport streams large bodies itself
		NoDefaultUserAgentHeader:      true,
		DisablePathNormalizing:        true,
		DisableHeaderNamesNormalizing: false,
		ReadBufferSize:                8 << 10,
		WriteBufferSize:               8 << 10,
	}
	hc.Transport = wire.NewTransport(hc.AcquireConn, hc.ReleaseConn, hc.CloseConn)
	if hc.IsTLS {
		host, _, _ := net.SplitHostPort(u.Addr)
		hc.TLSConfig = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	up := &upstream{name: name, client: hc, path: []byte(u.Path), https: hc.IsTLS, addr: u.Addr,
		connect: connect, readTimeout: rt, tls: hc.TLSConfig}
	if p := u.Pipeline; p != nil {
		up.pipe = wire.NewPipeline(u.Addr, p.Conns, int(p.MaxBody), dial, hc.TLSConfig, rt, wt, u.IdleTimeout.D())
	}
	return up
}

// match returns the route for host and path, or nil. host is compared
// case-insensitively without its port.
func (t *table) match(host, path []byte) *route {
	if i := lastColon(host); i >= 0 {
		host = host[:i]
	}
	for _, r := range t.routes {
		if len(r.host) > 0 && !equalFold(r.host, host) {
			continue
		}
		if hasPathPrefix(path, r.prefix) {
			return r
		}
	}
	return nil
}

// hasPathPrefix matches whole segments: /api matches /api and /api/x but
// not /apix.
func hasPathPrefix(path, prefix []byte) bool {
	if len(path) < len(prefix) || string(path[:len(prefix)]) != string(prefix) {
		return false
	}
	return len(path) == len(prefix) || prefix[len(prefix)-1] == '/' || path[len(prefix)] == '/'
}

func lastColon(host []byte) int {
	for i := len(host) - 1; i >= 0; i-- {
		switch host[i] {
		case ':':
			return i
		case ']':
			return -1
		}
	}
	return -1
}

func equalFold(lower, b []byte) bool {
	if len(lower) != len(b) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// closeIdle releases the pools of t that next does not reuse.
func (t *table) closeUnused(next *table, after time.Duration) {
	keep := map[*upstream]bool{}
	for _, r := range next.routes {
		keep[r.upstream] = true
	}
	for _, r := range t.routes {
		if !keep[r.upstream] {
			hc := r.upstream.client
			time.AfterFunc(after, hc.CloseIdleConnections)
			if pipe := r.upstream.pipe; pipe != nil {
				time.AfterFunc(after, pipe.Close)
			}
		}
	}
}
