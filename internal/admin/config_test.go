package admin_test

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/admin"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/tlsreload/tlstest"
)

// secretConfig is a configuration whose secrets come from the
// environment, as operators write them.
const secretConfig = `listen: 127.0.0.1:18080
admin: {listen: 127.0.0.1:19901, token: "${ADMIN_TOKEN}"}
data_dir: /var/lib/tollgate
nats: {url: "nats://natsuser:${NATS_PASSWORD}@10.0.0.1:4222, nats://${NATS_TOKEN}@10.0.0.2:4222", credentials: /etc/tollgate/nats.creds}
tls: {cert_file: "${TLS_DIR}/tls.crt", key_file: "${TLS_DIR}/tls.key"}
plans:
  pro: {monthly_requests: 8000, timezone: Europe/Berlin}
upstreams:
  billing: {url: "http://svc:${UPSTREAM_PASSWORD}@10.0.0.3:3000/base"}
routes:
  - {path_prefix: /billing, upstream: billing, auth: [api_key]}
  - {path_prefix: /, upstream: "http://inline:${INLINE_PASSWORD}@10.0.0.4:3000", auth: [api_key]}
`

var secretEnv = map[string]string{
	"ADMIN_TOKEN":       "tga_adminsecret_0123456789abcdef",
	"NATS_PASSWORD":     "natspass_s3cr3t",
	"NATS_TOKEN":        "natstoken_s3cr3t",
	"UPSTREAM_PASSWORD": "upstreampass_s3cr3t",
	"INLINE_PASSWORD":   "inlinepass_s3cr3t",
}

