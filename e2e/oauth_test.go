package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/echo"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// oauthReplica is a replica with the OAuth2 server on (the default
// paths) and bearer routes: /api (modules invoices and expenses),
// /companies (the tenant in the path) and /mixed (every kind). Tenants
// of plan short get tokens of one second. Password hashing is cheap and
// failures are not throttled per address, so that the tests are quick.
func oauthReplica(t *testing.T, upstream, natsAddr string, embedded bool) *instance {
	t.Helper()
	in := configured(t, sharedNATS(natsAddr, embedded), fmt.Sprintf(`log: {access: false}
auth: {basic: {argon2: {time: 1, memory: 8MiB, threads: 1}}, failures: {per_address: 0}}
modules:
  invoices: [/api/invoices]
  expenses: [/api/expenses]
plans:
  pro: {monthly_requests: 10000000}
  short: {monthly_requests: 10000000, token_lifetime: 1s}
routes:
  - {path_prefix: /api, upstream: http://%s, auth: [bearer]}
  - {path_prefix: /companies, upstream: http://%s, auth: [bearer], tenant_from: {path_segment: 2}}
  - {path_prefix: /mixed, upstream: http://%s, auth: [api_key, basic, bearer]}
`, upstream, upstream, upstream))
	return in
}

// oauthClient is an OAuth client (or an API key) made through the admin
// API.
type oauthClient struct {
	ID     string `json:"id"`
	Secret string `json:"client_secret"`
	Key    string `json:"key"`
}

// basicAuth is the Authorization of the client as RFC 6749 §2.3.1 says:
// id and secret form-encoded, joined by ':', base64-encoded.
func (c oauthClient) basicAuth() string {
	return basic(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))
}

func oauthMakeClient(t *testing.T, in *instance, tenant string, spec map[string]any) oauthClient {
	t.Helper()
	var c oauthClient
	if st := adminCall(t, in, "POST", "/v1/tenants/"+tenant+"/clients", spec, &c); st != 201 || c.ID == "" || c.Secret == "" {
		t.Fatalf("create client %v in %s: %d %+v", spec, tenant, st, c)
	}
	return c
}

func oauthMakeKey(t *testing.T, in *instance, tenant string, spec map[string]any) oauthClient {
	t.Helper()
	var c oauthClient
	if st := adminCall(t, in, "POST", "/v1/tenants/"+tenant+"/keys", spec, &c); st != 201 || c.Key == "" {
		t.Fatalf("create key %v in %s: %d %+v", spec, tenant, st, c)
	}
	return c
}

func oauthMakeTenants(t *testing.T, in *instance, plans map[string]string) {
	t.Helper()
	for id, plan := range plans {
		if st := adminCall(t, in, "POST", "/v1/tenants", map[string]any{"id": id, "plan": plan}, nil); st != 201 {
			t.Fatalf("create tenant %s: %d", id, st)
		}
	}
}

func oauthMakeUser(t *testing.T, in *instance, spec map[string]any) {
	t.Helper()
	var out map[string]any
	if st := adminCall(t, in, "POST", "/v1/users", spec, &out); st != 201 {
		t.Fatalf("create user %v: %d %v", spec["username"], st, out)
	}
}

// oresp is an answer of the proxy listener.
type oresp struct {
	status int
	header http.Header
	raw    []byte
	json   map[string]any
}

func (r oresp) str(name string) string { s, _ := r.json[name].(string); return s }

func (r oresp) String() string { return fmt.Sprintf("%d %s", r.status, r.raw) }

// oauthDo sends one request to in's proxy listener: ctype, when not
// empty, is the Content-Type of body; hdr are more header name, value
// pairs.
func oauthDo(t *testing.T, hc *http.Client, in *instance, method, path, query, ctype, body string, hdr ...string) oresp {
	t.Helper()
	u := "http://" + in.proxy + path
	if query != "" {
		u += "?" + query
	}
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := oresp{status: resp.StatusCode, header: resp.Header}
	r.raw, _ = io.ReadAll(resp.Body)
	if len(r.raw) > 0 {
		_ = json.Unmarshal(r.raw, &r.json)
	}
	return r
}

const formType = "application/x-www-form-urlencoded"

// oauthToken posts a form to the token endpoint.
func oauthToken(t *testing.T, hc *http.Client, in *instance, form string, hdr ...string) oresp {
	t.Helper()
	return oauthDo(t, hc, in, "POST", "/oauth/token", "", formType, form, hdr...)
}

// oauthRevoke posts a form to the revocation endpoint.
func oauthRevoke(t *testing.T, hc *http.Client, in *instance, form string, hdr ...string) oresp {
	t.Helper()
	return oauthDo(t, hc, in, "POST", "/oauth/revoke", "", formType, form, hdr...)
}

// issue gets a token of the client_credentials grant, the client
// authenticated with Basic.
func issue(t *testing.T, hc *http.Client, in *instance, c oauthClient, scope string) string {
	t.Helper()
	form := "grant_type=client_credentials"
	if scope != "" {
		form += "&scope=" + url.QueryEscape(scope)
	}
	return wantToken(t, oauthToken(t, hc, in, form, "Authorization", c.basicAuth()))
}

// wantToken checks a successful answer of the token endpoint (RFC 6749
// §5.1) and returns its access token.
func wantToken(t *testing.T, r oresp) string {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("token request: %s, want 200", r)
	}
	tok := r.str("access_token")
	if tok == "" || !strings.EqualFold(r.str("token_type"), "bearer") {
		t.Fatalf("token answer without access_token or with token_type other than Bearer: %s", r.raw)
	}
	if n, ok := r.json["expires_in"].(float64); !ok || n <= 0 {
		t.Errorf("expires_in: %v", r.json["expires_in"])
	}
	return tok
}

// descriptionOK says whether s uses only the characters RFC 6749 §5.2
// allows in error_description: %x20-21 / %x23-5B / %x5D-7E.
func descriptionOK(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// wantOAuthError checks an error answer of the token or revocation
// endpoint: RFC 6749 §5.2's fields in a JSON body, and tollgate's
// problems shape beside them.
func wantOAuthError(t *testing.T, r oresp, status int, code string) {
	t.Helper()
	if r.status != status || r.str("error") != code {
		t.Fatalf("got %s, want %d %s", r, status, code)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json (§5.2)", ct)
	}
	if d, ok := r.json["error_description"].(string); ok && !descriptionOK(d) {
		t.Errorf("error_description %q has characters outside %%x20-21 / %%x23-5B / %%x5D-7E (§5.2)", d)
	}
	if ok, _ := r.json["ok"].(bool); ok || r.json["ok"] == nil {
		t.Errorf("problems shape: ok = %v, want false", r.json["ok"])
	}
	if n, _ := r.json["status"].(float64); int(n) != status {
		t.Errorf("problems shape: status = %v, want %d", r.json["status"], status)
	}
	if ps, _ := r.json["problems"].([]any); len(ps) == 0 {
		t.Errorf("problems shape: no problems in %s", r.raw)
	}
}

// bearer calls a route with a bearer token.
func bearer(t *testing.T, hc *http.Client, in *instance, method, path, token string, hdr ...string) (oresp, echo.Reply) {
	t.Helper()
	r := oauthDo(t, hc, in, method, path, "", "", "", append([]string{"Authorization", "Bearer " + token}, hdr...)...)
	var e echo.Reply
	if r.status == 200 {
		_ = json.Unmarshal(r.raw, &e)
	}
	return r, e
}

// wantChallenge checks the WWW-Authenticate of a refused bearer token
// (RFC 6750 §3).
func wantChallenge(t *testing.T, r oresp, status int, errCode string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("got %s, want %d", r, status)
	}
	ch := r.header.Get("WWW-Authenticate")
	if !strings.HasPrefix(ch, "Bearer ") || !strings.Contains(ch, `error="`+errCode+`"`) {
		t.Errorf("WWW-Authenticate %q, want Bearer with error=%q", ch, errCode)
	}
}

