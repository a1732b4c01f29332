package config

import (
	"errors"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

const shippedConfig = "../../config.yaml"

// env returns a getenv func over vars, so tests never read the process
// environment.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func parseString(t *testing.T, text string, getenv func(string) string) (*Config, error) {
	t.Helper()
	if getenv == nil {
		getenv = env(nil)
	}
	return Parse(strings.NewReader(text), "c.yaml", getenv)
}

// problemsOf returns the FieldErrors of err, failing the test if err is
// not an *Error.
func problemsOf(t *testing.T, err error) []FieldError {
	t.Helper()
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("got error %T %v, want *config.Error", err, err)
	}
	return ce.Problems
}

func TestShippedConfigParses(t *testing.T) {
	raw, err := os.ReadFile(shippedConfig)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		vars      map[string]string
		wantToken string
	}{
		{name: "token unset", vars: nil, wantToken: ""},
		{name: "token set", vars: map[string]string{"TOLLGATE_ADMIN_TOKEN": "0123456789abcdef-token"}, wantToken: "0123456789abcdef-token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(string(raw)), shippedConfig, env(tt.vars))
			if err != nil {
				t.Fatalf("Parse(config.yaml): %v", err)
			}
			def := Default()
			if got, want := c.File, shippedConfig; got != want {
				t.Errorf("File = %q, want %q", got, want)
			}
			if got, want := c.Admin.Token, tt.wantToken; got != want {
				t.Errorf("Admin.Token = %q, want %q", got, want)
			}
			// Set in the file.
			if got, want := c.Listen, "127.0.0.1:8080"; got != want {
				t.Errorf("Listen = %q, want %q", got, want)
			}
			if got, want := c.Admin.Listen, "127.0.0.1:9901"; got != want {
				t.Errorf("Admin.Listen = %q, want %q", got, want)
			}
			if got, want := c.DataDir, "./data"; got != want {
				t.Errorf("DataDir = %q, want %q", got, want)
			}
			if got, want := c.Plans, map[string]Plan{"pro": {MonthlyRequests: 8000, Addons: map[string]int64{"mcal": 8000},
				OnStoreUnavailable: "lease", Mode: "enforce", Location: time.UTC}}; !reflect.DeepEqual(got, want) {
				t.Errorf("Plans = %+v, want %+v", got, want)
			}
			// Left out of the file: the documented defaults.
			if got, want := c.NATS, def.NATS; !reflect.DeepEqual(got, want) {
				t.Errorf("NATS = %+v, want %+v", got, want)
			}
			if got, want := c.NATS.Replicas, 1; got != want {
				t.Errorf("NATS.Replicas = %d, want %d", got, want)
			}
			if c.NATS.SyncAlways == nil || !*c.NATS.SyncAlways {
				t.Errorf("NATS.SyncAlways = %v, want true", c.NATS.SyncAlways)
			}
			if got, want := c.NATS.Timeout.D(), 2*time.Second; got != want {
				t.Errorf("NATS.Timeout = %v, want %v", got, want)
			}
			if got, want := c.NATS.LedgerShards, 1; got != want {
				t.Errorf("NATS.LedgerShards = %d, want %d", got, want)
			}
			wantServer := Server{
				ReadTimeout: Duration(30 * time.Second), WriteTimeout: Duration(30 * time.Second),
				IdleTimeout: Duration(90 * time.Second), MaxRequestBody: 10 << 20, MaxHeaderBytes: 16 << 10,
				Concurrency: 256 << 10, ShutdownTimeout: Duration(20 * time.Second),
			}
			if got, want := c.Server, wantServer; got != want {
				t.Errorf("Server = %+v, want %+v", got, want)
			}
			if got, want := c.Auth, Default().Auth; !reflect.DeepEqual(got, want) || got.Basic.Argon2.Memory != 64<<20 || got.Basic.Argon2.Time != 3 {
				t.Errorf("Auth = %+v, want %+v", got, want)
			}
			wantHeaders := Headers{Tenant: "X-Tollgate-Tenant", Credential: "X-Tollgate-Credential", AuthMethod: "X-Tollgate-Auth", RequestID: "X-Request-Id",
				User: "X-Tollgate-User", UserType: "X-Tollgate-User-Type", Scopes: "X-Tollgate-Scopes"}
			if got, want := c.Headers, wantHeaders; got != want {
				t.Errorf("Headers = %+v, want %+v", got, want)
			}
			if got, want := c.Quota, (Quota{Timezone: "UTC", MaxLease: 10000, LeaseIdle: Duration(30 * time.Second), LeaseHorizon: Duration(10 * time.Second), LeaseTTL: Duration(30 * time.Second)}); got != want {
				t.Errorf("Quota = %+v, want %+v", got, want)
			}
			if got, want := c.Location, time.UTC; got != want {
				t.Errorf("Location = %v, want %v", got, want)
			}
			if got, want := c.Log.Level, "info"; got != want {
				t.Errorf("Log.Level = %q, want %q", got, want)
			}
			if !c.AccessLog() {
				t.Errorf("AccessLog() = false, want true")
			}
			if len(c.TrustedProxies) != 0 || len(c.TrustedNets) != 0 {
				t.Errorf("TrustedProxies = %v, TrustedNets = %v, want none", c.TrustedProxies, c.TrustedNets)
			}
			// The inline upstream becomes a generated pool with defaults.
			if got, want := len(c.Routes), 1; got != want {
				t.Fatalf("len(Routes) = %d, want %d", got, want)
			}
			r := c.Routes[0]
			wantRoute := Route{PathPrefix: "/", Upstream: "http://127.0.0.1:3000", Auth: []string{AuthAPIKey}, Cost: 1, UpstreamName: "route-0",
				Errors: RouteErrors{Format: "problems", MaxBody: 64 << 10}, MaxRequestBody: 10 << 20}
			if !reflect.DeepEqual(r, wantRoute) {
				t.Errorf("Routes[0] = %+v, want %+v", r, wantRoute)
			}
			wantUp := Upstream{
				URL: "http://127.0.0.1:3000", ConnectTimeout: Duration(5 * time.Second), ReadTimeout: Duration(30 * time.Second),
				WriteTimeout: Duration(30 * time.Second), IdleTimeout: Duration(60 * time.Second), MaxConns: 1024,
				Scheme: "http", Addr: "127.0.0.1:3000", Path: "",
			}
			if got, want := c.Upstreams, map[string]Upstream{"route-0": wantUp}; !reflect.DeepEqual(got, want) {
				t.Errorf("Upstreams = %+v, want %+v", got, want)
			}
		})
	}
}

