package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/echo"
)

// credReplica is a replica of the credentials test: routes of every kind
// of authorization, modules, tenant selection by header and by path.
func credReplica(t *testing.T, upstream, natsAddr string, embedded bool) *instance {
	t.Helper()
	in := configured(t, sharedNATS(natsAddr, embedded), fmt.Sprintf(`log: {access: false}
auth:
  basic: {argon2: {time: 1, memory: 8MiB, threads: 1}}
  failures: {per_address: 40, per_username: 5, window: 1m}
modules:
  invoices: [/api/invoices]
  expenses: [/api/expenses]
plans:
  pro: {monthly_requests: 100000}
routes:
  - {path_prefix: /api, upstream: http://%s, auth: [api_key, basic]}
  - {path_prefix: /companies, upstream: http://%s, auth: [basic], tenant_from: {path_segment: 2}}
  - {path_prefix: /search, upstream: http://%s, auth: [api_key, basic], scopes: {POST: READ}, tenant_from: {header: X-Company}}
`, upstream, upstream, upstream))
	return in
}

// adminCall sends a JSON request to in's admin API and decodes the answer
// into out (when not nil); it returns the status.
func adminCall(t *testing.T, in *instance, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+in.admin+path, rd)
	req.Header.Set("Authorization", "Bearer "+replicaToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode
}