func scopeSet(s string) []string {
	f := strings.Fields(s)
	slices.Sort(f)
	return f
}

// tokenRecorder passes requests on and records those to the token
// endpoint: how the client authenticated.
type tokenRecorder struct {
	mu   sync.Mutex
	reqs []recordedTokenRequest
}

type recordedTokenRequest struct {
	authorization string
	form          url.Values
}

func (rec *tokenRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path == "/oauth/token" && req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
		form, _ := url.ParseQuery(string(b))
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, recordedTokenRequest{authorization: req.Header.Get("Authorization"), form: form})
		rec.mu.Unlock()
	}
	return http.DefaultTransport.RoundTrip(req)
}

func (rec *tokenRecorder) take() []recordedTokenRequest {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	r := rec.reqs
	rec.reqs = nil
	return r
}

// TestOAuthInterop: golang.org/x/oauth2, the reference Go client, gets
// tokens from the real binary with each way of authenticating the
// client, and its HTTP clients call a bearer route with them; its
// password flow works for a client given the password grant.
func TestOAuthInterop(t *testing.T) {
	up := backend(t)
	in := oauthReplica(t, up, freeAddr(t), true)
	in.start()
	oauthMakeTenants(t, in, map[string]string{"acme": "pro"})
	cc := oauthMakeClient(t, in, "acme", map[string]any{"name": "reporting", "scopes": []string{"READ", "CREATE"}})
	pw := oauthMakeClient(t, in, "acme", map[string]any{"name": "legacy-erp", "scopes": []string{"READ", "CREATE"},
		"grants": []string{"password"}})
	oauthMakeUser(t, in, map[string]any{"username": "alice@acme.example", "password": "correct horse",
		"tenants": []string{"acme"}, "scopes": []string{"READ", "UPDATE"}})
	tokenURL := "http://" + in.proxy + "/oauth/token"
	rec := &tokenRecorder{}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: rec, Timeout: 10 * time.Second})

	get := func(t *testing.T, hc *http.Client, path string) echo.Reply {
		t.Helper()
		resp, err := hc.Get("http://" + in.proxy + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s with the library's client: %d %s", path, resp.StatusCode, b)
		}
		var r echo.Reply
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}

	styles := []struct {
		name  string
		style oauth2.AuthStyle
	}{{"AuthStyleAutoDetect", oauth2.AuthStyleAutoDetect}, {"AuthStyleInHeader", oauth2.AuthStyleInHeader}, {"AuthStyleInParams", oauth2.AuthStyleInParams}}
	for _, s := range styles {
		t.Run("client_credentials/"+s.name, func(t *testing.T) {
			cfg := clientcredentials.Config{ClientID: cc.ID, ClientSecret: cc.Secret, TokenURL: tokenURL, Scopes: []string{"READ"}, AuthStyle: s.style}
			rec.take()
			tok, err := cfg.Token(ctx)
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			if tok.AccessToken == "" || tok.Type() != "Bearer" || !tok.Valid() || time.Until(tok.Expiry) < time.Minute {
				t.Errorf("token %+v (type %q)", tok, tok.Type())
			}
			if sc, _ := tok.Extra("scope").(string); sc != "READ" {
				t.Errorf("scope %q, want READ", sc)
			}
			reqs := rec.take()
			if len(reqs) != 1 {
				t.Fatalf("%d token requests, want 1: %+v", len(reqs), reqs)
			}
			inHeader := strings.HasPrefix(reqs[0].authorization, "Basic ")
			inParams := reqs[0].form.Get("client_secret") != ""
			if wantHeader := s.style != oauth2.AuthStyleInParams; inHeader != wantHeader || inParams == wantHeader {
				t.Errorf("the library sent Authorization %q and form %v", reqs[0].authorization, reqs[0].form)
			}
			// The library's client gets a token of its own, once, and
			// reuses it.
			hc := cfg.Client(ctx)
			r := get(t, hc, "/api/invoices/1")
			if n := len(rec.take()); n != 1 {
				t.Errorf("%d token requests for the client's first call, want 1", n)
			}
			h := r.Headers
			if h["X-Tollgate-Auth"] != "bearer" || h["X-Tollgate-Credential"] != cc.ID || h["X-Tollgate-Tenant"] != "acme" ||
				h["X-Tollgate-Scopes"] != "READ" || h["Authorization"] != "" {
				t.Errorf("the backend saw %v", h)
			}
			get(t, hc, "/api/expenses/2")
			if n := len(rec.take()); n != 0 {
				t.Errorf("%d more token requests for a second call", n)
			}
			// CREATE was not asked for: POST is refused.
			resp, err := hc.Post("http://"+in.proxy+"/api/invoices", "application/json", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 403 {
				t.Errorf("POST with a READ token: %d, want 403", resp.StatusCode)
			}
		})
	}
	t.Run("client_credentials/errors", func(t *testing.T) {
		// The library reads RFC 6749 §5.2's fields of the errors.
		var re *oauth2.RetrieveError
		cfg := clientcredentials.Config{ClientID: cc.ID, ClientSecret: cc.Secret + "x", TokenURL: tokenURL}
		if _, err := cfg.Token(ctx); !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
			t.Errorf("a wrong secret: %v", err)
		}
		if n := len(rec.take()); n != 2 {
			t.Errorf("auto-detection tried %d ways, want 2 (header, then params)", n)
		}
		cfg = clientcredentials.Config{ClientID: cc.ID, ClientSecret: cc.Secret, TokenURL: tokenURL, Scopes: []string{"DELETE"}}
		if _, err := cfg.Token(ctx); !errors.As(err, &re) || re.ErrorCode != "invalid_scope" || re.Response.StatusCode != 400 {
			t.Errorf("a scope beyond the client's: %v", err)
		}
	})
	for _, s := range []struct {
		name  string
		style oauth2.AuthStyle
	}{{"AuthStyleAutoDetect", oauth2.AuthStyleAutoDetect}, {"AuthStyleInParams", oauth2.AuthStyleInParams}} {
		t.Run("password/"+s.name, func(t *testing.T) {
			conf := &oauth2.Config{ClientID: pw.ID, ClientSecret: pw.Secret, Endpoint: oauth2.Endpoint{TokenURL: tokenURL, AuthStyle: s.style}}
			rec.take()
			tok, err := conf.PasswordCredentialsToken(ctx, "alice@acme.example", "correct horse")
			if err != nil {
				t.Fatalf("PasswordCredentialsToken: %v", err)
			}
			if tok.Type() != "Bearer" || !tok.Valid() || tok.RefreshToken != "" {
				t.Errorf("token %+v", tok)
			}
			// The client holds READ and CREATE, the user READ and UPDATE.
			if sc, _ := tok.Extra("scope").(string); sc != "READ" {
				t.Errorf("scope %q, want READ (client ∩ user)", sc)
			}
			if reqs := rec.take(); len(reqs) != 1 || reqs[0].form.Get("grant_type") != "password" {
				t.Errorf("token requests: %+v", reqs)
			}
			r := get(t, conf.Client(ctx, tok), "/api/invoices/1")
			h := r.Headers
			if h["X-Tollgate-Auth"] != "bearer" || h["X-Tollgate-Credential"] != pw.ID || h["X-Tollgate-User"] != "alice@acme.example" ||
				h["X-Tollgate-Tenant"] != "acme" || h["X-Tollgate-Scopes"] != "READ" {
				t.Errorf("the backend saw %v", h)
			}
			var re *oauth2.RetrieveError
			if _, err := conf.PasswordCredentialsToken(ctx, "alice@acme.example", "wrong horse"); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
				t.Errorf("a wrong password: %v", err)
			}
		})
	}
	t.Run("password/client without the grant", func(t *testing.T) {
		conf := &oauth2.Config{ClientID: cc.ID, ClientSecret: cc.Secret, Endpoint: oauth2.Endpoint{TokenURL: tokenURL}}
		var re *oauth2.RetrieveError
		if _, err := conf.PasswordCredentialsToken(ctx, "alice@acme.example", "correct horse"); !errors.As(err, &re) || re.ErrorCode != "unauthorized_client" {
			t.Errorf("the password grant for a client without it: %v", err)
		}
	})
}

