package proxy

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/access"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

func header(lines ...string) *fasthttp.RequestHeader {
	var h fasthttp.RequestHeader
	h.SetMethod("GET")
	h.SetRequestURI("/")
	for _, l := range lines {
		k, v, _ := strings.Cut(l, ": ")
		h.Add(k, v)
	}
	return &h
}

// TestPresented: each kind is found where it is presented, and only when
// the route accepts that kind.
func TestPresented(t *testing.T) {
	tab := &table{apiKeyHdr: [][]byte{[]byte("X-API-Key")}, authzSch: []byte("ApiKey")}
	key := access.Kinds(0).With(access.KindAPIKey)
	bearer := access.Kinds(0).With(access.KindBearer)
	basic := access.Kinds(0).With(access.KindBasic)
	all := key | bearer | basic
	tests := []struct {
		name   string
		h      *fasthttp.RequestHeader
		kinds  access.Kinds
		kind   access.Kind
		secret string
		field  string
	}{
		{"key header", header("X-API-Key: k1"), key, access.KindAPIKey, "k1", "X-API-Key"},
		{"key scheme", header("Authorization: apikey k2"), key, access.KindAPIKey, "k2", "Authorization"},
		{"header first", header("Authorization: ApiKey k2", "X-API-Key: k1"), all, access.KindAPIKey, "k1", "X-API-Key"},
		{"bearer", header("Authorization: Bearer t1"), all, access.KindBearer, "t1", "Authorization"},
		{"bearer not accepted", header("Authorization: Bearer t1"), key, 0, "", "X-API-Key"},
		{"basic", header("Authorization: Basic dTpw"), basic, access.KindBasic, "dTpw", "Authorization"},
		{"basic not accepted", header("Authorization: Basic dTpw"), bearer, 0, "", "Authorization"},
		{"nothing", header(), key, 0, "", "X-API-Key"},
	}
	for _, tt := range tests {
		pc, field := tab.presented(tt.h, tt.kinds)
		if pc.Kind != tt.kind || string(pc.Secret) != tt.secret || field != tt.field {
			t.Errorf("%s: got %v %q in %s; want %v %q in %s", tt.name, pc.Kind, pc.Secret, field, tt.kind, tt.secret, tt.field)
		}
	}
	u, pw, ok := access.DecodeBasic([]byte("dTpw"), make([]byte, 64))
	if !ok || string(u) != "u" || string(pw) != "p" {
		t.Errorf("DecodeBasic = %q %q %v", u, pw, ok)
	}
}

// TestStripCredentials: what a route's kinds read is not forwarded; an
// Authorization of a scheme tollgate does not read is the backend's.
func TestStripCredentials(t *testing.T) {
	tab := &table{apiKeyHdr: [][]byte{[]byte("X-API-Key")}, authzSch: []byte("ApiKey")}
	key := access.Kinds(0).With(access.KindAPIKey)
	tests := []struct {
		name  string
		h     *fasthttp.RequestHeader
		kinds access.Kinds
		kept  string // Authorization after, "" for none
	}{
		{"key header and backend bearer", header("X-API-Key: k", "Authorization: Bearer backend"), key, "Bearer backend"},
		{"key scheme", header("Authorization: ApiKey k"), key, ""},
		{"bearer route", header("Authorization: Bearer t"), key.With(access.KindBearer), ""},
		{"basic route", header("Authorization: Basic dTpw"), access.Kinds(0).With(access.KindBasic), ""},
		{"basic kept on a key route", header("X-API-Key: k", "Authorization: Basic dTpw"), key, "Basic dTpw"},
	}
	for _, tt := range tests {
		tab.stripCredentials(tt.h, tt.kinds, true)
		if got := string(tt.h.Peek("Authorization")); got != tt.kept {
			t.Errorf("%s: Authorization %q, want %q", tt.name, got, tt.kept)
		}
		if v := tt.h.Peek("X-API-Key"); v != nil && tt.kinds.Has(access.KindAPIKey) {
			t.Errorf("%s: X-API-Key %q forwarded", tt.name, v)
		}
	}
}