func basic(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// call sends one request to in's proxy and returns the status, the echo
// backend's view of it (when it got there) and the body.
func call(t *testing.T, hc *http.Client, in *instance, method, path string, hdr ...string) (int, echo.Reply, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+in.proxy+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r echo.Reply
	if resp.StatusCode == 200 {
		_ = json.Unmarshal(b, &r)
	}
	return resp.StatusCode, r, b
}

// waitStatus polls until the request answers want on every replica, and
// fails the test after limit.
func waitStatus(t *testing.T, hc *http.Client, ins []*instance, want int, limit time.Duration, method, path string, hdr ...string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for _, in := range ins {
		for {
			got, _, body := call(t, hc, in, method, path, hdr...)
			if got == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s %s on %s: %d %s, want %d within %v", method, path, in.proxy, got, body, want, limit)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestCredentialsAcrossReplicas: a user, a key and a client created
// through replica A work on B and C with their tenants, scopes and modules;
// regenerated with and without grace, changed and deleted through A, they
// stop on B and C.
func TestCredentialsAcrossReplicas(t *testing.T) {
	up := backend(t)
	natsAddr := freeAddr(t)
	a := credReplica(t, up, natsAddr, true)
	a.start()
	b, c := credReplica(t, up, natsAddr, false), credReplica(t, up, natsAddr, false)
	b.start()
	c.start()
	all, others := []*instance{a, b, c}, []*instance{b, c}
	hc := &http.Client{Timeout: 10 * time.Second}
	for _, id := range []string{"acme", "beta", "gamma"} {
		if st := adminCall(t, a, "POST", "/v1/tenants", map[string]any{"id": id, "plan": "pro"}, nil); st != 201 {
			t.Fatalf("create tenant %s: %d", id, st)
		}
	}

	// A user of two tenants, READ and UPDATE only, API only.
	var user map[string]any
	if st := adminCall(t, a, "POST", "/v1/users", map[string]any{"username": "erp-bot@acme.example", "password": "correct horse",
		"type": "api_only", "tenants": []string{"acme", "beta"}, "scopes": []string{"READ", "UPDATE"}}, &user); st != 201 {
		t.Fatalf("create user: %d %v", st, user)
	}
	if _, ok := user["password"]; ok {
		t.Fatalf("the user's answer shows its password: %v", user)
	}
	if st := adminCall(t, a, "POST", "/v1/users", map[string]any{"username": "erp-bot@acme.example", "password": "another one",
		"tenants": []string{"acme"}}, nil); st != 409 {
		t.Errorf("a duplicate user: %d, want 409", st)
	}
	bot := basic("erp-bot@acme.example", "correct horse")
	for _, in := range others {
		st, r, body := call(t, hc, in, "GET", "/api/invoices/1", "Authorization", bot, "X-Tenant", "beta")
		if st != 200 {
			t.Fatalf("the user on %s: %d %s", in.proxy, st, body)
		}
		h := r.Headers
		if h["X-Tollgate-Auth"] != "basic" || h["X-Tollgate-User"] != "erp-bot@acme.example" || h["X-Tollgate-User-Type"] != "api_only" ||
			h["X-Tollgate-Tenant"] != "beta" || h["X-Tollgate-Scopes"] != "READ UPDATE" || h["Authorization"] != "" {
			t.Errorf("the backend saw %v", h)
		}
	}
	checks := []struct {
		name, method, path string
		hdr                []string
		status             int
	}{
		{"no tenant named", "GET", "/api/x", []string{"Authorization", bot}, 400},
		{"a tenant not its own", "GET", "/api/x", []string{"Authorization", bot, "X-Tenant", "gamma"}, 403},
		{"CREATE not granted", "POST", "/api/x", []string{"Authorization", bot, "X-Tenant", "acme"}, 403},
		{"UPDATE granted", "PATCH", "/api/x", []string{"Authorization", bot, "X-Tenant", "acme"}, 200},
		{"tenant in the path", "GET", "/companies/beta/x", []string{"Authorization", bot}, 200},
		{"another tenant in the path", "GET", "/companies/gamma/x", []string{"Authorization", bot}, 403},
		{"search: POST is READ", "POST", "/search", []string{"Authorization", bot, "X-Company", "acme"}, 200},
		{"wrong password", "GET", "/api/x", []string{"Authorization", basic("erp-bot@acme.example", "wrong horse"), "X-Tenant", "acme"}, 401},
		{"unknown user", "GET", "/api/x", []string{"Authorization", basic("nobody", "correct horse"), "X-Tenant", "acme"}, 401},
		{"malformed Basic", "GET", "/api/x", []string{"Authorization", "Basic !!!"}, 401},
	}
	bodies := map[string]string{}
	for _, ck := range checks {
		st, _, body := call(t, hc, c, ck.method, ck.path, ck.hdr...)
		if st != ck.status {
			t.Errorf("%s: %d %s, want %d", ck.name, st, body, ck.status)
		}
		bodies[ck.name] = string(body)
	}
	if bodies["wrong password"] != bodies["unknown user"] {
		t.Errorf("a wrong password and an unknown user answer differently:\n%s\n%s", bodies["wrong password"], bodies["unknown user"])
	}
	var tenants struct{ Tenants []string }
	if _, _, body := call(t, hc, b, "GET", "/_tollgate/tenants", "Authorization", bot); json.Unmarshal(body, &tenants) != nil || len(tenants.Tenants) != 2 {
		t.Errorf("the user's tenants: %s", body)
	}

	// A key of one module, READ and CREATE.
	var key struct {
		ID, Key string
		Modules []string
		Scopes  []string
	}
	if st := adminCall(t, a, "POST", "/v1/tenants/acme/keys", map[string]any{"name": "invoices", "modules": []string{"invoices"},
		"scopes": []string{"READ", "CREATE"}}, &key); st != 201 || key.Key == "" {
		t.Fatalf("create key: %d %+v", st, key)
	}
	if st := adminCall(t, a, "POST", "/v1/tenants/acme/keys", map[string]any{"name": "bad", "modules": []string{"payroll"}}, nil); st != 400 {
		t.Errorf("a key of an unknown module: %d, want 400", st)
	}
	for _, in := range others {
		for path, want := range map[string]int{"/api/invoices/7": 200, "/api/expenses/7": 403, "/api/status": 403} {
			if st, _, body := call(t, hc, in, "GET", path, "X-API-Key", key.Key); st != want {
				t.Errorf("module key on %s %s: %d %s, want %d", in.proxy, path, st, body, want)
			}
		}
		if st, _, _ := call(t, hc, in, "DELETE", "/api/invoices/7", "X-API-Key", key.Key); st != 403 {
			t.Errorf("DELETE with READ and CREATE: %d", st)
		}
	}
	var keys struct {
		Items []struct {
			ID      string
			Modules []string
			Scopes  []string
		}
	}
	adminCall(t, b, "GET", "/v1/tenants/acme/keys", nil, &keys)
	if len(keys.Items) != 1 || len(keys.Items[0].Modules) != 1 || len(keys.Items[0].Scopes) != 2 {
		t.Errorf("keys listed on B: %+v", keys)
	}

	// Regenerate with grace: both work on B and C; without: only the new.
	var regen struct {
		Key      string
		Previous *struct{ Expires time.Time }
	}
	if st := adminCall(t, a, "POST", "/v1/tenants/acme/keys/"+key.ID+"/regenerate", map[string]any{"grace": "1h"}, &regen); st != 200 || regen.Previous == nil {
		t.Fatalf("regenerate with grace: %d %+v", st, regen)
	}
	waitStatus(t, hc, others, 200, 2*time.Second, "GET", "/api/invoices/1", "X-API-Key", regen.Key)
	waitStatus(t, hc, others, 200, 2*time.Second, "GET", "/api/invoices/1", "X-API-Key", key.Key)
	old := regen.Key
	regen.Previous = nil
	if st := adminCall(t, a, "POST", "/v1/tenants/acme/keys/"+key.ID+"/regenerate", nil, &regen); st != 200 || regen.Previous != nil {
		t.Fatalf("regenerate: %d %+v", st, regen)
	}
	waitStatus(t, hc, all, 401, time.Second, "GET", "/api/invoices/1", "X-API-Key", old)
	waitStatus(t, hc, all, 401, time.Second, "GET", "/api/invoices/1", "X-API-Key", key.Key)
	waitStatus(t, hc, all, 200, time.Second, "GET", "/api/invoices/1", "X-API-Key", regen.Key)

	// A key that expires: accepted until then, then refused everywhere
	// as an unknown one, with no change to deliver.
	expires := time.Now().Add(3 * time.Second).UTC()
	var short struct{ Key string }
	if st := adminCall(t, a, "POST", "/v1/tenants/acme/keys", map[string]any{"name": "short", "expires": expires}, &short); st != 201 {
		t.Fatalf("create an expiring key: %d", st)
	}
	waitStatus(t, hc, others, 200, 2*time.Second, "GET", "/api/x", "X-API-Key", short.Key)
	time.Sleep(time.Until(expires))
	for _, in := range all {
		if st, _, body := call(t, hc, in, "GET", "/api/x", "X-API-Key", short.Key); st != 401 || !strings.Contains(string(body), "credential_invalid") {
			t.Errorf("an expired key on %s: %d %s, want 401 credential_invalid", in.proxy, st, body)
		}
	}

	// A client made on A is listed on B and C.
	var client struct {
		ID           string
		ClientSecret string `json:"client_secret"`
	}
	if st := adminCall(t, a, "POST", "/v1/tenants/acme/clients", map[string]any{"name": "accounting", "scopes": []string{"READ"}}, &client); st != 201 ||
		!strings.HasPrefix(client.ID, "tgc_") || client.ClientSecret == "" {
		t.Fatalf("create client: %d %+v", st, client)
	}
	for _, in := range others {
		var got map[string]any
		deadline := time.Now().Add(2 * time.Second)
		for adminCall(t, in, "GET", "/v1/tenants/acme/clients/"+client.ID, nil, &got) != 200 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got["id"] != client.ID || got["client_secret"] != nil {
			t.Errorf("client on %s: %v", in.admin, got)
		}
	}

	// A changed password stops the old one everywhere, memo or not.
	if st := adminCall(t, a, "POST", "/v1/users/erp-bot@acme.example/password", map[string]any{"password": "battery staple"}, nil); st != 200 {
		t.Fatalf("set password: %d", st)
	}
	waitStatus(t, hc, all, 401, time.Second, "GET", "/api/x", "Authorization", bot, "X-Tenant", "acme")
	bot = basic("erp-bot@acme.example", "battery staple")
	waitStatus(t, hc, all, 200, time.Second, "GET", "/api/x", "Authorization", bot, "X-Tenant", "acme")
	// PATCH narrows its tenants.
	if st := adminCall(t, a, "PATCH", "/v1/users/erp-bot@acme.example", map[string]any{"tenants": []string{"acme"}}, nil); st != 200 {
		t.Fatalf("patch user: %d", st)
	}
	waitStatus(t, hc, all, 403, time.Second, "GET", "/api/x", "Authorization", bot, "X-Tenant", "beta")
	waitStatus(t, hc, all, 200, time.Second, "GET", "/api/x", "Authorization", bot)
	// Deleted through A, it fails on B and C.
	if st := adminCall(t, a, "DELETE", "/v1/users/erp-bot@acme.example", nil, nil); st != 204 {
		t.Fatalf("delete user: %d", st)
	}
	waitStatus(t, hc, all, 401, time.Second, "GET", "/api/x", "Authorization", bot)
}

// TestFailedAuthenticationsLimited: a flood of bad keys and wrong
// passwords from one address is answered 429 once over the limit, while
// valid requests from another address keep being served; a user name
// guessed at is refused further checks.
func TestFailedAuthenticationsLimited(t *testing.T) {
	up := backend(t)
	in := credReplica(t, up, freeAddr(t), true)
	in.start()
	adminCall(t, in, "POST", "/v1/tenants", map[string]any{"id": "acme", "plan": "pro"}, nil)
	var key struct{ Key string }
	adminCall(t, in, "POST", "/v1/tenants/acme/keys", map[string]any{"name": "good"}, &key)
	adminCall(t, in, "POST", "/v1/users", map[string]any{"username": "victim", "password": "correct horse", "tenants": []string{"acme"}}, nil)
	from := func(ip string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 8}}
	}
	attacker, tenant := from("127.0.0.2"), from("127.0.0.3")
	lookupsBefore := metric(t, in, "tollgate_credential_lookups_total")
	var quiet []time.Duration
	for i := 0; i < 100; i++ {
		start := time.Now()
		if st, _, body := call(t, tenant, in, "GET", "/api/x", "X-API-Key", key.Key); st != 200 {
			t.Fatalf("a valid key: %d %s", st, body)
		}
		quiet = append(quiet, time.Since(start))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var statuses sync.Map
	var bad atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300 && ctx.Err() == nil; i++ {
				hdr := []string{"X-API-Key", fmt.Sprintf("tg_%012d_%032d000000", i, w)}
				if i%2 == 1 {
					hdr = []string{"Authorization", basic("victim", fmt.Sprintf("guess-%d-%d", w, i))}
				}
				st, _, _ := call(t, attacker, in, "GET", "/api/x", hdr...)
				n, _ := statuses.LoadOrStore(st, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
				bad.Add(1)
			}
		}()
	}
	var lat []time.Duration
	for i := 0; i < 100; i++ {
		start := time.Now()
		st, _, body := call(t, tenant, in, "GET", "/api/x", "X-API-Key", key.Key)
		lat = append(lat, time.Since(start))
		if st != 200 {
			t.Fatalf("a valid key from another address: %d %s", st, body)
		}
	}
	wg.Wait()
	counts := map[any]int64{}
	statuses.Range(func(k, v any) bool { counts[k] = v.(*atomic.Int64).Load(); return true })
	if counts[429] < bad.Load()-60 {
		t.Errorf("the attacker's answers: %v; want all but the first 40 failures to be 429", counts)
	}
	t.Logf("attacker: %v; valid requests from another address: p50 %v p99 %v during the flood, p50 %v p99 %v before",
		counts, pct(lat, 50), pct(lat, 99), pct(quiet, 50), pct(quiet, 99))
	// The refusals are counted by kind and reason.
	for series, min := range map[string]float64{
		`tollgate_auth_failures_total{kind="api_key",reason="malformed"}`: 1,
		`tollgate_auth_failures_total{kind="basic",reason="invalid"}`:     1,
		`tollgate_auth_failures_total{kind="api_key",reason="throttled"}`: 100,
		`tollgate_auth_failures_total{kind="basic",reason="throttled"}`:   100,
	} {
		if got := metric(t, in, series); got < min {
			t.Errorf("%s = %v after the flood, want at least %v", series, got, min)
		}
	}
	if after := metric(t, in, "tollgate_credential_lookups_total"); after != lookupsBefore {
		t.Errorf("the flood of malformed keys and wrong passwords caused %v store lookups", after-lookupsBefore)
	}
	// The victim's name is throttled for every address, except for a
	// password that was verified before (memoised).
	if st, _, _ := call(t, tenant, in, "GET", "/api/x", "Authorization", basic("victim", "wrong again")); st != 429 {
		t.Errorf("a guessed-at user name from another address: %d, want 429", st)
	}
}

func pct(d []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), d...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	i := (len(s) - 1) * p / 100
	return s[i]
}

// metric sums the samples of the named metric on in's /metrics.
func metric(t *testing.T, in *instance, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + in.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			var v float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
			sum += v
		}
	}
	return sum
}