// percentEncode %-encodes the bytes of s at the positions where pick is
// true, in upper or lower case hexadecimal (both are valid).
func percentEncode(s string, pick func(i int) bool, lower bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if !pick(i) {
			b.WriteByte(s[i])
			continue
		}
		if lower {
			fmt.Fprintf(&b, "%%%02x", s[i])
		} else {
			fmt.Fprintf(&b, "%%%02X", s[i])
		}
	}
	return b.String()
}

// TestOAuthConformance walks the rules of RFC 6749 §2.3.1, §4.4, §5.1,
// §5.2 and §7.1, RFC 6750 §3.1 and RFC 7009 §2.1–2.2 against the real
// binary, one named case a rule.
func TestOAuthConformance(t *testing.T) {
	up := backend(t)
	in := oauthReplica(t, up, freeAddr(t), true)
	in.start()
	hc := &http.Client{Timeout: 10 * time.Second}
	oauthMakeTenants(t, in, map[string]string{"acme": "pro", "beta": "pro", "brief": "short"})
	rw := oauthMakeClient(t, in, "acme", map[string]any{"name": "rw", "scopes": []string{"READ", "CREATE"}})
	ro := oauthMakeClient(t, in, "acme", map[string]any{"name": "ro", "scopes": []string{"READ"}})
	other := oauthMakeClient(t, in, "beta", map[string]any{"name": "other", "scopes": []string{"READ"}})
	pwOnly := oauthMakeClient(t, in, "acme", map[string]any{"name": "pw-only", "grants": []string{"password"}})
	both := oauthMakeClient(t, in, "acme", map[string]any{"name": "both", "scopes": []string{"READ", "CREATE"},
		"grants": []string{"client_credentials", "password"}})
	mod := oauthMakeClient(t, in, "acme", map[string]any{"name": "invoices-only", "scopes": []string{"READ"}, "modules": []string{"invoices"}})
	short := oauthMakeClient(t, in, "brief", map[string]any{"name": "short", "scopes": []string{"READ"}})
	key := oauthMakeKey(t, in, "acme", map[string]any{"name": "plain"})
	oauthMakeUser(t, in, map[string]any{"username": "alice", "password": "correct horse", "tenants": []string{"acme"},
		"scopes": []string{"READ", "UPDATE"}})
	const alice = "&username=alice&password=correct+horse"
	unknownToken, _, _ := authn.NewToken() // well-formed, never issued
	tok := func(form string, hdr ...string) oresp {
		t.Helper()
		return oauthToken(t, hc, in, form, hdr...)
	}
	cc := "grant_type=client_credentials"
	wantBasicChallenge := func(t *testing.T, r oresp) {
		t.Helper()
		if ch := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(strings.ToLower(ch), "basic ") {
			t.Errorf("401 invalid_client to a client that used Basic: WWW-Authenticate %q, want the Basic scheme (§5.2)", ch)
		}
	}

	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		// RFC 6749 §4.4: the client credentials grant.
		{"6749 §4.4.2 client_credentials with the client authenticated by Basic", func(t *testing.T) {
			wantToken(t, tok(cc, "Authorization", rw.basicAuth()))
		}},
		{"6749 §4.4.2/§2.3.1 client_credentials with client_id and client_secret in the body", func(t *testing.T) {
			wantToken(t, tok(cc+"&client_id="+rw.ID+"&client_secret="+rw.Secret))
		}},
		{"6749 §4.4.2/§3.3 scope omitted: the client's scopes", func(t *testing.T) {
			r := tok(cc, "Authorization", rw.basicAuth())
			wantToken(t, r)
			if got := scopeSet(r.str("scope")); !slices.Equal(got, []string{"CREATE", "READ"}) {
				t.Errorf("scope %q, want CREATE READ", r.str("scope"))
			}
		}},
		{"6749 §4.4.2/§3.3 scope narrower than the client's: granted as asked", func(t *testing.T) {
			r := tok(cc+"&scope=READ", "Authorization", rw.basicAuth())
			wantToken(t, r)
			if r.str("scope") != "READ" {
				t.Errorf("scope %q, want READ", r.str("scope"))
			}
			rt, _ := bearer(t, hc, in, "POST", "/api/x", r.str("access_token"))
			wantChallenge(t, rt, 403, "insufficient_scope")
		}},
		{"6749 §3.3 scope is space-delimited and order-insensitive", func(t *testing.T) {
			r := tok(cc+"&scope=CREATE+READ", "Authorization", rw.basicAuth())
			wantToken(t, r)
			if got := scopeSet(r.str("scope")); !slices.Equal(got, []string{"CREATE", "READ"}) {
				t.Errorf("scope %q", r.str("scope"))
			}
		}},
		{"6749 §4.4.3 no refresh token", func(t *testing.T) {
			r := tok(cc, "Authorization", rw.basicAuth())
			wantToken(t, r)
			if _, ok := r.json["refresh_token"]; ok {
				t.Errorf("a refresh token was issued: %s", r.raw)
			}
		}},
		{"6749 §4.4 the client must authenticate", func(t *testing.T) {
			wantOAuthError(t, tok(cc), 401, "invalid_client")
		}},
		{"6749 §3.1/§3.2 a parameter sent without a value is as if left out", func(t *testing.T) {
			r := tok(cc+"&scope=", "Authorization", rw.basicAuth())
			wantToken(t, r)
			if got := scopeSet(r.str("scope")); !slices.Equal(got, []string{"CREATE", "READ"}) {
				t.Errorf("scope %q", r.str("scope"))
			}
		}},
		{"6749 §3.2 the token endpoint takes POST only", func(t *testing.T) {
			r := oauthDo(t, hc, in, "GET", "/oauth/token", cc, "", "", "Authorization", rw.basicAuth())
			wantOAuthError(t, r, 405, "invalid_request")
		}},
		{"9110 §15.5.6 a 405 of the token endpoint lists the allowed method (Allow: POST)", func(t *testing.T) {
			r := oauthDo(t, hc, in, "GET", "/oauth/token", cc, "", "", "Authorization", rw.basicAuth())
			if r.status != 405 || r.header.Get("Allow") != "POST" {
				t.Errorf("got %s with Allow %q, want 405 with Allow: POST", r, r.header.Get("Allow"))
			}
		}},
		{"6749 §3.2/App. B the form is application/x-www-form-urlencoded (charset parameter allowed)", func(t *testing.T) {
			r := oauthDo(t, hc, in, "POST", "/oauth/token", "", formType+"; charset=UTF-8", cc, "Authorization", rw.basicAuth())
			wantToken(t, r)
		}},
		{"6749 §3.2 a body of another media type is refused", func(t *testing.T) {
			r := oauthDo(t, hc, in, "POST", "/oauth/token", "", "application/json", `{"grant_type":"client_credentials"}`, "Authorization", rw.basicAuth())
			wantOAuthError(t, r, 400, "invalid_request")
		}},

		// RFC 6749 §5.1: the successful answer.
		{"6749 §5.1 access_token, token_type, expires_in and scope in a JSON object", func(t *testing.T) {
			r := tok(cc, "Authorization", ro.basicAuth())
			wantToken(t, r)
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q", ct)
			}
			if n, _ := r.json["expires_in"].(float64); n != 300 {
				t.Errorf("expires_in %v, want 300 (the 5m default)", r.json["expires_in"])
			}
			if r.str("scope") != "READ" {
				t.Errorf("scope %q", r.str("scope"))
			}
			if _, err := authn.ParseToken([]byte(r.str("access_token"))); err != nil {
				t.Errorf("access_token %q: %v", r.str("access_token"), err)
			}
		}},
		{"6749 §5.1 Cache-Control: no-store", func(t *testing.T) {
			r := tok(cc, "Authorization", ro.basicAuth())
			wantToken(t, r)
			if v := r.header.Values("Cache-Control"); len(v) != 1 || v[0] != "no-store" {
				t.Errorf("Cache-Control %q", v)
			}
		}},
		{"6749 §5.1 Pragma: no-cache", func(t *testing.T) {
			r := tok(cc, "Authorization", ro.basicAuth())
			wantToken(t, r)
			if v := r.header.Get("Pragma"); v != "no-cache" {
				t.Errorf("Pragma %q", v)
			}
		}},
		{"6749 §7.1/6750 §2.1 token_type Bearer, the scheme matched case-insensitively", func(t *testing.T) {
			r := tok(cc, "Authorization", ro.basicAuth())
			at := wantToken(t, r)
			if r.str("token_type") != "Bearer" {
				t.Errorf("token_type %q", r.str("token_type"))
			}
			for _, scheme := range []string{"Bearer", "bearer", "BEARER", "bEaReR"} {
				rt := oauthDo(t, hc, in, "GET", "/api/x", "", "", "", "Authorization", scheme+" "+at)
				if rt.status != 200 {
					t.Errorf("scheme %q: %s", scheme, rt)
				}
			}
		}},
		{"6749 §5.1 the password grant: a token of client ∩ user scopes", func(t *testing.T) {
			r := tok("grant_type=password"+alice, "Authorization", both.basicAuth())
			at := wantToken(t, r)
			if r.str("scope") != "READ" {
				t.Errorf("scope %q, want READ", r.str("scope"))
			}
			if rt, e := bearer(t, hc, in, "GET", "/api/x", at); rt.status != 200 || e.Headers["X-Tollgate-User"] != "alice" {
				t.Errorf("route: %s", rt)
			}
		}},

		// RFC 6749 §5.2: the errors.
		{"6749 §5.2 invalid_request: grant_type missing", func(t *testing.T) {
			wantOAuthError(t, tok("scope=READ", "Authorization", rw.basicAuth()), 400, "invalid_request")
		}},
		{"6749 §5.2 invalid_request: a parameter repeated in the body", func(t *testing.T) {
			wantOAuthError(t, tok(cc+"&"+cc, "Authorization", rw.basicAuth()), 400, "invalid_request")
		}},
		{"6749 §5.2 invalid_request: a parameter in both the query and the body", func(t *testing.T) {
			r := oauthDo(t, hc, in, "POST", "/oauth/token", "scope=READ", formType, cc+"&scope=READ", "Authorization", rw.basicAuth())
			wantOAuthError(t, r, 400, "invalid_request")
		}},
		{"6749 §5.2 invalid_request: the password grant without a password", func(t *testing.T) {
			wantOAuthError(t, tok("grant_type=password&username=alice", "Authorization", both.basicAuth()), 400, "invalid_request")
		}},
		{"6749 §5.2 invalid_request: Authorization sent twice", func(t *testing.T) {
			r := tok(cc, "Authorization", rw.basicAuth(), "Authorization", ro.basicAuth())
			wantOAuthError(t, r, 400, "invalid_request")
		}},
		{"6749 §5.2 invalid_client: a wrong secret with Basic, 401 and a Basic challenge", func(t *testing.T) {
			r := tok(cc, "Authorization", basic(rw.ID, rw.Secret[:len(rw.Secret)-1]+"x"))
			wantOAuthError(t, r, 401, "invalid_client")
			wantBasicChallenge(t, r)
		}},
		{"6749 §5.2 invalid_client: an unknown client with Basic, 401 and a Basic challenge", func(t *testing.T) {
			r := tok(cc, "Authorization", basic("tgc_nosuchclient", "secret"))
			wantOAuthError(t, r, 401, "invalid_client")
			wantBasicChallenge(t, r)
		}},
		{"6749 §5.2 invalid_client: a wrong client_secret in the body", func(t *testing.T) {
			wantOAuthError(t, tok(cc+"&client_id="+rw.ID+"&client_secret=wrong"), 401, "invalid_client")
		}},
		{"6749 §5.2 invalid_client: an unknown API key", func(t *testing.T) {
			wantOAuthError(t, tok("grant_type=password"+alice, "Api-Key", "tg_nosuchkey"), 401, "invalid_client")
		}},
		{"6749 §5.2 invalid_grant: a wrong password", func(t *testing.T) {
			wantOAuthError(t, tok("grant_type=password&username=alice&password=wrong+horse", "Authorization", both.basicAuth()), 400, "invalid_grant")
		}},
		{"6749 §5.2 invalid_grant: an unknown user, answered as a wrong password", func(t *testing.T) {
			a := tok("grant_type=password&username=nobody&password=correct+horse", "Authorization", both.basicAuth())
			wantOAuthError(t, a, 400, "invalid_grant")
			b := tok("grant_type=password&username=alice&password=wrong+horse", "Authorization", both.basicAuth())
			if !bytes.Equal(a.raw, b.raw) {
				t.Errorf("an unknown user and a wrong password answer differently:\n%s\n%s", a.raw, b.raw)
			}
		}},
		{"6749 §5.2 unauthorized_client: client_credentials for a client of the password grant only", func(t *testing.T) {
			wantOAuthError(t, tok(cc, "Authorization", pwOnly.basicAuth()), 400, "unauthorized_client")
		}},
		{"6749 §5.2 unauthorized_client: password for a client of client_credentials only", func(t *testing.T) {
			wantOAuthError(t, tok("grant_type=password"+alice, "Authorization", rw.basicAuth()), 400, "unauthorized_client")
		}},
		{"6749 §5.2 unauthorized_client: client_credentials for an API key", func(t *testing.T) {
			wantOAuthError(t, tok(cc, "Api-Key", key.Key), 400, "unauthorized_client")
		}},
		{"6749 §5.2 unsupported_grant_type: authorization_code", func(t *testing.T) {
			wantOAuthError(t, tok("grant_type=authorization_code&code=x&redirect_uri=https%3A%2F%2Fa.example%2F", "Authorization", rw.basicAuth()), 400, "unsupported_grant_type")
		}},
		{"6749 §5.2 unsupported_grant_type: an extension grant (§4.5)", func(t *testing.T) {
			wantOAuthError(t, tok("grant_type="+url.QueryEscape("urn:ietf:params:oauth:grant-type:jwt-bearer")+"&assertion=x", "Authorization", rw.basicAuth()), 400, "unsupported_grant_type")
		}},
		{"6749 §5.2 invalid_scope: beyond the client's scopes", func(t *testing.T) {
			wantOAuthError(t, tok(cc+"&scope=READ+DELETE", "Authorization", rw.basicAuth()), 400, "invalid_scope")
		}},
		{"6749 §5.2 invalid_scope: beyond the user's scopes (password grant)", func(t *testing.T) {
			wantOAuthError(t, tok("grant_type=password&scope=CREATE"+alice, "Authorization", both.basicAuth()), 400, "invalid_scope")
		}},
		{"6749 §5.2 invalid_scope: an unknown scope", func(t *testing.T) {
			wantOAuthError(t, tok(cc+"&scope=ADMIN", "Authorization", rw.basicAuth()), 400, "invalid_scope")
		}},
		{"6749 §5.2 error_description within %x20-21 / %x23-5B / %x5D-7E, whatever the request", func(t *testing.T) {
			// The unknown scope is named in the description: non-ASCII,
			// a quote and a backslash must not be echoed as they are.
			for _, scope := range []string{"ÉCRIRE", `"x"`, `y\z`} {
				wantOAuthError(t, tok(cc+"&scope="+url.QueryEscape(scope), "Authorization", rw.basicAuth()), 400, "invalid_scope")
			}
			// So is the name of a repeated parameter.
			wantOAuthError(t, tok(cc+"&sc%C3%A9pe=1&sc%C3%A9pe=2", "Authorization", rw.basicAuth()), 400, "invalid_request")
		}},

		// RFC 6749 §2.3.1: client password authentication.
		{"6749 §2.3.1 Basic with the id and secret %-encoded before base64", func(t *testing.T) {
			id := percentEncode(rw.ID, func(i int) bool { return i%3 == 0 }, false)
			secret := percentEncode(rw.Secret, func(i int) bool { return i%2 == 1 }, true)
			r := tok(cc, "Authorization", basic(id, secret))
			wantToken(t, r)
			if scopeSet(r.str("scope"))[0] != "CREATE" {
				t.Errorf("not rw's token: %s", r.raw)
			}
		}},
		{"6749 §2.3.1 Basic: a '+' in the form-encoded id is a space (no such client)", func(t *testing.T) {
			r := tok(cc, "Authorization", basic(rw.ID+"+", rw.Secret))
			wantOAuthError(t, r, 401, "invalid_client")
		}},
		{"6749 §2.3.1 two ways of authenticating: Basic and client_secret", func(t *testing.T) {
			wantOAuthError(t, tok(cc+"&client_id="+rw.ID+"&client_secret="+rw.Secret, "Authorization", rw.basicAuth()), 400, "invalid_request")
		}},
		{"6749 §2.3.1 two ways of authenticating: an API key and Basic", func(t *testing.T) {
			wantOAuthError(t, tok("grant_type=password"+alice, "Authorization", both.basicAuth(), "Api-Key", key.Key), 400, "invalid_request")
		}},
		{"6749 §2.3.1 client_id naming another client than Basic", func(t *testing.T) {
			wantOAuthError(t, tok(cc+"&client_id="+ro.ID, "Authorization", rw.basicAuth()), 400, "invalid_request")
		}},
		{"6749 §2.3.1 client_id repeating Basic's client", func(t *testing.T) {
			wantToken(t, tok(cc+"&client_id="+rw.ID, "Authorization", rw.basicAuth()))
		}},
		{"6749 §2.3.1/§5.2 Basic that is not base64: invalid_request", func(t *testing.T) {
			wantOAuthError(t, tok(cc, "Authorization", "Basic !!!"), 400, "invalid_request")
		}},

		// RFC 6750 §3: bearer tokens on a route.
		{"6750 §3 no token: 401 with a challenge without an error code", func(t *testing.T) {
			r := oauthDo(t, hc, in, "GET", "/api/x", "", "", "")
			if r.status != 401 {
				t.Fatalf("got %s", r)
			}
			if ch := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, "Bearer ") || strings.Contains(ch, "error=") {
				t.Errorf("WWW-Authenticate %q, want Bearer without error (§3.1)", ch)
			}
		}},
		{"6750 §3.1 invalid_token: a token never issued", func(t *testing.T) {
			r, _ := bearer(t, hc, in, "GET", "/api/x", unknownToken)
			wantChallenge(t, r, 401, "invalid_token")
		}},
		{"6750 §3.1 invalid_token: a malformed token", func(t *testing.T) {
			r, _ := bearer(t, hc, in, "GET", "/api/x", "tgt_not-a-token")
			wantChallenge(t, r, 401, "invalid_token")
		}},
		{"6750 §3.1 invalid_token: an expired token", func(t *testing.T) {
			r := tok(cc, "Authorization", short.basicAuth())
			at := wantToken(t, r)
			if n, _ := r.json["expires_in"].(float64); n != 1 {
				t.Errorf("expires_in %v, want 1 (plan short)", r.json["expires_in"])
			}
			if rt, _ := bearer(t, hc, in, "GET", "/api/x", at); rt.status != 200 {
				t.Fatalf("before it expired: %s", rt)
			}
			time.Sleep(1200 * time.Millisecond)
			rt, _ := bearer(t, hc, in, "GET", "/api/x", at)
			wantChallenge(t, rt, 401, "invalid_token")
		}},
		{"6750 §3.1 insufficient_scope: the method's scope is not the token's", func(t *testing.T) {
			at := issue(t, hc, in, ro, "")
			if rt, _ := bearer(t, hc, in, "GET", "/api/x", at); rt.status != 200 {
				t.Fatalf("GET: %s", rt)
			}
			rt, _ := bearer(t, hc, in, "DELETE", "/api/x", at)
			wantChallenge(t, rt, 403, "insufficient_scope")
		}},
		{"6750 §3.1 insufficient_scope: a module the token may not use", func(t *testing.T) {
			at := issue(t, hc, in, mod, "")
			if rt, _ := bearer(t, hc, in, "GET", "/api/invoices/1", at); rt.status != 200 {
				t.Fatalf("its module: %s", rt)
			}
			rt, _ := bearer(t, hc, in, "GET", "/api/expenses/1", at)
			wantChallenge(t, rt, 403, "insufficient_scope")
		}},
		{"6750 §2.1 the token is not passed to the backend", func(t *testing.T) {
			at := issue(t, hc, in, ro, "")
			rt, e := bearer(t, hc, in, "GET", "/mixed/x", at)
			if rt.status != 200 || e.Headers["Authorization"] != "" || e.Headers["X-Tollgate-Auth"] != "bearer" {
				t.Errorf("got %s", rt)
			}
		}},

		// RFC 7009: revocation.
		{"7009 §2.1–2.2 a valid token: 200, then refused on the route", func(t *testing.T) {
			at := issue(t, hc, in, rw, "")
			if rt, _ := bearer(t, hc, in, "GET", "/api/x", at); rt.status != 200 {
				t.Fatalf("before: %s", rt)
			}
			r := oauthRevoke(t, hc, in, "token="+at, "Authorization", rw.basicAuth())
			if r.status != 200 {
				t.Fatalf("revoke: %s", r)
			}
			rt, _ := bearer(t, hc, in, "GET", "/api/x", at)
			wantChallenge(t, rt, 401, "invalid_token")
		}},
		{"7009 §2.1 token_type_hint=access_token", func(t *testing.T) {
			at := issue(t, hc, in, rw, "")
			if r := oauthRevoke(t, hc, in, "token="+at+"&token_type_hint=access_token", "Authorization", rw.basicAuth()); r.status != 200 {
				t.Fatalf("revoke: %s", r)
			}
			rt, _ := bearer(t, hc, in, "GET", "/api/x", at)
			wantChallenge(t, rt, 401, "invalid_token")
		}},
		{"7009 §2.1 a wrong token_type_hint does not stop the search", func(t *testing.T) {
			at := issue(t, hc, in, rw, "")
			if r := oauthRevoke(t, hc, in, "token="+at+"&token_type_hint=refresh_token", "Authorization", rw.basicAuth()); r.status != 200 {
				t.Fatalf("revoke: %s", r)
			}
			rt, _ := bearer(t, hc, in, "GET", "/api/x", at)
			wantChallenge(t, rt, 401, "invalid_token")
		}},
		{"7009 §2.1 the client authenticates with client_id and client_secret in the body", func(t *testing.T) {
			at := issue(t, hc, in, ro, "")
			if r := oauthRevoke(t, hc, in, "token="+at+"&client_id="+ro.ID+"&client_secret="+ro.Secret); r.status != 200 {
				t.Fatalf("revoke: %s", r)
			}
			rt, _ := bearer(t, hc, in, "GET", "/api/x", at)
			wantChallenge(t, rt, 401, "invalid_token")
		}},
		{"7009 §2.2 a token already revoked: 200", func(t *testing.T) {
			at := issue(t, hc, in, rw, "")
			for i := 0; i < 2; i++ {
				if r := oauthRevoke(t, hc, in, "token="+at, "Authorization", rw.basicAuth()); r.status != 200 {
					t.Fatalf("revoke %d: %s", i+1, r)
				}
			}
		}},
		{"7009 §2.2 an unknown token: 200", func(t *testing.T) {
			if r := oauthRevoke(t, hc, in, "token="+unknownToken, "Authorization", rw.basicAuth()); r.status != 200 {
				t.Errorf("got %s", r)
			}
		}},
		{"7009 §2.2 a malformed token: 200", func(t *testing.T) {
			if r := oauthRevoke(t, hc, in, "token=not-a-token", "Authorization", rw.basicAuth()); r.status != 200 {
				t.Errorf("got %s", r)
			}
		}},
		{"7009 §2.1 another client's token is refused, and still works", func(t *testing.T) {
			at := issue(t, hc, in, ro, "")
			r := oauthRevoke(t, hc, in, "token="+at, "Authorization", other.basicAuth())
			wantOAuthError(t, r, 400, "unauthorized_client")
			if rt, _ := bearer(t, hc, in, "GET", "/api/x", at); rt.status != 200 {
				t.Errorf("the token after another client's revocation: %s", rt)
			}
		}},
		{"7009 §2.1 unauthenticated: 401 invalid_client, the token still works", func(t *testing.T) {
			at := issue(t, hc, in, ro, "")
			r := oauthRevoke(t, hc, in, "token="+at)
			wantOAuthError(t, r, 401, "invalid_client")
			if rt, _ := bearer(t, hc, in, "GET", "/api/x", at); rt.status != 200 {
				t.Errorf("the token after an unauthenticated revocation: %s", rt)
			}
		}},
		{"7009 §2.1 wrong client credentials with Basic: 401 invalid_client and a Basic challenge", func(t *testing.T) {
			at := issue(t, hc, in, ro, "")
			r := oauthRevoke(t, hc, in, "token="+at, "Authorization", basic(ro.ID, "wrong"))
			wantOAuthError(t, r, 401, "invalid_client")
			wantBasicChallenge(t, r)
		}},
		{"7009 §2.1 token missing: invalid_request", func(t *testing.T) {
			wantOAuthError(t, oauthRevoke(t, hc, in, "token_type_hint=access_token", "Authorization", rw.basicAuth()), 400, "invalid_request")
		}},
		{"7009 §2.2.1 unsupported_token_type", func(t *testing.T) {
			at := issue(t, hc, in, rw, "")
			r := oauthRevoke(t, hc, in, "token="+at+"&token_type_hint=id_token", "Authorization", rw.basicAuth())
			wantOAuthError(t, r, 400, "unsupported_token_type")
		}},
		{"7009 §2.1 the revocation endpoint takes POST only", func(t *testing.T) {
			r := oauthDo(t, hc, in, "GET", "/oauth/revoke", "token="+unknownToken, "", "", "Authorization", rw.basicAuth())
			wantOAuthError(t, r, 405, "invalid_request")
		}},
	}
	t.Logf("conformance cases: %d", len(cases))
	for _, c := range cases {
		t.Run(c.name, c.run)
	}
}