// TestAuthorize: expiry, tenant selection (header, path segment, missing,
// not allowed, named twice), method scopes with and without a route's
// override, and modules of the route or of the path.
func TestAuthorize(t *testing.T) {
	p := &Proxy{log: zap.NewNop()}
	inv, exp := access.ModuleNamed("test-invoices"), access.ModuleNamed("test-expenses")
	tab := &table{modules: []modulePrefix{{prefix: []byte("/api/invoices"), name: "test-invoices", bit: inv},
		{prefix: []byte("/api/expenses"), name: "test-expenses", bit: exp}}}
	base := access.Principal{Kind: access.KindAPIKey, Tenant: "acme", Credential: "K", Scopes: access.AllScopes, Modules: access.AllModules}
	with := func(f func(p *access.Principal)) access.Principal { c := base; f(&c); return c }
	read := with(func(p *access.Principal) { p.Scopes = access.ScopeRead })
	crud := map[string]access.Principal{
		"CREATE": with(func(p *access.Principal) { p.Scopes = access.ScopeCreate }),
		"READ":   read,
		"UPDATE": with(func(p *access.Principal) { p.Scopes = access.ScopeUpdate }),
		"DELETE": with(func(p *access.Principal) { p.Scopes = access.ScopeDelete }),
	}
	expired := with(func(p *access.Principal) { p.Expires = time.Now().Add(-time.Second).UnixNano() })
	later := with(func(p *access.Principal) { p.Expires = time.Now().Add(time.Hour).UnixNano() })
	several := with(func(p *access.Principal) { p.Tenant, p.Tenants = "", []string{"a", "b"} })
	invoices := with(func(p *access.Principal) { p.Modules = inv | access.ModuleNone })
	plain := &route{tenantHdr: []byte("X-Tenant")}
	company := &route{tenantHdr: []byte("X-Company")}
	segment := &route{tenantSeg: 2}
	search := &route{tenantHdr: []byte("X-Tenant"), methodScopes: map[string]access.Scopes{"POST": access.ScopeRead}}
	invRoute := &route{tenantHdr: []byte("X-Tenant"), module: inv, moduleName: "test-invoices"}
	type tc struct {
		name   string
		id     access.Principal
		r      *route
		method string
		path   string
		hdrs   []string
		status int    // 0: authorized
		field  string // of the refusal
		tenant string // chosen, when authorized
	}
	tests := []tc{
		{name: "plain", id: base, r: plain, method: "POST", tenant: "acme"},
		{name: "expired", id: expired, r: plain, method: "GET", status: 401},
		{name: "not yet expired", id: later, r: plain, method: "GET", tenant: "acme"},
		{name: "own tenant named", id: base, r: plain, method: "GET", hdrs: []string{"X-Tenant: acme"}, tenant: "acme"},
		{name: "other tenant named", id: base, r: plain, method: "GET", hdrs: []string{"X-Tenant: beta"}, status: 403, field: "X-Tenant"},
		{name: "several, none named", id: several, r: plain, method: "GET", status: 400, field: "X-Tenant"},
		{name: "several, one named", id: several, r: plain, method: "GET", hdrs: []string{"X-Tenant: b"}, tenant: "b"},
		{name: "several, named twice", id: several, r: plain, method: "GET", hdrs: []string{"X-Tenant: b", "X-Tenant: c"}, status: 400, field: "X-Tenant"},
		{name: "several, not allowed", id: several, r: plain, method: "GET", hdrs: []string{"X-Tenant: c"}, status: 403, field: "X-Tenant"},
		{name: "several, configured header", id: several, r: company, method: "GET", hdrs: []string{"X-Company: a"}, tenant: "a"},
		{name: "several, default header on a configured route", id: several, r: company, method: "GET", hdrs: []string{"X-Tenant: a"}, status: 400, field: "X-Company"},
		{name: "several, path segment", id: several, r: segment, method: "GET", path: "/api/b/invoices", tenant: "b"},
		{name: "several, path segment not allowed", id: several, r: segment, method: "GET", path: "/api/c/invoices", status: 403, field: "path"},
		{name: "several, path too short", id: several, r: segment, method: "GET", path: "/api", status: 400, field: "path"},
		{name: "one, path segment its own", id: base, r: segment, method: "GET", path: "/api/acme/x", tenant: "acme"},
		{name: "one, path segment another", id: base, r: segment, method: "GET", path: "/api/beta/x", status: 403, field: "path"},
		{name: "search: POST needs READ", id: read, r: search, method: "POST", tenant: "acme"},
		{name: "search: PUT still UPDATE", id: read, r: search, method: "PUT", status: 403, field: "scope"},
		{name: "module of the route", id: invoices, r: invRoute, method: "GET", path: "/anything", tenant: "acme"},
		{name: "module of the path", id: invoices, r: plain, method: "GET", path: "/api/invoices/7", tenant: "acme"},
		{name: "another module's path", id: invoices, r: plain, method: "GET", path: "/api/expenses/7", status: 403, field: "module"},
		{name: "a path in no module", id: invoices, r: plain, method: "GET", path: "/api/status", status: 403, field: "module"},
		{name: "all modules", id: base, r: invRoute, method: "GET", path: "/api/expenses", tenant: "acme"},
	}
	// Every scope against every method.
	methods := map[string]string{"GET": "READ", "HEAD": "READ", "OPTIONS": "READ", "POST": "CREATE", "PUT": "UPDATE", "PATCH": "UPDATE", "DELETE": "DELETE"}
	for scope, id := range crud {
		for m, need := range methods {
			c := tc{name: scope + " " + m, id: id, r: plain, method: m, tenant: "acme"}
			if need != scope {
				c.status, c.field, c.tenant = 403, "scope", ""
			}
			tests = append(tests, c)
		}
		tests = append(tests, tc{name: scope + " PROPFIND", id: id, r: plain, method: "PROPFIND", status: 403, field: "scope"})
	}
	for _, tt := range tests {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod(tt.method)
		for _, h := range tt.hdrs {
			k, v, _ := strings.Cut(h, ": ")
			ctx.Request.Header.Add(k, v)
		}
		if tt.path == "" {
			tt.path = "/"
		}
		rs := &reqState{route: tt.r, id: tt.id, path: []byte(tt.path)}
		ok := p.authorize(&ctx, tab, rs)
		got := ctx.Response.StatusCode()
		if ok != (tt.status == 0) || !ok && got != tt.status {
			t.Errorf("%s: authorized %v, status %d; want status %d", tt.name, ok, got, tt.status)
			continue
		}
		if ok && rs.id.Tenant != tt.tenant {
			t.Errorf("%s: tenant %q, want %q", tt.name, rs.id.Tenant, tt.tenant)
		}
		if !ok && tt.field != "" && !strings.Contains(string(ctx.Response.Body()), `"field":"`+tt.field+`"`) {
			t.Errorf("%s: body %s does not name field %s", tt.name, ctx.Response.Body(), tt.field)
		}
	}
}