func getConfig(t *testing.T, a *admin.API, token string) (int, string) {
	t.Helper()
	req := httptest.NewRequest("GET", "/v1/config", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// GET /v1/config shows the configuration in force, keyed as in the file,
// and no secret of it: not the admin token, not the passwords and tokens
// in the NATS and upstream URLs; the paths of key files are shown.
func TestConfigRedactsSecrets(t *testing.T) {
	dir := t.TempDir()
	tlstest.NewCA(t).WriteLeaf(t, dir+"/tls.crt", dir+"/tls.key", 1)
	c, err := config.Parse(strings.NewReader(secretConfig), "tollgate.yaml", func(k string) string {
		if k == "TLS_DIR" {
			return dir
		}
		return secretEnv[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	token := secretEnv["ADMIN_TOKEN"]
	a := admin.New(admin.Options{TokenDigest: sha256.Sum256([]byte(token)), Config: func() *config.Config { return c }})

	if code, _ := getConfig(t, a, ""); code != 401 {
		t.Errorf("without the token: %d, want 401", code)
	}
	code, body := getConfig(t, a, token)
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	for name, secret := range secretEnv {
		if strings.Contains(body, secret) {
			t.Errorf("the answer shows %s (%q):\n%s", name, secret, body)
		}
	}
	var v struct {
		File   string
		Config struct {
			Listen string
			Admin  struct{ Token, Listen string }
			NATS   struct{ URL, Credentials string } `json:"nats"`
			TLS    struct {
				CertFile string `json:"cert_file"`
				KeyFile  string `json:"key_file"`
			}
			Quota struct {
				LeaseIdle string `json:"lease_idle"`
			}
			Plans map[string]struct {
				MonthlyRequests int64 `json:"monthly_requests"`
			}
			Upstreams map[string]struct{ URL string }
			Routes    []struct {
				Upstream string
				Auth     []string
			}
		}
		LastReload *admin.ReloadOutcome `json:"last_reload"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	cfg := v.Config
	for _, tc := range []struct{ name, got, want string }{
		{"file", v.File, "tollgate.yaml"},
		{"listen", cfg.Listen, "127.0.0.1:18080"},
		{"admin.listen", cfg.Admin.Listen, "127.0.0.1:19901"},
		{"admin.token", cfg.Admin.Token, admin.Redacted},
		{"nats.url", cfg.NATS.URL, "nats://redacted@10.0.0.1:4222,nats://redacted@10.0.0.2:4222"},
		{"nats.credentials", cfg.NATS.Credentials, "/etc/tollgate/nats.creds"},
		{"tls.key_file", cfg.TLS.KeyFile, dir + "/tls.key"},
		{"quota.lease_idle (a default, as a duration)", cfg.Quota.LeaseIdle, "30s"},
		{"upstreams.billing.url", cfg.Upstreams["billing"].URL, "http://redacted@10.0.0.3:3000/base"},
		{"routes[1].upstream", cfg.Routes[1].Upstream, "http://redacted@10.0.0.4:3000"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %q, want %q", tc.name, tc.got, tc.want)
		}
	}
	if cfg.Plans["pro"].MonthlyRequests != 8000 || !slices.Equal(cfg.Routes[0].Auth, []string{"api_key"}) {
		t.Errorf("plans or routes not shown: %+v %+v", cfg.Plans, cfg.Routes)
	}
	if v.LastReload != nil {
		t.Errorf("last_reload before any reload = %+v, want null", v.LastReload)
	}
	if strings.Contains(body, "PRIVATE KEY") || strings.Contains(body, "CERTIFICATE") {
		t.Errorf("key material in the answer:\n%s", body)
	}
	// Nothing parsed at load time (time zones, CIDRs) leaks in.
	if strings.Contains(body, `"Location"`) || strings.Contains(body, "TrustedNets") {
		t.Errorf("parsed fields in the answer:\n%s", body)
	}
}

// The last reload's outcome, whatever started it, is in GET /v1/config;
// a problem that quotes a URL does not show its password.
func TestConfigLastReload(t *testing.T) {
	const token = "tga_test_token_0123456789"
	c := config.Default()
	a := admin.New(admin.Options{TokenDigest: sha256.Sum256([]byte(token)), Config: func() *config.Config { return c }})
	outcome := func() *admin.ReloadOutcome {
		t.Helper()
		code, body := getConfig(t, a, token)
		if code != 200 {
			t.Fatalf("status %d: %s", code, body)
		}
		var v struct {
			LastReload *admin.ReloadOutcome `json:"last_reload"`
		}
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(body, "hunter2") {
			t.Errorf("a password in the answer: %s", body)
		}
		return v.LastReload
	}
	a.RecordReload("SIGHUP", &refusal{[]string{`nats.url: "nats://u:hunter2@x:4222": want nats://host:port`, "listen: cannot change"}})
	got := outcome()
	if got == nil || got.OK || got.Trigger != "SIGHUP" || got.At.IsZero() ||
		!slices.Equal(got.Problems, []string{`nats.url: "nats://redacted@x:4222": want nats://host:port`, "listen: cannot change"}) {
		t.Errorf("after a refused reload: %+v", got)
	}
	a.RecordReload("file changed", errors.New("config: open x: permission denied"))
	if got = outcome(); got == nil || got.OK || !slices.Equal(got.Problems, []string{"config: open x: permission denied"}) {
		t.Errorf("after a failed reload: %+v", got)
	}
	a.RecordReload("api", nil)
	if got = outcome(); got == nil || !got.OK || got.Trigger != "api" || len(got.Problems) != 0 {
		t.Errorf("after a reload: %+v", got)
	}
}

// shownConfigFields are the string fields of the configuration that GET
// /v1/config shows as they are (URLs without their user information).
// Every other string field must be one RedactConfig redacts by its name.
// A new field fails this test until it is classified here or named so
// that it is redacted: a secret must never be shown by default.
var shownConfigFields = []string{
	"listen", "admin.listen", "admin.tls.cert_file", "admin.tls.key_file", "data_dir",
	"nats.url", "nats.listen", "nats.credentials", "tls.cert_file", "tls.key_file",
	"auth.api_key.headers[]", "auth.api_key.authorization_scheme",
	"oauth.token_path", "oauth.revoke_path", "oauth.tenants_path", "oauth.api_key_header",
	"modules.*[]", "headers.tenant", "headers.credential", "headers.auth", "headers.request_id",
	"headers.user", "headers.user_type", "headers.scopes", "trusted_proxies[]", "quota.timezone",
	"plans.*.rate.by", "plans.*.on_store_unavailable", "plans.*.timezone", "upstreams.*.url",
	"routes[].name", "routes[].host", "routes[].path_prefix", "routes[].upstream", "routes[].auth[]",
	"routes[].module", "routes[].scopes.*", "routes[].tenant_from.header", "routes[].errors.format",
	"self_service.usage", "self_service.limit_requests", "self_service.tenants", "log.level",
	"plans.*.notify.at[]", "plans.*.notify.url", "plans.*.notify.events[]",
	"plans.*.refund_on[]", "plans.*.mode", "plans.*.over_limit.allow", "routes[].refund_on[]", "routes[].mode",
}

var redactedConfigFields = []string{"admin.token", "plans.*.notify.secret"}

func TestConfigFieldsClassified(t *testing.T) {
	var got []string
	var walk func(ty reflect.Type, path string)
	walk = func(ty reflect.Type, path string) {
		switch ty.Kind() {
		case reflect.Pointer:
			walk(ty.Elem(), path)
		case reflect.Struct:
			for i := range ty.NumField() {
				f := ty.Field(i)
				tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				if f.IsExported() && tag != "" && tag != "-" {
					p := tag
					if path != "" {
						p = path + "." + tag
					}
					walk(f.Type, p)
				}
			}
		case reflect.Map:
			walk(ty.Elem(), path+".*")
		case reflect.Slice:
			walk(ty.Elem(), path+"[]")
		case reflect.String:
			got = append(got, path)
		}
	}
	walk(reflect.TypeFor[config.Config](), "")
	for _, p := range got {
		if !slices.Contains(shownConfigFields, p) && !slices.Contains(redactedConfigFields, p) {
			t.Errorf("config field %s is new: add it to shownConfigFields or redactedConfigFields (redacted by its name in internal/admin/config.go)", p)
		}
	}
	// The redacted ones are: set each to a sentinel and look for it.
	for _, p := range redactedConfigFields {
		c := config.Default()
		setPath(t, reflect.ValueOf(c).Elem(), strings.Split(p, "."), "sentinel-secret-value")
		b, _ := json.Marshal(admin.RedactConfig(c))
		if strings.Contains(string(b), "sentinel-secret-value") {
			t.Errorf("%s is shown", p)
		}
	}
}

// setPath sets the string field at path (YAML names; "*" a new map
// entry; pointers allocated) of v.
func setPath(t *testing.T, v reflect.Value, path []string, s string) {
	t.Helper()
	for i, name := range path {
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
		if name == "*" && v.Kind() == reflect.Map {
			if v.IsNil() {
				v.Set(reflect.MakeMap(v.Type()))
			}
			e := reflect.New(v.Type().Elem()).Elem()
			setPath(t, e, path[i+1:], s)
			v.SetMapIndex(reflect.ValueOf("x"), e)
			return
		}
		found := false
		for i := range v.NumField() {
			if tag, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ","); tag == name {
				v, found = v.Field(i), true
				break
			}
		}
		if !found {
			t.Fatalf("no field %s", name)
		}
	}
	v.SetString(s)
}