// TestOAuthLegacyPasswordShapes: the shapes legacy clients of the
// password grant send: an API key in the Api-Key header with the user in
// the form; client id, secret, user and password all in the form; and
// all in the query string of a POST with an empty body.
func TestOAuthLegacyPasswordShapes(t *testing.T) {
	up := backend(t)
	in := oauthReplica(t, up, freeAddr(t), true)
	in.start()
	hc := &http.Client{Timeout: 10 * time.Second}
	oauthMakeTenants(t, in, map[string]string{"acme": "pro"})
	pwKey := oauthMakeKey(t, in, "acme", map[string]any{"name": "legacy-key", "grants": []string{"password"}})
	plainKey := oauthMakeKey(t, in, "acme", map[string]any{"name": "plain-key"})
	pw := oauthMakeClient(t, in, "acme", map[string]any{"name": "legacy-client", "grants": []string{"password"}})
	oauthMakeUser(t, in, map[string]any{"username": "bob@acme.example", "password": "correct horse", "tenants": []string{"acme"},
		"scopes": []string{"READ", "CREATE"}})
	user := url.Values{"grant_type": {"password"}, "username": {"bob@acme.example"}, "password": {"correct horse"}}.Encode()
	withClient := url.Values{"grant_type": {"password"}, "username": {"bob@acme.example"}, "password": {"correct horse"},
		"client_id": {pw.ID}, "client_secret": {pw.Secret}}.Encode()

	works := func(t *testing.T, r oresp, credential string) {
		t.Helper()
		at := wantToken(t, r)
		if got := scopeSet(r.str("scope")); !slices.Equal(got, []string{"CREATE", "READ"}) {
			t.Errorf("scope %q, want CREATE READ", r.str("scope"))
		}
		rt, e := bearer(t, hc, in, "POST", "/api/invoices", at)
		if rt.status != 200 {
			t.Fatalf("the token on a route: %s", rt)
		}
		h := e.Headers
		if h["X-Tollgate-Auth"] != "bearer" || h["X-Tollgate-Credential"] != credential || h["X-Tollgate-User"] != "bob@acme.example" ||
			h["X-Tollgate-Tenant"] != "acme" {
			t.Errorf("the backend saw %v", h)
		}
	}

	t.Run("Api-Key header, user in the form", func(t *testing.T) {
		works(t, oauthToken(t, hc, in, user, "Api-Key", pwKey.Key), pwKey.ID)
	})
	t.Run("Api-Key header, user in the query string", func(t *testing.T) {
		works(t, oauthDo(t, hc, in, "POST", "/oauth/token", user, "", "", "Api-Key", pwKey.Key), pwKey.ID)
	})
	t.Run("Api-Key header of a key without the password grant", func(t *testing.T) {
		wantOAuthError(t, oauthToken(t, hc, in, user, "Api-Key", plainKey.Key), 400, "unauthorized_client")
	})
	t.Run("Api-Key header of an unknown key", func(t *testing.T) {
		wantOAuthError(t, oauthToken(t, hc, in, user, "Api-Key", "tg_000000000000_00000000000000000000000000000000000000"), 401, "invalid_client")
	})
	t.Run("Api-Key header, wrong password", func(t *testing.T) {
		bad := url.Values{"grant_type": {"password"}, "username": {"bob@acme.example"}, "password": {"wrong"}}.Encode()
		wantOAuthError(t, oauthToken(t, hc, in, bad, "Api-Key", pwKey.Key), 400, "invalid_grant")
	})
	t.Run("client_id, client_secret, username, password in the form", func(t *testing.T) {
		works(t, oauthToken(t, hc, in, withClient), pw.ID)
	})
	t.Run("all in the query string of a POST with an empty body", func(t *testing.T) {
		works(t, oauthDo(t, hc, in, "POST", "/oauth/token", withClient, "", ""), pw.ID)
	})
	t.Run("all in the query string, empty body with a form Content-Type", func(t *testing.T) {
		works(t, oauthDo(t, hc, in, "POST", "/oauth/token", withClient, formType, ""), pw.ID)
	})
	t.Run("split between the query string and the form", func(t *testing.T) {
		q := url.Values{"client_id": {pw.ID}, "client_secret": {pw.Secret}}.Encode()
		works(t, oauthDo(t, hc, in, "POST", "/oauth/token", q, formType, user), pw.ID)
	})
}