func TestLoadShippedConfig(t *testing.T) {
	t.Setenv("TOLLGATE_ADMIN_TOKEN", "")
	c, err := Load(shippedConfig)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := c.File, shippedConfig; got != want {
		t.Errorf("File = %q, want %q", got, want)
	}
	if _, err := Load("does-not-exist.yaml"); err == nil {
		t.Errorf("Load(missing file) = nil error, want one")
	}
}

func TestParseFillsDerivedFields(t *testing.T) {
	text := `
trusted_proxies: [10.1.2.3/8, 192.168.1.7, "::1"]
upstreams:
  api: {url: "https://api.internal/v1/", max_conns: 7}
routes:
  - {host: API.Example.com, path_prefix: /v1, upstream: api, cost: 3, strip_prefix: true}
  - {upstream: "http://[::1]:9000"}
`
	c, err := parseString(t, text, nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	wantNets := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"), netip.MustParsePrefix("::1/128")}
	if got, want := c.TrustedNets, wantNets; !reflect.DeepEqual(got, want) {
		t.Errorf("TrustedNets = %v, want %v", got, want)
	}
	api := c.Upstreams["api"]
	if got, want := [3]string{api.Scheme, api.Addr, api.Path}, [3]string{"https", "api.internal:443", "/v1"}; got != want {
		t.Errorf("upstream api (scheme, addr, path) = %q, want %q", got, want)
	}
	if got, want := api.MaxConns, 7; got != want {
		t.Errorf("upstream api MaxConns = %d, want %d", got, want)
	}
	if got, want := c.Routes[0].Host, "api.example.com"; got != want {
		t.Errorf("Routes[0].Host = %q, want %q", got, want)
	}
	if got, want := c.Routes[0].UpstreamName, "api"; got != want {
		t.Errorf("Routes[0].UpstreamName = %q, want %q", got, want)
	}
	if got, want := c.Routes[0].Cost, int64(3); got != want {
		t.Errorf("Routes[0].Cost = %d, want %d", got, want)
	}
	if got, want := c.Routes[1].UpstreamName, "route-1"; got != want {
		t.Errorf("Routes[1].UpstreamName = %q, want %q", got, want)
	}
	if got, want := c.Upstreams["route-1"].Addr, "[::1]:9000"; got != want {
		t.Errorf("route-1 Addr = %q, want %q", got, want)
	}
}

// wantProblem is one expected FieldError: Msg is a substring.
type wantProblem struct {
	Line int
	Path string
	Msg  string
}

// checkProblems asserts that got and want are the same set.
func checkProblems(t *testing.T, got []FieldError, want []wantProblem) {
	t.Helper()
	used := make([]bool, len(got))
	for _, w := range want {
		found := false
		for i, g := range got {
			if !used[i] && g.Line == w.Line && g.Path == w.Path && strings.Contains(g.Msg, w.Msg) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			t.Errorf("missing problem {Line: %d, Path: %q, Msg: ~%q}", w.Line, w.Path, w.Msg)
		}
	}
	for i, g := range got {
		if !used[i] {
			t.Errorf("unexpected problem %#v", g)
		}
		if g.File != "c.yaml" {
			t.Errorf("problem %#v: File = %q, want %q", g, g.File, "c.yaml")
		}
	}
}

const okRoute = "routes:\n  - {upstream: \"http://127.0.0.1:3000\"}\n"

// Problems found by the YAML decoder (unknown keys, values of the wrong
// type, bad durations and sizes) carry a line and the field path too.
var invalidConfigs = []struct {
	name string
	text string
	want []wantProblem
}{
	{
		name: "unknown top-level key",
		text: "bogus: 1\n" + okRoute,
		want: []wantProblem{{1, "bogus", `unknown key "bogus"`}},
	},
	{
		name: "unknown nested key routes[0].bogus",
		text: "routes:\n  - upstream: http://x\n    bogus: 1\n",
		want: []wantProblem{{3, "routes[0].bogus", `unknown key "bogus"`}},
	},
	{
		name: "unknown key in flow mapping",
		text: "admin: {listen: 127.0.0.1:9999, tokn: x}\n" + okRoute,
		want: []wantProblem{{1, "admin.tokn", `unknown key "tokn"`}},
	},
	{
		name: "bad listen",
		text: "listen: nope\n" + okRoute,
		want: []wantProblem{{1, "listen", `"nope": want host:port`}},
	},
	{
		name: "admin listen equals listen",
		text: "listen: 127.0.0.1:9901\n" + okRoute,
		want: []wantProblem{{0, "admin.listen", "must differ from listen"}},
	},
	{
		name: "bad upstream scheme inline",
		text: "routes:\n  - {upstream: \"ftp://files\"}\n",
		want: []wantProblem{{2, "routes[0].upstream", "unsupported scheme"}},
	},
	{
		name: "bad upstream scheme named",
		text: "upstreams:\n  api:\n    url: ftp://files\nroutes:\n  - {upstream: api}\n",
		want: []wantProblem{{3, "upstreams.api.url", "unsupported scheme"}},
	},
	{
		name: "upstream without host",
		text: "routes:\n  - {upstream: \"http://\"}\n",
		want: []wantProblem{{2, "routes[0].upstream", "missing host"}},
	},
	{
		name: "unknown route upstream name",
		text: "routes:\n  - path_prefix: /a\n    upstream: nope\n",
		want: []wantProblem{{3, "routes[0].upstream", `"nope": no such upstream`}},
	},
	{
		name: "missing route upstream",
		text: "routes:\n  - path_prefix: /a\n",
		want: []wantProblem{{2, "routes[0].upstream", "required"}},
	},
	{
		name: "unknown auth method",
		text: "routes:\n  - upstream: http://x\n    auth: [api_key, magic]\n",
		want: []wantProblem{{3, "routes[0].auth[1]", `"magic": unknown method`}},
	},
	{
		name: "auth method listed twice",
		text: "routes:\n  - upstream: http://x\n    auth: [api_key, api_key]\n",
		want: []wantProblem{{3, "routes[0].auth[1]", `listed twice`}},
	},
	{
		name: "auth method of the token endpoint only",
		text: "routes:\n  - upstream: http://x\n    auth:\n      - api_key\n      - client\n",
		want: []wantProblem{{5, "routes[0].auth[1]", `"client": unknown method`}},
	},
	{
		name: "route scopes and tenant_from",
		text: "routes:\n  - upstream: http://x\n    scopes: {POST: SEARCH}\n    tenant_from: {header: X-Company, path_segment: 2}\n",
		want: []wantProblem{{3, "routes[0].scopes.POST", `"SEARCH": want CREATE, READ, UPDATE or DELETE`}, {4, "routes[0].tenant_from", "not both"}},
	},
	{
		name: "modules",
		text: "modules:\n  invoices: [api/invoices]\n  'bad name': [/x]\nroutes:\n  - upstream: http://x\n",
		want: []wantProblem{{2, "modules.invoices[0]", `must start with /`}, {3, "modules.bad name", "module names"}},
	},
	{
		name: "negative monthly_requests",
		text: "plans:\n  pro:\n    monthly_requests: -1\n" + okRoute,
		want: []wantProblem{{3, "plans.pro.monthly_requests", "must not be negative"}},
	},
	{
		name: "add-on size zero and bad plan name",
		text: "plans:\n  pro:\n    addons: {big: 0}\n  \"bad plan\": {}\n" + okRoute,
		want: []wantProblem{{3, "plans.pro.addons.big", "size must be positive"}, {4, "plans.bad plan", "plan names"}},
	},
	{
		name: "monthly_requests of the wrong type",
		text: "plans:\n  pro:\n    monthly_requests: lots\n" + okRoute,
		want: []wantProblem{{3, "plans.pro.monthly_requests", "cannot unmarshal"}},
	},
	{
		name: "bad timezone",
		text: "quota:\n  timezone: Mars/Olympus_Mons\n" + okRoute,
		want: []wantProblem{{2, "quota.timezone", "unknown time zone"}},
	},
	{
		name: "empty timezone",
		text: "quota: {timezone: \"\"}\n" + okRoute,
		want: []wantProblem{{1, "quota.timezone", "unknown time zone"}},
	},
	{
		name: "max_lease zero",
		text: "quota:\n  max_lease: 0\n" + okRoute,
		want: []wantProblem{{2, "quota.max_lease", "at least 1"}},
	},
	{
		name: "failover_horizon negative",
		text: "quota:\n  failover_horizon: -1s\n" + okRoute,
		want: []wantProblem{{2, "quota.failover_horizon", "is not a duration"}},
	},
	{
		name: "bad duration",
		text: "nats:\n  timeout: 5 minutes\n" + okRoute,
		want: []wantProblem{{2, "nats.timeout", `"5 minutes" is not a duration`}},
	},
	{
		name: "zero duration where positive is required",
		text: "nats:\n  timeout: 0\n" + okRoute,
		want: []wantProblem{{2, "nats.timeout", "must be positive"}},
	},
	{
		name: "bad size",
		text: "server:\n  max_request_body: 10 megs\n" + okRoute,
		want: []wantProblem{{2, "server.max_request_body", "is not a size"}},
	},
	{
		name: "max_header_bytes too small",
		text: "server:\n  max_header_bytes: 1000B\n" + okRoute,
		want: []wantProblem{{2, "server.max_header_bytes", "at least 1KiB"}},
	},
	{
		name: "duplicate routes",
		text: "routes:\n  - {host: API.example.com, path_prefix: /v1, upstream: http://a}\n  - {host: api.example.com, path_prefix: /v1, upstream: http://b}\n",
		want: []wantProblem{{3, "routes[1]", "duplicates routes[0]"}},
	},
	{
		name: "duplicate routes by default path_prefix",
		text: "routes:\n  - {upstream: http://a}\n  - {upstream: http://b, path_prefix: /}\n",
		want: []wantProblem{{3, "routes[1]", "duplicates routes[0]"}},
	},
	{
		name: "path_prefix without slash and negative cost",
		text: "routes:\n  - upstream: http://a\n    path_prefix: v1\n    cost: -2\n",
		want: []wantProblem{{3, "routes[0].path_prefix", "must start with /"}, {4, "routes[0].cost", "must be positive"}},
	},
	{
		name: "no routes",
		text: "listen: 127.0.0.1:8080\n",
		want: []wantProblem{{0, "routes", "at least one route is required"}},
	},
	{
		name: "trusted_proxies bad CIDR",
		text: "trusted_proxies:\n  - 10.0.0.0/8\n  - 10.0.0.0/33\n  - not-an-ip\n" + okRoute,
		want: []wantProblem{{3, "trusted_proxies[1]", "want a CIDR or an IP address"}, {4, "trusted_proxies[2]", "want a CIDR or an IP address"}},
	},
	{
		name: "admin token too short",
		text: "admin: {token: short}\n" + okRoute,
		want: []wantProblem{{1, "admin.token", "at least 16 characters"}},
	},
	{
		name: "nats url bad scheme",
		text: "nats:\n  url: http://nats:4222\n" + okRoute,
		want: []wantProblem{{2, "nats.url", "want nats://host:port"}},
	},
	{
		name: "nats url one bad of two",
		text: "nats:\n  url: \"nats://a:4222, b:4222\"\n" + okRoute,
		want: []wantProblem{{2, "nats.url", `" b:4222"`}},
	},
	{
		name: "nats listen with external url",
		text: "nats:\n  url: nats://a:4222\n  listen: 127.0.0.1:4222\n" + okRoute,
		want: []wantProblem{{3, "nats.listen", "only for the embedded server"}},
	},
	{
		name: "nats replicas and shards out of range",
		text: "nats:\n  replicas: 7\n  ledger_shards: 0\n" + okRoute,
		want: []wantProblem{{2, "nats.replicas", "want 1 to 5"}, {3, "nats.ledger_shards", "want 1 to 64"}},
	},
	{
		name: "bad header names",
		text: "auth:\n  api_key:\n    headers: [\"X API Key\"]\nheaders:\n  tenant: \"X:Tenant\"\n" + okRoute,
		want: []wantProblem{{3, "auth.api_key.headers[0]", "not a header name"}, {5, "headers.tenant", "not a header name"}},
	},
	{
		name: "no way to read api keys",
		text: "auth:\n  api_key:\n    headers: []\n" + okRoute,
		want: []wantProblem{{3, "auth.api_key.headers", "at least one header"}},
	},
	{
		name: "bad log level",
		text: "log: {level: verbose}\n" + okRoute,
		want: []wantProblem{{1, "log.level", `"verbose"`}},
	},
	{
		name: "yaml syntax error",
		text: "listen: [unclosed\n" + okRoute,
		want: []wantProblem{{1, "", "did not find expected"}},
	},
}

func TestParseInvalid(t *testing.T) {
	for _, tt := range invalidConfigs {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseString(t, tt.text, nil)
			if err == nil {
				t.Fatalf("Parse = %+v, nil; want an error", c)
			}
			if c != nil {
				t.Errorf("Parse returned a config with error %v", err)
			}
			checkProblems(t, problemsOf(t, err), tt.want)
		})
	}
}