// FuzzPathSegment: any path, any n, never a panic, and what it returns is
// a segment of the path without a slash.
func FuzzPathSegment(f *testing.F) {
	f.Add("/api/acme/invoices", 2)
	f.Add("//x//", 1)
	f.Add("", 0)
	f.Fuzz(func(t *testing.T, path string, n int) {
		s := PathSegment([]byte(path), n)
		if s != nil && (strings.Contains(string(s), "/") || !strings.Contains(path, "/"+string(s))) {
			t.Fatalf("PathSegment(%q, %d) = %q", path, n, s)
		}
	})
}

// FuzzSelectTenant: whatever a client puts in the tenant header, the
// request is authorized only for a tenant the credential may act for.
func FuzzSelectTenant(f *testing.F) {
	p := &Proxy{log: zap.NewNop()}
	f.Add("a", "")
	f.Add("b", "b")
	f.Add("a\x00", "c")
	f.Fuzz(func(t *testing.T, h1, h2 string) {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.Set("X-Tenant", h1)
		if h2 != "" {
			ctx.Request.Header.Add("X-Tenant", h2)
		}
		rs := &reqState{route: &route{}, id: access.Principal{Tenants: []string{"a", "b"}}, path: []byte("/")}
		if p.selectTenant(&ctx, rs, []byte("X-Tenant"), 0) && rs.id.Tenant != "a" && rs.id.Tenant != "b" {
			t.Fatalf("chose %q", rs.id.Tenant)
		}
	})
}

// TestClientAddr: failures are counted against the peer, or against the
// client a trusted proxy names in the last X-Forwarded-For; an untrusted
// peer's X-Forwarded-For is not believed.
func TestClientAddr(t *testing.T) {
	lb := netip.MustParsePrefix("10.0.0.0/8")
	tests := []struct {
		name    string
		peer    string
		trusted []netip.Prefix
		xff     []string
		want    string
	}{
		{"no trusted proxies", "10.1.1.1", nil, []string{"1.2.3.4"}, "10.1.1.1"},
		{"untrusted peer", "192.0.2.1", []netip.Prefix{lb}, []string{"1.2.3.4"}, "192.0.2.1"},
		{"trusted peer", "10.1.1.1", []netip.Prefix{lb}, []string{"6.6.6.6, 1.2.3.4"}, "1.2.3.4"},
		{"trusted peer, two headers", "10.1.1.1", []netip.Prefix{lb}, []string{"6.6.6.6", "1.2.3.5"}, "1.2.3.5"},
		{"trusted peer, garbage", "10.1.1.1", []netip.Prefix{lb}, []string{"nope"}, "10.1.1.1"},
		{"trusted peer, none", "10.1.1.1", []netip.Prefix{lb}, nil, "10.1.1.1"},
	}
	for _, tt := range tests {
		var ctx fasthttp.RequestCtx
		ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.ParseIP(tt.peer), Port: 1}, nil)
		for _, v := range tt.xff {
			ctx.Request.Header.Add("X-Forwarded-For", v)
		}
		tab := &table{trusted: tt.trusted}
		if got := tab.clientAddr(&ctx); got.String() != tt.want {
			t.Errorf("%s: %v, want %s", tt.name, got, tt.want)
		}
	}
}
