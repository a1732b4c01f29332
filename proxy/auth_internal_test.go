package proxy

import (
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

// TestAuthorize: expiry, tenant selection, method scopes and modules.
func TestAuthorize(t *testing.T) {
	p := &Proxy{log: zap.NewNop()}
	base := access.Principal{Kind: access.KindAPIKey, Tenant: "acme", Credential: "K", Scopes: access.AllScopes, Modules: access.AllModules}
	read := base
	read.Scopes = access.ScopeRead
	expired := base
	expired.Expires = time.Now().Add(-time.Second).UnixNano()
	later := base
	later.Expires = time.Now().Add(time.Hour).UnixNano()
	several := base
	several.Tenant, several.Tenants = "", []string{"a", "b"}
	chosen := several
	chosen.Tenant = "b"
	stranger := several
	stranger.Tenant = "c"
	invoices := base
	invoices.Modules = 1 << 2
	plain := &route{}
	scoped := &route{scoped: true}
	module3 := &route{module: 1 << 3}
	tests := []struct {
		name   string
		id     access.Principal
		r      *route
		method string
		status int // 0: authorized
	}{
		{"plain", base, plain, "POST", 0},
		{"expired", expired, plain, "GET", 401},
		{"not yet expired", later, plain, "GET", 0},
		{"several tenants, none chosen", several, plain, "GET", 403},
		{"several tenants, one chosen", chosen, plain, "GET", 0},
		{"a tenant not its own", stranger, plain, "GET", 403},
		{"read scope reads", read, scoped, "GET", 0},
		{"read scope cannot create", read, scoped, "POST", 403},
		{"read scope on an unscoped route", read, plain, "DELETE", 0},
		{"wrong module", invoices, module3, "GET", 403},
		{"all modules", base, module3, "GET", 0},
	}
	for _, tt := range tests {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod(tt.method)
		rs := &reqState{route: tt.r, id: tt.id}
		ok := p.authorize(&ctx, rs)
		if got := ctx.Response.StatusCode(); ok != (tt.status == 0) || !ok && got != tt.status {
			t.Errorf("%s: authorized %v, status %d; want status %d", tt.name, ok, got, tt.status)
		}
	}
}