func TestParseReportsEveryProblemAtOnce(t *testing.T) {
	text := `listen: nope
admin:
  token: short
bogus: 1
trusted_proxies: [10.0.0.0/33]
quota: {timezone: Nowhere/Land}
plans:
  pro:
    monthly_requests: -5
routes:
  - upstream: ftp://x
    auth: [client]
  - upstream: missing
    path_prefix: /
`
	_, err := parseString(t, text, nil)
	if err == nil {
		t.Fatal("Parse = nil error, want problems")
	}
	got := problemsOf(t, err)
	checkProblems(t, got, []wantProblem{
		{1, "listen", "want host:port"},
		{3, "admin.token", "at least 16"},
		{4, "bogus", `unknown key "bogus"`},
		{5, "trusted_proxies[0]", "want a CIDR"},
		{6, "quota.timezone", "unknown time zone"},
		{9, "plans.pro.monthly_requests", "must not be negative"},
		{11, "routes[0].upstream", "unsupported scheme"},
		{12, "routes[0].auth[0]", `"client": unknown method`},
		{13, "routes[1].upstream", `"missing": no such upstream`},
		{13, "routes[1]", "duplicates routes[0]"},
	})
	for i := 1; i < len(got); i++ {
		if got[i-1].Line > got[i].Line {
			t.Errorf("problems not sorted by line: %d before %d", got[i-1].Line, got[i].Line)
		}
	}
	// Error() lists every problem as file:LINE: path: message.
	lines := strings.Split(err.Error(), "\n")
	if got, want := len(lines), len(got); got != want {
		t.Fatalf("Error() has %d lines, want %d:\n%s", got, want, err)
	}
	for i, l := range lines {
		if got, want := l, got[i].Error(); got != want {
			t.Errorf("Error() line %d = %q, want %q", i, got, want)
		}
	}
	if got, want := lines[0], `c.yaml:1: listen: "nope": want host:port`; got != want {
		t.Errorf("first line = %q, want %q", got, want)
	}
}