// TestOAuthScenario2: a user of two tenants gets a token with the
// password grant through a legacy client's API key; the token lists both
// tenants and acts for either, named with X-Tenant, and for no other.
func TestOAuthScenario2(t *testing.T) {
	up := backend(t)
	in := oauthReplica(t, up, freeAddr(t), true)
	in.start()
	hc := &http.Client{Timeout: 10 * time.Second}
	oauthMakeTenants(t, in, map[string]string{"acme": "pro", "beta": "pro", "gamma": "pro"})
	key := oauthMakeKey(t, in, "acme", map[string]any{"name": "erp", "grants": []string{"password"}})
	oauthMakeUser(t, in, map[string]any{"username": "carol@example.com", "password": "correct horse", "type": "api_only",
		"tenants": []string{"acme", "beta"}, "scopes": []string{"READ", "UPDATE"}})
	form := url.Values{"grant_type": {"password"}, "username": {"carol@example.com"}, "password": {"correct horse"}}.Encode()
	r := oauthToken(t, hc, in, form, "Api-Key", key.Key)
	at := wantToken(t, r)
	if got := scopeSet(r.str("scope")); !slices.Equal(got, []string{"READ", "UPDATE"}) {
		t.Errorf("scope %q, want READ UPDATE", r.str("scope"))
	}

	lr := oauthDo(t, hc, in, "GET", "/oauth/tenants", "", "", "", "Authorization", "Bearer "+at)
	var list struct {
		Total    *int    `json:"total"`
		Position *int    `json:"position"`
		Size     *int    `json:"size"`
		OrderBy  *string `json:"orderBy"`
		Desc     *bool   `json:"desc"`
		Items    []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	if lr.status != 200 || json.Unmarshal(lr.raw, &list) != nil {
		t.Fatalf("GET /oauth/tenants: %s", lr)
	}
	var ids []string
	for _, it := range list.Items {
		ids = append(ids, it.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"acme", "beta"}) || list.Total == nil || *list.Total != 2 || list.Position == nil ||
		list.Size == nil || list.OrderBy == nil || list.Desc == nil {
		t.Errorf("GET /oauth/tenants: %s, want the list shape with acme and beta", lr.raw)
	}
	if nr := oauthDo(t, hc, in, "GET", "/oauth/tenants", "", "", ""); nr.status != 401 {
		t.Errorf("GET /oauth/tenants without a token: %s", nr)
	}

	for _, tenant := range []string{"acme", "beta"} {
		for _, method := range []string{"GET", "PATCH"} {
			rt, e := bearer(t, hc, in, method, "/api/orders/1", at, "X-Tenant", tenant)
			if rt.status != 200 {
				t.Errorf("%s for %s: %s", method, tenant, rt)
				continue
			}
			h := e.Headers
			if h["X-Tollgate-Tenant"] != tenant || h["X-Tollgate-User"] != "carol@example.com" || h["X-Tollgate-Auth"] != "bearer" ||
				h["X-Tollgate-Credential"] != key.ID || h["X-Tenant"] != "" && h["X-Tenant"] != tenant {
				t.Errorf("%s for %s: the backend saw %v", method, tenant, h)
			}
		}
		if rt, e := bearer(t, hc, in, "GET", "/companies/"+tenant+"/orders", at); rt.status != 200 || e.Headers["X-Tollgate-Tenant"] != tenant {
			t.Errorf("the tenant %s in the path: %s", tenant, rt)
		}
	}
	if rt, _ := bearer(t, hc, in, "GET", "/api/orders/1", at, "X-Tenant", "gamma"); rt.status != 403 {
		t.Errorf("a third tenant: %s, want 403", rt)
	}
	if rt, _ := bearer(t, hc, in, "GET", "/companies/gamma/orders", at); rt.status != 403 {
		t.Errorf("a third tenant in the path: %s, want 403", rt)
	}
	if rt, _ := bearer(t, hc, in, "GET", "/api/orders/1", at); rt.status != 400 {
		t.Errorf("no X-Tenant: %s, want 400", rt)
	}
	if rt, _ := bearer(t, hc, in, "POST", "/api/orders", at, "X-Tenant", "acme"); rt.status != 403 {
		t.Errorf("CREATE, which the user lacks: %s, want 403", rt)
	}
}

// TestOAuthAcrossReplicas: three replicas on one NATS. A token issued
// through A works on B and C at once; revoked through A, it fails on B
// and C within a second (p99 of 200 revocations); a token issued through
// A and revoked through B fails everywhere; the tokens of a client
// deleted through A fail everywhere.
func TestOAuthAcrossReplicas(t *testing.T) {
	const (
		n      = 200
		target = time.Second
		limit  = 5 * time.Second // one revocation, before it counts as failed
		budget = 60 * time.Second
	)
	start := time.Now()
	up := backend(t)
	natsAddr := freeAddr(t)
	a := oauthReplica(t, up, natsAddr, true)
	a.start()
	b, c := oauthReplica(t, up, natsAddr, false), oauthReplica(t, up, natsAddr, false)
	b.spawn()
	c.spawn()
	b.waitReady()
	c.waitReady()
	all, others := []*instance{a, b, c}, []*instance{b, c}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	oauthMakeTenants(t, a, map[string]string{"acme": "pro"})
	cl := oauthMakeClient(t, a, "acme", map[string]any{"name": "sync", "scopes": []string{"READ"}})
	t.Logf("three replicas ready in %v", time.Since(start).Round(time.Millisecond))

	t.Run("issued through A, works on B and C at once", func(t *testing.T) {
		at := issue(t, hc, a, cl, "")
		for _, in := range others {
			if rt, e := bearer(t, hc, in, "GET", "/api/x", at); rt.status != 200 || e.Headers["X-Tollgate-Credential"] != cl.ID {
				t.Errorf("the first request on %s: %s", in.proxy, rt)
			}
		}
	})

	t.Run("revoked through A, fails on B and C", func(t *testing.T) {
		ctx, cancel := context.WithDeadline(context.Background(), start.Add(budget))
		defer cancel()
		var (
			lat                 []time.Duration // from sending the revocation to the last of B and C refusing
			perReplica          []time.Duration
			notAtOnce, timedOut int
		)
		loopStart := time.Now()
		for i := 0; i < n && ctx.Err() == nil; i++ {
			at := issue(t, hc, a, cl, "")
			for _, in := range others {
				if rt, _ := bearer(t, hc, in, "GET", "/api/x", at); rt.status != 200 {
					notAtOnce++
					t.Logf("revocation %d: the first request on %s: %s", i, in.proxy, rt)
				}
			}
			since := time.Now()
			if r := oauthRevoke(t, hc, a, "token="+at, "Authorization", cl.basicAuth()); r.status != 200 {
				t.Fatalf("revocation %d: %s", i, r)
			}
			pending := map[*instance]bool{b: true, c: true}
			var last time.Duration
			for len(pending) > 0 {
				for _, in := range others {
					if !pending[in] {
						continue
					}
					rt, _ := bearer(t, hc, in, "GET", "/api/x", at)
					switch rt.status {
					case 401:
						d := time.Since(since)
						perReplica = append(perReplica, d)
						last = max(last, d)
						delete(pending, in)
					case 200:
					default:
						t.Errorf("revocation %d on %s: %s", i, in.proxy, rt)
					}
				}
				if len(pending) == 0 {
					break
				}
				if time.Since(since) > limit || ctx.Err() != nil {
					timedOut++
					last = limit
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			lat = append(lat, last)
		}
		t.Logf("%d revocations in %v (B and C each: %s); the last of B and C refusing, from the revocation sent: p50=%v p99=%v max=%v",
			len(lat), time.Since(loopStart).Round(time.Millisecond), revocationSummary(perReplica),
			percentile(lat, 50), percentile(lat, 99), percentile(lat, 100))
		if len(lat) < n {
			t.Errorf("only %d of %d revocations within the test's %v", len(lat), n, budget)
		}
		if notAtOnce > 0 {
			t.Errorf("%d first requests on B or C of a token just issued through A were refused", notAtOnce)
		}
		if timedOut > 0 {
			t.Errorf("%d revoked tokens still worked on B or C after %v", timedOut, limit)
		}
		if p99 := percentile(lat, 99); p99 > target {
			t.Errorf("p99 %v > %v", p99, target)
		}
	})

	t.Run("issued through A, revoked through B", func(t *testing.T) {
		at := issue(t, hc, a, cl, "")
		if r := oauthRevoke(t, hc, b, "token="+at, "Authorization", cl.basicAuth()); r.status != 200 {
			t.Fatalf("revoke through B: %s", r)
		}
		waitStatus(t, hc, all, 401, 2*time.Second, "GET", "/api/x", "Authorization", "Bearer "+at)
	})

	t.Run("client deleted through A: its tokens fail on A, B and C", func(t *testing.T) {
		doomed := oauthMakeClient(t, a, "acme", map[string]any{"name": "doomed", "scopes": []string{"READ"}})
		at := issue(t, hc, a, doomed, "")
		for _, in := range all {
			if rt, _ := bearer(t, hc, in, "GET", "/api/x", at); rt.status != 200 {
				t.Fatalf("before the deletion, on %s: %s", in.proxy, rt)
			}
		}
		if st := adminCall(t, a, "DELETE", "/v1/tenants/acme/clients/"+doomed.ID, nil, nil); st != 204 {
			t.Fatalf("delete the client: %d", st)
		}
		deadline := time.Now().Add(2 * time.Second)
		for _, in := range all {
			for {
				rt, _ := bearer(t, hc, in, "GET", "/api/x", at)
				if rt.status == 401 {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("a token of the deleted client on %s: %s 2s after the deletion, want 401", in.proxy, rt)
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		// A new token is refused: the client is gone.
		wantOAuthError(t, oauthToken(t, hc, b, "grant_type=client_credentials", "Authorization", doomed.basicAuth()), 401, "invalid_client")
	})
	if d := time.Since(start); d > budget+10*time.Second {
		t.Errorf("the test took %v", d)
	}
}
