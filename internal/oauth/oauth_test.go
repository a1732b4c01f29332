package oauth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/admin"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/leaktest"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/tollgate/tollgate/proxy"
)

// TestMain fails the package's tests if they leave a goroutine running
// (an embedded NATS server, a verifier's cache).
func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

const formType = "application/x-www-form-urlencoded"

// basicAuth is an Authorization header of RFC 6749 §2.3.1: id and secret
// form-encoded, joined with ':', base64-encoded.
func basicAuth(id, secret string) []byte {
	return []byte("Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret))))
}

func post(body string) proxy.OAuthRequest {
	return proxy.OAuthRequest{Endpoint: proxy.OAuthToken, Method: "POST", ContentType: []byte(formType), Body: []byte(body),
		Addr: netip.MustParseAddr("192.0.2.1")}
}

// TestParse: the parameters of a token request, each once; POST only; a
// body only as a form; Basic credentials form-decoded.
func TestParse(t *testing.T) {
	type want struct {
		status int
		field  string // of the error
		params map[string]string
		basic  []string // id, secret; nil: no Basic credentials
	}
	tests := []struct {
		name string
		r    proxy.OAuthRequest
		want want
	}{
		{"form body", post("grant_type=client_credentials&scope=READ"),
			want{params: map[string]string{"grant_type": "client_credentials", "scope": "READ"}}},
		{"query only", proxy.OAuthRequest{Method: "POST", Query: []byte("grant_type=password&username=bob")},
			want{params: map[string]string{"grant_type": "password", "username": "bob"}}},
		{"body and query", func() proxy.OAuthRequest {
			r := post("grant_type=password")
			r.Query = []byte("username=bob&password=a%20b+c")
			return r
		}(), want{params: map[string]string{"grant_type": "password", "username": "bob", "password": "a b c"}}},
		{"GET", proxy.OAuthRequest{Method: "GET", Query: []byte("grant_type=client_credentials")}, want{status: 405}},
		{"HEAD", proxy.OAuthRequest{Method: "HEAD"}, want{status: 405}},
		{"lower-case post", proxy.OAuthRequest{Method: "post"}, want{status: 405}},
		{"a header sent twice", func() proxy.OAuthRequest { r := post(""); r.Several = true; return r }(),
			want{status: 400, field: "Authorization"}},

		// Repeated parameters (RFC 6749 §3.2).
		{"repeated in the body", post("grant_type=password&grant_type=client_credentials"), want{status: 400, field: "grant_type"}},
		{"repeated in the body, same value", post("scope=READ&scope=READ"), want{status: 400, field: "scope"}},
		{"repeated in the query", proxy.OAuthRequest{Method: "POST", Query: []byte("a=1&client_id=x&client_id=y")},
			want{status: 400, field: "client_id"}},
		{"repeated across body and query", func() proxy.OAuthRequest {
			r := post("client_secret=s1")
			r.Query = []byte("client_secret=s2")
			return r
		}(), want{status: 400, field: "client_secret"}},
		{"repeated across, same value", func() proxy.OAuthRequest {
			r := post("grant_type=password")
			r.Query = []byte("grant_type=password")
			return r
		}(), want{status: 400, field: "grant_type"}},
		{"repeated, spelt differently", post("grant_type=password&grant%5Ftype=password"), want{status: 400, field: "grant_type"}},
		{"repeated, once empty, in the body", post("scope=&scope=READ"), want{status: 400, field: "scope"}},

		// Empty values are as if left out (§3.1).
		{"empty values", post("grant_type=client_credentials&scope=&client_id="),
			want{params: map[string]string{"grant_type": "client_credentials"}}},
		{"bare names", post("grant_type=client_credentials&scope"),
			want{params: map[string]string{"grant_type": "client_credentials"}}},
		{"empty body", proxy.OAuthRequest{Method: "POST", ContentType: []byte("application/json")}, want{params: map[string]string{}}},

		// Content type of a body.
		{"JSON body", func() proxy.OAuthRequest {
			r := post(`{"grant_type":"client_credentials"}`)
			r.ContentType = []byte("application/json")
			return r
		}(), want{status: 400, field: "Content-Type"}},
		{"form as text/plain", func() proxy.OAuthRequest {
			r := post("grant_type=client_credentials")
			r.ContentType = []byte("text/plain")
			return r
		}(), want{status: 400, field: "Content-Type"}},
		{"no content type", func() proxy.OAuthRequest {
			r := post("grant_type=client_credentials")
			r.ContentType = nil
			return r
		}(), want{status: 400, field: "Content-Type"}},
		{"multipart", func() proxy.OAuthRequest {
			r := post("grant_type=client_credentials")
			r.ContentType = []byte("multipart/form-data; boundary=x")
			return r
		}(), want{status: 400, field: "Content-Type"}},
		{"form with a charset, any case", func() proxy.OAuthRequest {
			r := post("grant_type=client_credentials")
			r.ContentType = []byte(" Application/X-WWW-Form-URLEncoded ; charset=UTF-8")
			return r
		}(), want{params: map[string]string{"grant_type": "client_credentials"}}},
		{"a body that is not a form", post("grant_type=%zz"), want{status: 400, field: "body"}},
		{"a query that is not a form", proxy.OAuthRequest{Method: "POST", Query: []byte("a=1;b=2")}, want{status: 400, field: "query"}},

		// Basic (RFC 6749 §2.3.1).
		{"Basic", func() proxy.OAuthRequest {
			r := post("grant_type=client_credentials")
			r.Authorization = basicAuth("tgc_AAAAAAAAAAAAAAAA", "tgs_secret")
			return r
		}(), want{params: map[string]string{"grant_type": "client_credentials"}, basic: []string{"tgc_AAAAAAAAAAAAAAAA", "tgs_secret"}}},
		{"Basic, %-encoded id and secret", func() proxy.OAuthRequest {
			r := post("")
			r.Authorization = basicAuth("my client:1/é", "a:b c+d%e&f=g/h")
			return r
		}(), want{params: map[string]string{}, basic: []string{"my client:1/é", "a:b c+d%e&f=g/h"}}},
		{"Basic, '+' is a space", func() proxy.OAuthRequest {
			r := post("")
			r.Authorization = []byte("Basic " + base64.StdEncoding.EncodeToString([]byte("a+b:c+d%2B")))
			return r
		}(), want{params: map[string]string{}, basic: []string{"a b", "c d+"}}},
		{"Basic, scheme in lower case, spaces around", func() proxy.OAuthRequest {
			r := post("")
			r.Authorization = []byte("basic   " + base64.StdEncoding.EncodeToString([]byte("id:secret")) + "  ")
			return r
		}(), want{params: map[string]string{}, basic: []string{"id", "secret"}}},
		{"Basic, empty secret", func() proxy.OAuthRequest {
			r := post("")
			r.Authorization = []byte("Basic " + base64.StdEncoding.EncodeToString([]byte("id:")))
			return r
		}(), want{params: map[string]string{}, basic: []string{"id", ""}}},
		{"Basic, not base64", func() proxy.OAuthRequest {
			r := post("")
			r.Authorization = []byte("Basic !!!")
			return r
		}(), want{status: 400, field: "Authorization"}},
		{"Basic, no colon", func() proxy.OAuthRequest {
			r := post("")
			r.Authorization = []byte("Basic " + base64.StdEncoding.EncodeToString([]byte("idsecret")))
			return r
		}(), want{status: 400, field: "Authorization"}},
		{"Basic, bad %-escape in the id", func() proxy.OAuthRequest {
			r := post("")
			r.Authorization = []byte("Basic " + base64.StdEncoding.EncodeToString([]byte("id%zz:secret")))
			return r
		}(), want{status: 400, field: "Authorization"}},
		{"Basic, bad %-escape in the secret", func() proxy.OAuthRequest {
			r := post("")
			r.Authorization = []byte("Basic " + base64.StdEncoding.EncodeToString([]byte("id:sec%")))
			return r
		}(), want{status: 400, field: "Authorization"}},
		{"Bearer is not client authentication", func() proxy.OAuthRequest {
			r := post("")
			r.Authorization = []byte("Bearer abc")
			return r
		}(), want{params: map[string]string{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, e := parse(tt.r)
			if tt.want.status != 0 {
				if e == nil {
					t.Fatalf("parse = %+v, want an error %d", req, tt.want.status)
				}
				if req != nil || e.status != tt.want.status || e.code != problems.CodeInvalidRequest || e.field != tt.want.field {
					t.Fatalf("parse = %v, %+v; want %d invalid_request of field %q", req, e, tt.want.status, tt.want.field)
				}
				a := e.answer()
				var body struct {
					Error    string `json:"error"`
					Problems []struct{ Code, Field string }
				}
				if err := json.Unmarshal(a.Body, &body); err != nil || a.Status != tt.want.status || body.Error != "invalid_request" ||
					len(body.Problems) != 1 || body.Problems[0].Field != tt.want.field {
					t.Fatalf("answer %d %s (%v)", a.Status, a.Body, err)
				}
				if tt.want.field != "" && tt.want.field != "Authorization" && tt.want.field != "Content-Type" &&
					tt.want.field != "body" && tt.want.field != "query" && !strings.Contains(e.msg, tt.want.field) {
					t.Errorf("message %q does not name the parameter", e.msg)
				}
				return
			}
			if e != nil {
				t.Fatalf("parse: %d %s %q %q", e.status, e.code, e.field, e.msg)
			}
			if len(req.params) != len(tt.want.params) {
				t.Errorf("params %v, want %v", req.params, tt.want.params)
			}
			for k, v := range tt.want.params {
				if got := req.params[k]; len(got) != 1 || got[0] != v {
					t.Errorf("param %q = %q, want %q", k, got, v)
				}
			}
			if tt.want.basic == nil {
				if req.hasBasic {
					t.Errorf("Basic credentials %q:%q read", req.basicID, req.basicSecret)
				}
			} else if !req.hasBasic || req.basicID != tt.want.basic[0] || req.basicSecret != tt.want.basic[1] {
				t.Errorf("Basic %v %q:%q, want %q", req.hasBasic, req.basicID, req.basicSecret, tt.want.basic)
			}
		})
	}
}

// TestParseRepeatedEmptyOrder: a parameter sent empty in one place and
// with a value in the other gets the same answer whichever of body and
// query holds which (RFC 6749 §3.1 reads the empty one as absent, §3.2
// refuses a repeat; either way, not one then the other).
func TestParseRepeatedEmptyOrder(t *testing.T) {
	emptyInBody := post("scope=")
	emptyInBody.Query = []byte("scope=READ")
	emptyInQuery := post("scope=READ")
	emptyInQuery.Query = []byte("scope=")
	_, e1 := parse(emptyInBody)
	_, e2 := parse(emptyInQuery)
	if (e1 == nil) != (e2 == nil) {
		t.Errorf("scope= in the body, scope=READ in the query: %v; the other way round: %v", e1, e2)
	}
}

// countParams counts, per name, the values of a form that are not empty,
// and reports whether a name came more than once (empty or not).
func countParams(raw []byte, nonEmpty map[string]int, vals map[string]string, any map[string]int) error {
	vs, err := url.ParseQuery(string(raw))
	if err != nil {
		return err
	}
	for k, v := range vs {
		any[k] += len(v)
		for _, x := range v {
			if x != "" {
				nonEmpty[k]++
				vals[k] = x
			}
		}
	}
	return nil
}

// FuzzParse: whatever the method, content type, query, body and
// Authorization header, parse does not panic; a request it returns holds
// each parameter that came exactly once with a value, and the Basic
// credentials decoded per RFC 6749 §2.3.1; an error is a well-formed
// answer.
func FuzzParse(f *testing.F) {
	f.Add("POST", []byte(formType), []byte("scope=READ"), []byte("grant_type=client_credentials"), basicAuth("tgc_x", "s"))
	f.Add("POST", []byte(formType+"; charset=utf-8"), []byte(""), []byte("grant_type=password&username=bob&password=pw"), []byte(""))
	f.Add("POST", []byte("application/json"), []byte("a=1"), []byte("{}"), []byte("Bearer x"))
	f.Add("GET", []byte(""), []byte("a=1&a=2"), []byte(""), []byte("Basic Og=="))
	f.Add("POST", []byte(formType), []byte("a="), []byte("a=x"), basicAuth("a:b", "c%d+e"))
	f.Add("POST", []byte(formType), []byte("a=x"), []byte("a="), []byte("basic "+base64.StdEncoding.EncodeToString([]byte("%41:%zz"))))
	f.Add("POST", []byte(formType), []byte("%41=1"), []byte("A=2;"), []byte("Basic !"))
	f.Fuzz(func(t *testing.T, method string, ct, query, body, auth []byte) {
		r := proxy.OAuthRequest{Endpoint: proxy.OAuthToken, Method: method, ContentType: ct, Query: query, Body: body, Authorization: auth}
		req, e := parse(r)
		if (req == nil) == (e == nil) {
			t.Fatalf("parse = %v, %v: want exactly one", req, e)
		}
		nonEmpty, vals, anyCount := map[string]int{}, map[string]string{}, map[string]int{}
		qerr := countParams(query, nonEmpty, vals, anyCount)
		var berr error
		if len(body) > 0 {
			berr = countParams(body, nonEmpty, vals, anyCount)
		}
		if e != nil {
			a := e.answer()
			var got struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(a.Body, &got); err != nil || got.Error != string(e.code) || a.Status != e.status {
				t.Fatalf("answer %d %s: %v", a.Status, a.Body, err)
			}
			// Refused for a reason.
			dup := false
			for _, n := range anyCount {
				dup = dup || n > 1
			}
			ctype, _, _ := strings.Cut(string(ct), ";")
			badCT := len(body) > 0 && !strings.EqualFold(strings.TrimSpace(ctype), formType)
			if method == "POST" && !r.Several && !badCT && qerr == nil && berr == nil && !dup && !bytes.HasPrefix(bytes.ToLower(bytes.TrimSpace(auth)), []byte("basic")) {
				t.Fatalf("refused %+v with %d %s %q %q", r, e.status, e.code, e.field, e.msg)
			}
			return
		}
		if method != "POST" {
			t.Fatalf("method %q accepted", method)
		}
		if len(body) > 0 {
			ctype, _, _ := strings.Cut(string(ct), ";")
			if !strings.EqualFold(strings.TrimSpace(ctype), formType) {
				t.Fatalf("a body of type %q read", ct)
			}
		}
		if qerr != nil || berr != nil {
			t.Fatalf("accepted a body or query that is not a form: %v, %v", berr, qerr)
		}
		for k, v := range req.params {
			if len(v) != 1 || v[0] == "" {
				t.Fatalf("param %q = %q", k, v)
			}
			if nonEmpty[k] != 1 || vals[k] != v[0] {
				t.Fatalf("param %q = %q came %d times with a value (%q)", k, v[0], nonEmpty[k], vals[k])
			}
		}
		for k, n := range nonEmpty {
			if n > 1 {
				t.Fatalf("param %q came %d times and was accepted", k, n)
			}
			if !req.params.Has(k) {
				t.Fatalf("param %q = %q dropped", k, vals[k])
			}
		}
		// Basic, re-derived.
		scheme, cred, _ := strings.Cut(string(auth), " ")
		if !strings.EqualFold(scheme, "Basic") {
			if req.hasBasic {
				t.Fatalf("Basic credentials read from %q", auth)
			}
			return
		}
		dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
		if err != nil {
			t.Fatalf("accepted Basic credentials that are not base64: %q", auth)
		}
		i := bytes.IndexByte(dec, ':')
		if i < 0 {
			t.Fatalf("accepted Basic credentials without ':': %q", dec)
		}
		id, err1 := url.QueryUnescape(string(dec[:i]))
		secret, err2 := url.QueryUnescape(string(dec[i+1:]))
		if err1 != nil || err2 != nil {
			t.Fatalf("accepted Basic credentials that are not form-encoded: %q", dec)
		}
		if !req.hasBasic || req.basicID != id || req.basicSecret != secret {
			t.Fatalf("Basic %q: read %v %q:%q, want %q:%q", dec, req.hasBasic, req.basicID, req.basicSecret, id, secret)
		}
	})
}

// tiny are argon2id parameters cheap enough for tests.
var tiny = authn.Argon2Params{Time: 1, Memory: 64, Threads: 1}

// fixture is a token server over a real embedded store, with clients, an
// API key and users in its sets.
type fixture struct {
	st                          *store.Store
	srv                         *Server
	o                           Options
	keys, clients, users        *authn.Set
	tokens                      *authn.Set
	tokenV                      *authn.Verifier
	cfg                         *config.Config
	ccID, ccSecret              string // client_credentials only; CREATE READ; tenant acme
	pwID, pwSecret              string // both grants; CREATE READ; module m-a
	noID, noSecret              string // no grant
	apiKey                      string // password grant; tenant acme
	other, otherSecret          string // client_credentials; another tenant
	userBob, userCarol, userDan string
}

const password = "correct horse"

func credentialOf(t testing.TB, k store.Key) *authn.Credential {
	t.Helper()
	k.Created = time.Now().UTC()
	c := admin.CredentialOf(&k)
	if c == nil {
		t.Fatalf("CredentialOf(%+v) = nil", k)
	}
	return c
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{st: storetest.Open(t), keys: authn.NewSet(), clients: authn.NewSet(), users: authn.NewSet(), tokens: authn.NewSet()}
	newV := func(s *authn.Set) *authn.Verifier {
		v, err := authn.NewVerifier(s, authn.VerifierOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(v.Close)
		return v
	}
	client := func(tenant string, grants, scopes, modules []string) (string, string) {
		id := authn.NewClient()
		secret, digest := authn.NewClientSecret()
		f.clients.Put(credentialOf(t, store.Key{ID: id, Kind: store.KindClient, Tenant: tenant, Name: "app",
			Digest: hex.EncodeToString(digest[:]), Grants: grants, Scopes: scopes, Modules: modules}))
		return id, secret
	}
	f.ccID, f.ccSecret = client("acme", []string{"client_credentials"}, []string{"CREATE", "READ"}, nil)
	f.pwID, f.pwSecret = client("acme", []string{"client_credentials", "password"}, []string{"CREATE", "READ"}, []string{"m-a"})
	f.noID, f.noSecret = client("acme", nil, nil, nil)
	f.other, f.otherSecret = client("beta", []string{"client_credentials"}, nil, nil)
	key, id, digest := authn.NewAPIKey()
	f.apiKey = key
	f.keys.Put(credentialOf(t, store.Key{ID: id, Tenant: "acme", Name: "legacy", Digest: hex.EncodeToString(digest[:]),
		Grants: []string{"password"}}))

	h := authn.NewHasher(tiny, 0)
	phc, err := h.Hash(context.Background(), []byte(password))
	if err != nil {
		t.Fatal(err)
	}
	user := func(name string, tenants, scopes, modules []string) string {
		f.users.Put(credentialOf(t, store.Key{ID: name, Kind: store.KindUser, Type: "api_only", Tenants: tenants,
			Password: phc, Scopes: scopes, Modules: modules}))
		return name
	}
	f.userBob = user("bob@example.com", []string{"beta", "gamma"}, []string{"READ", "UPDATE"}, nil)
	f.userCarol = user("carol", []string{"beta"}, []string{"DELETE"}, nil)
	f.userDan = user("dan", []string{"beta"}, nil, []string{"m-b"})
	uv, err := authn.NewUserVerifier(f.users, authn.UserOptions{Hasher: h})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(uv.Close)

	f.cfg = config.Default()
	f.cfg.Plans = map[string]config.Plan{"gold": {TokenLifetime: config.Duration(time.Minute)}}
	f.o = Options{
		Keys: newV(f.keys), Clients: newV(f.clients), Users: uv, Tokens: f.tokens,
		LookupToken: func(ctx context.Context, id string) (*authn.Credential, error) {
			var k store.Key
			if _, err := store.Get(ctx, f.st.Tokens, id, &k); errors.Is(err, store.ErrNotFound) {
				return nil, authn.ErrInvalid
			} else if err != nil {
				return nil, err
			}
			if c := admin.CredentialOf(&k); c != nil {
				return c, nil
			}
			return nil, authn.ErrInvalid
		},
		Bucket: f.st.Tokens, WriteCtx: f.st.WriteCtx,
		Failures: authn.NewThrottle(30, time.Minute, 1000, authn.HashAddr),
		Config:   func() *config.Config { return f.cfg },
		Plan: func(tenant string) string {
			if tenant == "gamma" {
				return "gold"
			}
			return "basic"
		},
	}
	f.srv = New(f.o)
	f.tokenV = newV(f.tokens)
	return f
}

// answer is a token endpoint's JSON answer, success or error.
type answer struct {
	status      int
	challenge   string
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
	Error       string `json:"error"`
	Description string `json:"error_description"`
	Problems    []struct {
		Code, Field string
	}
}

func (f *fixture) serve(t testing.TB, r proxy.OAuthRequest) answer {
	t.Helper()
	if r.Method == "" {
		r.Method = "POST"
	}
	if r.ContentType == nil {
		r.ContentType = []byte(formType)
	}
	if !r.Addr.IsValid() {
		r.Addr = netip.MustParseAddr("192.0.2.7")
	}
	a := f.srv.Serve(r)
	var got answer
	if len(a.Body) > 0 {
		if err := json.Unmarshal(a.Body, &got); err != nil {
			t.Fatalf("answer %d: %s: %v", a.Status, a.Body, err)
		}
	}
	got.status, got.challenge = a.Status, a.Challenge
	return got
}

func form(kv ...string) []byte {
	v := url.Values{}
	for i := 0; i < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return []byte(v.Encode())
}

// issue asks for a token and fails the test unless one is issued.
func (f *fixture) issue(t testing.TB, r proxy.OAuthRequest) answer {
	t.Helper()
	r.Endpoint = proxy.OAuthToken
	a := f.serve(t, r)
	if a.status != 200 || a.AccessToken == "" || a.TokenType != "Bearer" {
		t.Fatalf("token request: %+v", a)
	}
	return a
}

func wantError(t *testing.T, a answer, status int, code problems.Code, field string) {
	t.Helper()
	if a.status != status || a.Error != string(code) || len(a.Problems) != 1 || a.Problems[0].Code != string(code) ||
		(field != "" && a.Problems[0].Field != field) || a.AccessToken != "" {
		t.Errorf("answer %+v, want %d %s (field %q)", a, status, code, field)
	}
}

// stored returns the record of a token in the bucket, its raw value, and
// the credential another replica's watcher would build of it.
func (f *fixture) stored(t testing.TB, id string) (store.Key, []byte, *authn.Credential) {
	t.Helper()
	ctx, cancel := f.st.Ctx(context.Background())
	defer cancel()
	e, err := f.st.Tokens.Get(ctx, id)
	if err != nil {
		t.Fatalf("token %s in the bucket: %v", id, err)
	}
	var k store.Key
	if err := json.Unmarshal(e.Value(), &k); err != nil {
		t.Fatal(err)
	}
	var fs store.KeyFields
	if !store.ScanKey(e.Value(), &fs) {
		t.Fatalf("the token record %s does not take the watcher's fast path", e.Value())
	}
	c := admin.CredentialOfFields(&fs, admin.Interner{})
	if c == nil {
		t.Fatalf("the token record %s is damaged", e.Value())
	}
	return k, e.Value(), c
}

// checkToken checks an issued token: in the set, verifiable, stored as a
// digest only, the same credential on another replica.
func (f *fixture) checkToken(t *testing.T, a answer) *authn.Credential {
	t.Helper()
	idb, err := authn.ParseToken([]byte(a.AccessToken))
	if err != nil {
		t.Fatalf("the access token %q: %v", a.AccessToken, err)
	}
	id := string(idb)
	c := f.tokens.Get(idb)
	if c == nil {
		t.Fatalf("the token %s is not in the set", id)
	}
	if got, err := f.tokenV.Token([]byte(a.AccessToken)); err != nil || got != c {
		t.Errorf("Verifier.Token(the issued token) = %v, %v", got, err)
	}
	k, raw, remote := f.stored(t, id)
	digest := sha256.Sum256([]byte(a.AccessToken))
	if k.Kind != store.KindToken || k.ID != id || k.Digest != hex.EncodeToString(digest[:]) || c.Digest != digest {
		t.Errorf("stored %+v; want kind token, id %s, the token's digest", k, id)
	}
	secret := a.AccessToken[len(authn.TokenPrefix)+17 : authn.TokenLen-6]
	if bytes.Contains(raw, []byte(a.AccessToken)) || bytes.Contains(raw, []byte(secret)) {
		t.Errorf("the bucket holds the token: %s", raw)
	}
	if k.Expires == nil || k.Expires.Sub(k.Created) != time.Duration(a.ExpiresIn)*time.Second {
		t.Errorf("stored created %v, expires %v; expires_in %d", k.Created, k.Expires, a.ExpiresIn)
	}
	if d := time.Until(*k.Expires) - time.Duration(a.ExpiresIn)*time.Second; d > 0 || d < -10*time.Second {
		t.Errorf("expires %v, %v from the expected", k.Expires, d)
	}
	sameCredential(t, "the watcher's credential", remote, c)
	return c
}

// sameCredential fails unless another replica's credential of a token
// grants what the issuing replica's does.
func sameCredential(t *testing.T, what string, got, want *authn.Credential) {
	t.Helper()
	gp, wp := got.Principal(), want.Principal()
	if got.ID != want.ID || got.Method != want.Method || got.Digest != want.Digest || got.Expires != want.Expires ||
		gp.Tenant != wp.Tenant || fmt.Sprint(gp.Tenants) != fmt.Sprint(wp.Tenants) || gp.Scopes != wp.Scopes ||
		gp.Modules != wp.Modules || gp.Credential != wp.Credential || gp.Subject != wp.Subject || gp.SubjectType != wp.SubjectType {
		t.Errorf("%s differs from the issuing replica's:\n got %+v %+v\nwant %+v %+v", what, got, gp, want, wp)
	}
}

func TestServe(t *testing.T) {
	f := newFixture(t)

	t.Run("client_credentials", func(t *testing.T) {
		for _, how := range []string{"basic", "form"} {
			r := proxy.OAuthRequest{Body: form("grant_type", "client_credentials")}
			if how == "basic" {
				r.Authorization = basicAuth(f.ccID, f.ccSecret)
			} else {
				r.Body = form("grant_type", "client_credentials", "client_id", f.ccID, "client_secret", f.ccSecret)
			}
			a := f.issue(t, r)
			if a.ExpiresIn != 300 || a.Scope != "CREATE READ" {
				t.Errorf("%s: %+v; want expires_in 300, scope CREATE READ", how, a)
			}
			c := f.checkToken(t, a)
			p := c.Principal()
			if p.Kind != access.KindBearer || p.Tenant != "acme" || p.Credential != f.ccID || p.Subject != "" ||
				p.Scopes != access.ScopeCreate|access.ScopeRead || p.Modules != access.AllModules {
				t.Errorf("%s: principal %+v", how, p)
			}
		}
		// A narrower scope is granted as asked.
		a := f.issue(t, proxy.OAuthRequest{Body: form("grant_type", "client_credentials", "scope", "READ"),
			Authorization: basicAuth(f.ccID, f.ccSecret)})
		if a.Scope != "READ" || f.checkToken(t, a).Scopes != access.ScopeRead {
			t.Errorf("scope READ: %+v", a)
		}
		// Parameters in the query string (legacy clients).
		a = f.issue(t, proxy.OAuthRequest{Query: form("grant_type", "client_credentials", "client_id", f.ccID, "client_secret", f.ccSecret)})
		f.checkToken(t, a)
	})

	t.Run("password", func(t *testing.T) {
		// Client CREATE READ (module m-a), bob READ UPDATE: READ.
		a := f.issue(t, proxy.OAuthRequest{Authorization: basicAuth(f.pwID, f.pwSecret),
			Body: form("grant_type", "password", "username", f.userBob, "password", password)})
		if a.Scope != "READ" {
			t.Errorf("scope %q, want READ (the client's CREATE READ and the user's READ UPDATE)", a.Scope)
		}
		c := f.checkToken(t, a)
		p := c.Principal()
		if p.Scopes != access.ScopeRead || p.Subject != f.userBob || p.SubjectType != "api_only" || p.Credential != f.pwID ||
			p.Tenant != "" || fmt.Sprint(p.Tenants) != "[beta gamma]" || p.Modules != access.ModuleNone|access.ModuleNamed("m-a") {
			t.Errorf("principal %+v", p)
		}
		// Asking for the shared scope: granted; for more: invalid_scope.
		a = f.issue(t, proxy.OAuthRequest{Authorization: basicAuth(f.pwID, f.pwSecret),
			Body: form("grant_type", "password", "username", f.userBob, "password", password, "scope", "READ")})
		f.checkToken(t, a)
		for _, sc := range []string{"CREATE", "UPDATE", "READ UPDATE", "DELETE"} {
			wantError(t, f.serve(t, proxy.OAuthRequest{Endpoint: proxy.OAuthToken, Authorization: basicAuth(f.pwID, f.pwSecret),
				Body: form("grant_type", "password", "username", f.userBob, "password", password, "scope", sc)}), 400, problems.CodeInvalidScope, "scope")
		}
		// carol holds DELETE only: nothing in common with the client.
		wantError(t, f.serve(t, proxy.OAuthRequest{Endpoint: proxy.OAuthToken, Authorization: basicAuth(f.pwID, f.pwSecret),
			Body: form("grant_type", "password", "username", f.userCarol, "password", password)}), 400, problems.CodeInvalidScope, "scope")
		// An API key as the client of the legacy password grant.
		a = f.issue(t, proxy.OAuthRequest{APIKey: []byte(f.apiKey),
			Body: form("grant_type", "password", "username", f.userBob, "password", password)})
		if a.Scope != "READ UPDATE" {
			t.Errorf("API key client: scope %q, want the user's READ UPDATE", a.Scope)
		}
		f.checkToken(t, a)
		// A wrong password: invalid_grant, nothing issued.
		n := f.tokens.Len()
		wantError(t, f.serve(t, proxy.OAuthRequest{Endpoint: proxy.OAuthToken, Authorization: basicAuth(f.pwID, f.pwSecret),
			Body: form("grant_type", "password", "username", f.userBob, "password", "wrong")}), 400, problems.CodeInvalidGrant, "password")
		wantError(t, f.serve(t, proxy.OAuthRequest{Endpoint: proxy.OAuthToken, Authorization: basicAuth(f.pwID, f.pwSecret),
			Body: form("grant_type", "password", "username", f.userBob)}), 400, problems.CodeInvalidRequest, "password")
		if f.tokens.Len() != n {
			t.Errorf("a token was put in the set after a refusal")
		}
	})

	t.Run("errors", func(t *testing.T) {
		cases := []struct {
			name   string
			r      proxy.OAuthRequest
			status int
			code   problems.Code
			field  string
		}{
			{"unknown scope", proxy.OAuthRequest{Authorization: basicAuth(f.ccID, f.ccSecret),
				Body: form("grant_type", "client_credentials", "scope", "READ ADMIN")}, 400, problems.CodeInvalidScope, "scope"},
			{"scope beyond the client's", proxy.OAuthRequest{Authorization: basicAuth(f.ccID, f.ccSecret),
				Body: form("grant_type", "client_credentials", "scope", "DELETE")}, 400, problems.CodeInvalidScope, "scope"},
			{"lower-case scope", proxy.OAuthRequest{Authorization: basicAuth(f.ccID, f.ccSecret),
				Body: form("grant_type", "client_credentials", "scope", "read")}, 400, problems.CodeInvalidScope, "scope"},
			{"client without the client_credentials grant", proxy.OAuthRequest{Authorization: basicAuth(f.noID, f.noSecret),
				Body: form("grant_type", "client_credentials")}, 400, problems.CodeUnauthorizedClient, "grant_type"},
			{"client without the password grant", proxy.OAuthRequest{Authorization: basicAuth(f.ccID, f.ccSecret),
				Body: form("grant_type", "password", "username", f.userBob, "password", password)}, 400, problems.CodeUnauthorizedClient, "grant_type"},
			{"API key with client_credentials", proxy.OAuthRequest{APIKey: []byte(f.apiKey),
				Body: form("grant_type", "client_credentials")}, 400, problems.CodeUnauthorizedClient, "grant_type"},
			{"no grant_type", proxy.OAuthRequest{Authorization: basicAuth(f.ccID, f.ccSecret)}, 400, problems.CodeInvalidRequest, "grant_type"},
			{"authorization_code", proxy.OAuthRequest{Authorization: basicAuth(f.ccID, f.ccSecret),
				Body: form("grant_type", "authorization_code", "code", "x")}, 400, problems.CodeUnsupportedGrantType, "grant_type"},
			{"two ways of authenticating", proxy.OAuthRequest{Authorization: basicAuth(f.ccID, f.ccSecret),
				Body: form("grant_type", "client_credentials", "client_id", f.ccID, "client_secret", f.ccSecret)}, 400, problems.CodeInvalidRequest, ""},
			{"Basic and another client_id", proxy.OAuthRequest{Authorization: basicAuth(f.ccID, f.ccSecret),
				Body: form("grant_type", "client_credentials", "client_id", f.pwID)}, 400, problems.CodeInvalidRequest, "client_id"},
			{"wrong secret", proxy.OAuthRequest{Authorization: basicAuth(f.ccID, f.pwSecret),
				Body: form("grant_type", "client_credentials")}, 401, problems.CodeInvalidClient, "Authorization"},
			{"wrong form secret", proxy.OAuthRequest{
				Body: form("grant_type", "client_credentials", "client_id", f.ccID, "client_secret", "x")}, 401, problems.CodeInvalidClient, "client_secret"},
			{"no client authentication", proxy.OAuthRequest{Body: form("grant_type", "client_credentials", "client_id", f.ccID)},
				401, problems.CodeInvalidClient, "client_id"},
			{"wrong API key", proxy.OAuthRequest{APIKey: []byte(f.apiKey[:len(f.apiKey)-1] + "x"),
				Body: form("grant_type", "password", "username", f.userBob, "password", password)}, 401, problems.CodeInvalidClient, "Api-Key"},
			{"repeated parameter", proxy.OAuthRequest{Authorization: basicAuth(f.ccID, f.ccSecret),
				Body: []byte("grant_type=client_credentials&scope=READ&scope=CREATE")}, 400, problems.CodeInvalidRequest, "scope"},
			{"GET", proxy.OAuthRequest{Method: "GET", Authorization: basicAuth(f.ccID, f.ccSecret),
				Query: form("grant_type", "client_credentials")}, 405, problems.CodeInvalidRequest, ""},
		}
		n := f.tokens.Len()
		for i, c := range cases {
			c.r.Endpoint = proxy.OAuthToken
			c.r.Addr = netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
			a := f.serve(t, c.r)
			t.Run(c.name, func(t *testing.T) { wantError(t, a, c.status, c.code, c.field) })
			if c.status == 401 && a.challenge == "" {
				t.Errorf("%s: 401 without a challenge", c.name)
			}
		}
		if f.tokens.Len() != n {
			t.Errorf("%d tokens issued by refused requests", f.tokens.Len()-n)
		}
	})

	t.Run("revoke", func(t *testing.T) {
		a := f.issue(t, proxy.OAuthRequest{Authorization: basicAuth(f.ccID, f.ccSecret), Body: form("grant_type", "client_credentials")})
		c := f.checkToken(t, a)
		revoke := func(id, secret, tok string, extra ...string) answer {
			return f.serve(t, proxy.OAuthRequest{Endpoint: proxy.OAuthRevoke, Authorization: basicAuth(id, secret),
				Body: form(append([]string{"token", tok}, extra...)...)})
		}
		// Another client may not revoke it.
		wantError(t, revoke(f.other, f.otherSecret, a.AccessToken), 400, problems.CodeUnauthorizedClient, "token")
		if f.tokens.Get([]byte(c.ID)) == nil {
			t.Fatal("another client's revocation removed the token")
		}
		f.stored(t, c.ID)
		wantError(t, revoke(f.ccID, f.ccSecret, a.AccessToken, "token_type_hint", "id_token"), 400, problems.CodeUnsupportedTokenType, "token_type_hint")
		wantError(t, revoke(f.ccID, f.pwSecret, a.AccessToken), 401, problems.CodeInvalidClient, "Authorization")
		wantError(t, f.serve(t, proxy.OAuthRequest{Endpoint: proxy.OAuthRevoke, Authorization: basicAuth(f.ccID, f.ccSecret)}),
			400, problems.CodeInvalidRequest, "token")

		if got := revoke(f.ccID, f.ccSecret, a.AccessToken, "token_type_hint", "access_token"); got.status != 200 || got.Error != "" {
			t.Fatalf("revoke: %+v", got)
		}
		if f.tokens.Get([]byte(c.ID)) != nil {
			t.Error("the revoked token is still in the set")
		}
		if _, err := f.tokenV.Token([]byte(a.AccessToken)); !errors.Is(err, authn.ErrInvalid) {
			t.Errorf("the revoked token verifies: %v", err)
		}
		ctx, cancel := f.st.Ctx(context.Background())
		defer cancel()
		if _, err := f.st.Tokens.Get(ctx, c.ID); !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
			t.Errorf("the revoked token in the bucket: %v", err)
		}
		// Again, an unknown token, and no token at all: 200 (RFC 7009 §2.2).
		for _, tok := range []string{a.AccessToken, "not a token", f.apiKey} {
			if got := revoke(f.ccID, f.ccSecret, tok); got.status != 200 {
				t.Errorf("revoke %q: %+v", tok, got)
			}
		}
	})

	t.Run("revoke on another replica", func(t *testing.T) {
		// Issued here, revoked by a replica whose set does not hold it
		// yet: found in the store, deleted there.
		a := f.issue(t, proxy.OAuthRequest{Authorization: basicAuth(f.ccID, f.ccSecret), Body: form("grant_type", "client_credentials")})
		c := f.checkToken(t, a)
		o := f.o
		o.Tokens = authn.NewSet()
		other := New(o)
		if got := other.Serve(proxy.OAuthRequest{Endpoint: proxy.OAuthRevoke, Method: "POST", ContentType: []byte(formType),
			Authorization: basicAuth(f.other, f.otherSecret), Body: form("token", a.AccessToken)}); got.Status != 400 {
			t.Errorf("another client's revocation on the other replica: %d %s", got.Status, got.Body)
		}
		if got := other.Serve(proxy.OAuthRequest{Endpoint: proxy.OAuthRevoke, Method: "POST", ContentType: []byte(formType),
			Authorization: basicAuth(f.ccID, f.ccSecret), Body: form("token", a.AccessToken)}); got.Status != 200 {
			t.Fatalf("revoke on the other replica: %d %s", got.Status, got.Body)
		}
		ctx, cancel := f.st.Ctx(context.Background())
		defer cancel()
		if _, err := f.st.Tokens.Get(ctx, c.ID); err == nil {
			t.Error("the token revoked on the other replica is still in the bucket")
		}
	})
}

// TestPlanTokenLifetime: a token for a tenant whose plan sets a token
// lifetime lives that long.
func TestPlanTokenLifetime(t *testing.T) {
	f := newFixture(t)
	// A client of tenant gamma (plan gold: 1 minute).
	id := authn.NewClient()
	secret, digest := authn.NewClientSecret()
	f.clients.Put(credentialOf(t, store.Key{ID: id, Kind: store.KindClient, Tenant: "gamma",
		Digest: hex.EncodeToString(digest[:]), Grants: []string{"client_credentials"}}))
	a := f.issue(t, proxy.OAuthRequest{Authorization: basicAuth(id, secret), Body: form("grant_type", "client_credentials")})
	if a.ExpiresIn != 60 || a.Scope != "CREATE READ UPDATE DELETE" {
		t.Errorf("gold plan: %+v; want expires_in 60, every scope", a)
	}
	f.checkToken(t, a)
}

// TestPasswordGrantModules: a token of the password grant is limited to
// the modules the client and the user share, on the issuing replica and
// on every other (which build it from the stored record).
func TestPasswordGrantModules(t *testing.T) {
	f := newFixture(t)
	// The client is limited to m-a; bob to none: m-a.
	a := f.issue(t, proxy.OAuthRequest{Authorization: basicAuth(f.pwID, f.pwSecret),
		Body: form("grant_type", "password", "username", f.userBob, "password", password)})
	if c := f.checkToken(t, a); c.Modules != access.ModuleNone|access.ModuleNamed("m-a") {
		t.Errorf("modules %b, want m-a", c.Modules)
	}
	// dan is limited to m-b: they share no module, and no token is
	// issued (a stored empty list would read as every module on the
	// replicas that build the token from its record).
	r := f.srv.Serve(proxy.OAuthRequest{Endpoint: proxy.OAuthToken, Method: "POST", ContentType: []byte(formType),
		Authorization: basicAuth(f.pwID, f.pwSecret), Body: form("grant_type", "password", "username", f.userDan, "password", password),
		Addr: netip.MustParseAddr("192.0.2.1")})
	if r.Status != 400 || !strings.Contains(string(r.Body), `"error":"invalid_scope"`) {
		t.Errorf("client of m-a, user of m-b: %d %s; want 400 invalid_scope", r.Status, r.Body)
	}
}

// BenchmarkIssue is the cost of one token issued with client_credentials
// through Serve, the write to the embedded store included (the store
// without fsync, as storetest opens it). It reports tokens/s for the
// wall clock and CPU-ns/op (this process's CPU time, the embedded NATS
// server's included, per token), so tokens/s/core = 1e9 / CPU-ns/op.
func BenchmarkIssue(b *testing.B) {
	f := newFixture(b)
	r := proxy.OAuthRequest{Endpoint: proxy.OAuthToken, Method: "POST", ContentType: []byte(formType),
		Authorization: basicAuth(f.ccID, f.ccSecret), Body: form("grant_type", "client_credentials"),
		Addr: netip.MustParseAddr("192.0.2.1")}
	if a := f.srv.Serve(r); a.Status != 200 {
		b.Fatalf("%d %s", a.Status, a.Body)
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	start := time.Now()
	n := 0
	for b.Loop() {
		if a := f.srv.Serve(r); a.Status != 200 {
			b.Fatalf("%d %s", a.Status, a.Body)
		}
		n++
	}
	wall, cpu := time.Since(start), cpuTime()-cpu0
	b.ReportMetric(float64(n)/wall.Seconds(), "tokens/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "CPU-ns/op")
	b.ReportMetric(float64(n)/cpu.Seconds(), "tokens/s/core")
}

// cpuTime is the CPU time this process has spent, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkTokenMemory reports what a live token costs in a replica's
// token set: n token records (1,000 clients; tenants of 100 tokens each)
// become credentials as the tokens mirror builds them (admin.CredentialOf)
// and go into a set; the live heap is compared with the heap before.
// "client_credentials" tokens have no user; "password" tokens a user of
// their own and two tenants.
func BenchmarkTokenMemory(b *testing.B) {
	const n = 100_000
	for _, kind := range []string{"client_credentials", "password"} {
		b.Run(kind, func(b *testing.B) {
			clients := make([]string, 1000)
			for i := range clients {
				clients[i] = authn.NewClient()
			}
			for b.Loop() {
				recs := make([]store.Key, n)
				now := time.Now().UTC()
				exp := now.Add(5 * time.Minute)
				for i := range recs {
					_, id, digest := authn.NewToken()
					recs[i] = store.Key{ID: id, Kind: store.KindToken, Client: clients[i%len(clients)],
						Tenant: fmt.Sprintf("tenant-%06d", i/100), Scopes: []string{"READ", "CREATE"},
						Digest: hex.EncodeToString(digest[:]), Created: now, Expires: &exp}
					if kind == "password" {
						recs[i].User = fmt.Sprintf("user-%07d@example.com", i)
						recs[i].Type = "api_only"
						recs[i].Tenant = ""
						recs[i].Tenants = []string{fmt.Sprintf("tenant-%06d", i/100), fmt.Sprintf("tenant-%06d", i/100+1)}
					}
				}
				before := liveHeap()
				set := authn.NewSet()
				for i := range recs {
					c := admin.CredentialOf(&recs[i])
					if c == nil {
						b.Fatalf("record %+v is damaged", recs[i])
					}
					set.Put(c)
				}
				after := liveHeap()
				if set.Len() != n {
					b.Fatalf("%d tokens in the set, want %d", set.Len(), n)
				}
				b.ReportMetric(float64(int64(after)-int64(before))/n, "B/token")
				runtime.KeepAlive(set)
				runtime.KeepAlive(recs)
			}
		})
	}
}

// TestClientTokenLifetime: a client's token_lifetime wins over its
// tenant's plan.
func TestClientTokenLifetime(t *testing.T) {
	f := newFixture(t)
	id := authn.NewClient()
	secret, digest := authn.NewClientSecret()
	f.clients.Put(credentialOf(t, store.Key{ID: id, Kind: store.KindClient, Tenant: "gamma", TokenLifetime: "90s",
		Digest: hex.EncodeToString(digest[:]), Grants: []string{"client_credentials"}}))
	a := f.issue(t, proxy.OAuthRequest{Authorization: basicAuth(id, secret), Body: form("grant_type", "client_credentials")})
	if a.ExpiresIn != 90 {
		t.Errorf("client of 90s on the gold plan (1m): expires_in %d, want 90", a.ExpiresIn)
	}
	f.checkToken(t, a)
}

// TestCountRequests: token requests do not count against the tenant's
// quota unless oauth.count_requests says so; then a refused admission
// refuses the token.
func TestCountRequests(t *testing.T) {
	f := newFixture(t)
	var admitted []string
	allow := true
	f.o.Admit = func(tenant string) bool { admitted = append(admitted, tenant); return allow }
	f.srv = New(f.o)
	req := proxy.OAuthRequest{Authorization: basicAuth(f.ccID, f.ccSecret), Body: form("grant_type", "client_credentials")}
	f.issue(t, req)
	if len(admitted) != 0 {
		t.Errorf("counted %v with count_requests off", admitted)
	}
	f.cfg.OAuth.CountRequests = true
	f.issue(t, req)
	if len(admitted) != 1 || admitted[0] != "acme" {
		t.Errorf("counted %v with count_requests on, want [acme]", admitted)
	}
	allow = false
	req.Endpoint = proxy.OAuthToken
	wantError(t, f.serve(t, req), 429, problems.CodeQuotaExceeded, "")
}

// TestPasswordGrantsCounted: each use of the password grant is counted
// under the client that made it.
func TestPasswordGrantsCounted(t *testing.T) {
	f := newFixture(t)
	f.o.PasswordGrants = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "g"}, []string{"client"})
	f.srv = New(f.o)
	for i := 0; i < 2; i++ {
		f.issue(t, proxy.OAuthRequest{Authorization: basicAuth(f.pwID, f.pwSecret),
			Body: form("grant_type", "password", "username", f.userBob, "password", password)})
	}
	f.serve(t, proxy.OAuthRequest{Endpoint: proxy.OAuthToken, Authorization: basicAuth(f.pwID, f.pwSecret),
		Body: form("grant_type", "password", "username", f.userBob, "password", "wrong")})
	if got := testutil.ToFloat64(f.o.PasswordGrants.WithLabelValues(f.pwID)); got != 3 {
		t.Errorf("password grants of %s: %v, want 3", f.pwID, got)
	}
	f.issue(t, proxy.OAuthRequest{Authorization: basicAuth(f.ccID, f.ccSecret), Body: form("grant_type", "client_credentials")})
	if got := testutil.ToFloat64(f.o.PasswordGrants.WithLabelValues(f.ccID)); got != 0 {
		t.Errorf("a client_credentials request counted as a password grant: %v", got)
	}
}