// TestRequireTLS: a route that accepts passwords refuses them in clear
// text (403 tls_required) unless a trusted proxy in front says the
// client spoke https; the default is on for basic routes unless the
// proxy listens on loopback only.
func TestRequireTLS(t *testing.T) {
	up := backend(t)
	in := configured(t, "", fmt.Sprintf(`log: {access: false}
auth: {basic: {argon2: {time: 1, memory: 8MiB, threads: 1}}}
trusted_proxies: [127.0.0.2]
plans:
  pro: {monthly_requests: 1000}
routes:
  - {path_prefix: /, upstream: http://%s, auth: [basic], require_tls: true}
`, up))
	in.start()
	adminCall(t, in, "POST", "/v1/tenants", map[string]any{"id": "acme", "plan": "pro"}, nil)
	adminCall(t, in, "POST", "/v1/users", map[string]any{"username": "bot", "password": "correct horse", "tenants": []string{"acme"}}, nil)
	hc := &http.Client{Timeout: 10 * time.Second}
	st, _, body := call(t, hc, in, "GET", "/x", "Authorization", basic("bot", "correct horse"))
	if st != 403 || !strings.Contains(string(body), "tls_required") {
		t.Errorf("Basic in clear text: %d %s, want 403 tls_required", st, body)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	proxied := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	if st, r, body := call(t, proxied, in, "GET", "/x", "Authorization", basic("bot", "correct horse"), "X-Forwarded-Proto", "https"); st != 200 || r.Headers["X-Forwarded-Proto"] != "https" {
		t.Errorf("through a trusted proxy that terminated TLS: %d %s", st, body)
	}
	if st, _, _ := call(t, hc, in, "GET", "/x", "Authorization", basic("bot", "correct horse"), "X-Forwarded-Proto", "https"); st != 403 {
		t.Errorf("X-Forwarded-Proto from an untrusted peer was believed: %d", st)
	}
}

// TestSmallBodiesBounded: the bodies tollgate reads for itself (OAuth2
// forms, self-service requests) are refused past 64 KiB, streamed or not.
func TestSmallBodiesBounded(t *testing.T) {
	in := credReplica(t, backend(t), freeAddr(t), true)
	in.start()
	adminCall(t, in, "POST", "/v1/tenants", map[string]any{"id": "acme", "plan": "pro"}, nil)
	var key struct{ Key string }
	adminCall(t, in, "POST", "/v1/tenants/acme/keys", map[string]any{"name": "k"}, &key)
	big := strings.Repeat("a", 70<<10)
	for _, path := range []string{"/oauth/token", "/_tollgate/limit-requests"} {
		for _, chunked := range []bool{false, true} {
			var body io.Reader = strings.NewReader("x=" + big)
			if chunked {
				body = io.MultiReader(strings.NewReader("x="), strings.NewReader(big)) // no length: chunked
			}
			req, _ := http.NewRequest("POST", "http://"+in.proxy+path, body)
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("X-API-Key", key.Key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 413 || !strings.Contains(string(b), "body_too_large") {
				t.Errorf("%s with a 70 KiB body (chunked %v): %d %s, want 413 body_too_large", path, chunked, resp.StatusCode, b)
			}
		}
	}
}