func TestFieldErrorString(t *testing.T) {
	tests := []struct {
		name string
		e    FieldError
		want string
	}{
		{"all parts", FieldError{File: "c.yaml", Line: 4, Path: "routes[0].upstream", Msg: "bad"}, "c.yaml:4: routes[0].upstream: bad"},
		{"no line", FieldError{File: "c.yaml", Path: "routes", Msg: "at least one"}, "c.yaml: routes: at least one"},
		{"no path", FieldError{File: "c.yaml", Line: 2, Msg: `unknown key "x"`}, `c.yaml:2: unknown key "x"`},
		{"no file", FieldError{Line: 3, Path: "listen", Msg: "bad"}, "3: listen: bad"},
		{"message only", FieldError{Msg: "bad"}, "bad"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.e.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
	e := &Error{Problems: []FieldError{tests[0].e, tests[1].e}}
	if got, want := e.Error(), tests[0].want+"\n"+tests[1].want; got != want {
		t.Errorf("Error.Error() = %q, want %q", got, want)
	}
}

func TestValidate(t *testing.T) {
	c := Default()
	c.Routes = []Route{{Upstream: "http://127.0.0.1:3000"}}
	if err := Validate(c); err != nil {
		t.Fatalf("Validate(defaults + one route) = %v, want nil", err)
	}
	if got, want := c.Routes[0].UpstreamName, "route-0"; got != want {
		t.Errorf("UpstreamName = %q, want %q", got, want)
	}
	if got, want := c.Location, time.UTC; got != want {
		t.Errorf("Location = %v, want %v", got, want)
	}
	bad := Default()
	err := Validate(bad)
	if err == nil {
		t.Fatal("Validate(no routes) = nil, want an error")
	}
	ps := problemsOf(t, err)
	if len(ps) != 1 || ps[0].Path != "routes" {
		t.Errorf("Validate(no routes) problems = %+v, want one on routes", ps)
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "alpha", "B": "beta", "EMPTY": ""}
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"plain", "no vars here", "no vars here"},
		{"var", "x: ${A}", "x: alpha"},
		{"two vars", "${A}-${B}", "alpha-beta"},
		{"unset var", "x: ${NOPE}", "x: "},
		{"default when unset", "${NOPE:-fallback}", "fallback"},
		{"default when empty", "${EMPTY:-fallback}", "fallback"},
		{"default ignored when set", "${A:-fallback}", "alpha"},
		{"empty default", "${NOPE:-}", ""},
		{"default containing :-", "${NOPE:-a:-b}", "a:-b"},
		{"lone dollar kept", "pa$$word and ^a$", "pa$$word and ^a$"},
		{"$VAR without braces kept", "$A", "$A"},
		{"dollar before expansion", "$${A}", "$alpha"},
		{"unterminated kept", "x: ${A", "x: ${A"},
		{"unterminated after expansion kept", "${A} ${B", "alpha ${B"},
		{"empty name", "${}", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Expand(tt.in, env(vars)); got != tt.want {
				t.Errorf("Expand(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	t.Run("nil getenv reads the environment", func(t *testing.T) {
		t.Setenv("TOLLGATE_TEST_EXPAND", "from-env")
		if got, want := Expand("${TOLLGATE_TEST_EXPAND}", nil), "from-env"; got != want {
			t.Errorf("Expand = %q, want %q", got, want)
		}
	})
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "500ms", want: 500 * time.Millisecond},
		{in: "5m", want: 5 * time.Minute},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "30d", want: 30 * 24 * time.Hour},
		{in: "1d12h", want: 36 * time.Hour},
		{in: "2d30m", want: 48*time.Hour + 30*time.Minute},
		{in: "0", want: 0},
		{in: "0s", want: 0},
		{in: " 5m ", want: 5 * time.Minute},
		{in: "5 minutes", wantErr: true},
		{in: "5", wantErr: true},
		{in: "d", wantErr: true},
		{in: "1.5d", wantErr: true},
		{in: "5d5", wantErr: true},
		{in: "1w", wantErr: true},
		{in: "abc", wantErr: true},
		{in: "5m d", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDuration(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseDuration(%q) = %v, nil; want an error", tt.in, got)
				}
				if !strings.Contains(err.Error(), "is not a duration") {
					t.Errorf("error = %q, want it to say %q", err, "is not a duration")
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseDuration(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseDuration(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "65536", want: 65536},
		{in: "0", want: 0},
		{in: "64KiB", want: 64 << 10},
		{in: "10MiB", want: 10 << 20},
		{in: "2GiB", want: 2 << 30},
		{in: "1KB", want: 1000},
		{in: "5MB", want: 5_000_000},
		{in: "1GB", want: 1_000_000_000},
		{in: "512B", want: 512},
		{in: " 2 KiB ", want: 2048},
		{in: "", wantErr: true},
		{in: "ten", wantErr: true},
		{in: "1.5MiB", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "-1KiB", wantErr: true},
		{in: "1TB", wantErr: true},
		{in: "KiB", wantErr: true},
		{in: "64kib", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseByteSize(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseByteSize(%q) = %d, nil; want an error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseByteSize(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseByteSize(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestLimit(t *testing.T) {
	c := &Config{Plans: map[string]Plan{
		"pro":  {MonthlyRequests: 8000, Addons: map[string]int64{"mcal": 8000, "small": 100}},
		"free": {MonthlyRequests: 0, Addons: map[string]int64{"mcal": 8000}},
	}}
	tests := []struct {
		name      string
		plan      string
		addons    map[string]int64
		wantLimit int64
		wantOK    bool
	}{
		{"base", "pro", nil, 8000, true},
		{"one add-on", "pro", map[string]int64{"mcal": 2}, 8000 + 2*8000, true},
		{"two add-ons", "pro", map[string]int64{"mcal": 1, "small": 3}, 8000 + 8000 + 300, true},
		{"zero units", "pro", map[string]int64{"mcal": 0}, 8000, true},
		{"add-on the plan lacks adds nothing", "pro", map[string]int64{"other": 5}, 8000, true},
		{"unlimited plan stays unlimited", "free", map[string]int64{"mcal": 3}, 0, true},
		{"unknown plan", "enterprise", map[string]int64{"mcal": 1}, 0, false},
		{"empty plan name", "", nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit, ok := c.Limit(tt.plan, tt.addons)
			if limit != tt.wantLimit || ok != tt.wantOK {
				t.Errorf("Limit(%q, %v) = %d, %v; want %d, %v", tt.plan, tt.addons, limit, ok, tt.wantLimit, tt.wantOK)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"pro", true},
		{"A_b-9", true},
		{strings.Repeat("x", 64), true},
		{"", false},
		{strings.Repeat("x", 65), false},
		{"a.b", false},
		{"a b", false},
		{"a*", false},
		{"é", false},
	}
	for _, tt := range tests {
		if got := ValidName(tt.in); got != tt.want {
			t.Errorf("ValidName(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	if raw, err := os.ReadFile(shippedConfig); err == nil {
		f.Add(string(raw))
	}
	for _, tt := range invalidConfigs {
		f.Add(tt.text)
	}
	f.Add("")
	f.Add("a: &a [*a]\n")
	f.Add("routes: ${NOPE:-[]}\n")
	f.Fuzz(func(t *testing.T, data string) {
		c, err := Parse(strings.NewReader(data), "fuzz.yaml", env(map[string]string{"A": "1"}))
		if err == nil {
			if c == nil {
				t.Fatal("Parse = nil, nil")
			}
			return
		}
		if c != nil {
			t.Fatalf("Parse returned a config and error %v", err)
		}
		var ce *Error
		if !errors.As(err, &ce) {
			t.Fatalf("error %T %q is not a *config.Error", err, err)
		}
		if len(ce.Problems) == 0 {
			t.Fatal("*config.Error with no problems")
		}
		for _, p := range ce.Problems {
			if p.Msg == "" {
				t.Fatalf("problem with empty Msg: %#v", p)
			}
		}
	})
}

// TestRequiresTLS: routes accepting passwords need TLS by default unless
// the proxy listens on loopback only; require_tls says otherwise.
func TestRequiresTLS(t *testing.T) {
	on, off := true, false
	tests := []struct {
		auth   []string
		set    *bool
		listen string
		want   bool
	}{
		{[]string{"basic"}, nil, "0.0.0.0:8080", true},
		{[]string{"api_key", "basic"}, nil, "10.0.0.1:8080", true},
		{[]string{"basic"}, nil, "127.0.0.1:8080", false},
		{[]string{"basic"}, nil, "[::1]:8080", false},
		{[]string{"basic"}, nil, "localhost:8080", false},
		{[]string{"basic"}, nil, ":8080", true},
		{[]string{"api_key"}, nil, "0.0.0.0:8080", false},
		{[]string{"api_key"}, &on, "127.0.0.1:8080", true},
		{[]string{"basic"}, &off, "0.0.0.0:8080", false},
	}
	for _, tt := range tests {
		r := Route{Auth: tt.auth, RequireTLS: tt.set}
		if got := r.RequiresTLS(tt.listen); got != tt.want {
			t.Errorf("auth %v require_tls %v on %s: %v, want %v", tt.auth, tt.set, tt.listen, got, tt.want)
		}
	}
}
