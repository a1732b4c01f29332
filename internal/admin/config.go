package admin

import (
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/tollgate/tollgate/internal/config"
)

// ReloadOutcome is what became of the last reload of the configuration,
// whatever started it.
type ReloadOutcome struct {
	At time.Time `json:"at"`
	OK bool      `json:"ok"`
	// Trigger says what started it: "api" (POST /v1/reload), "SIGHUP" or
	// "file changed".
	Trigger string `json:"trigger,omitempty"`
	// Problems are why it was refused; empty when OK.
	Problems []string `json:"problems"`
}

// userinfoRE finds the user information of URLs in text.
var userinfoRE = regexp.MustCompile(`://[^/?#\s"'@]*@`)

// lastReload holds the outcome of the last reload.
type lastReload struct {
	mu  sync.Mutex // protects out
	out *ReloadOutcome
}

// RecordReload records the outcome of a reload started by trigger: nil
// for a reload that took effect, else the error that refused it (the
// problems of a ReloadRefusal, or the error's text). GET /v1/config shows
// the last one.
func (a *API) RecordReload(trigger string, err error) {
	out := &ReloadOutcome{At: a.o.Now().UTC(), OK: err == nil, Trigger: trigger, Problems: []string{}}
	var re ReloadRefusal
	switch {
	case err == nil:
	case errors.As(err, &re):
		out.Problems = append(out.Problems, re.ReloadProblems()...)
	default:
		out.Problems = append(out.Problems, err.Error())
	}
	// A problem may quote the value at fault: a URL with its password.
	for i, p := range out.Problems {
		out.Problems[i] = userinfoRE.ReplaceAllString(p, "://redacted@")
	}
	a.last.mu.Lock()
	a.last.out = out
	a.last.mu.Unlock()
}

// ConfigView is the answer of GET /v1/config.
type ConfigView struct {
	// File is the path the configuration was read from; empty when
	// tollgate runs on its defaults.
	File string `json:"file"`
	// Config is the configuration in force, keyed as in the file, with
	// every secret replaced by Redacted.
	Config map[string]any `json:"config"`
	// LastReload is the outcome of the last reload since the start; null
	// when there was none.
	LastReload *ReloadOutcome `json:"last_reload"`
}

// Redacted stands for a secret in GET /v1/config.
const Redacted = "[redacted]"

// configView serves GET /v1/config: the configuration in force with its
// secrets redacted, and the last reload's outcome.
func (a *API) configView(w http.ResponseWriter, r *http.Request) error {
	c := a.o.Config()
	v := ConfigView{Config: RedactConfig(c)}
	if c != nil {
		v.File = c.File
	}
	a.last.mu.Lock()
	v.LastReload = a.last.out
	a.last.mu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, 200, v)
	return nil
}

// RedactConfig returns c as a tree of maps keyed by the YAML names of its
// fields (what the file says, with the defaults filled in and ${VAR}
// expanded; durations as "30s") in which secrets are replaced by Redacted:
// a field named token, password or secret (or with password or secret in
// its name), and the user information of any URL (nats://user:pass@host,
// nats://token@host, an upstream's http://user:pass@host). Paths to files
// (TLS keys, NATS .creds) are kept: the file is the secret, not its name.
func RedactConfig(c *config.Config) map[string]any {
	if c == nil {
		return map[string]any{}
	}
	m, _ := redactValue(reflect.ValueOf(*c), "").(map[string]any)
	return m
}

var (
	durationType = reflect.TypeFor[config.Duration]()
	byteSizeType = reflect.TypeFor[config.ByteSize]()
)

// redactValue walks v, a value of the configuration named name (the YAML
// name of its field or map key).
func redactValue(v reflect.Value, name string) any {
	switch v.Type() {
	case durationType:
		return time.Duration(v.Int()).String()
	case byteSizeType:
		return v.Int()
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return redactValue(v.Elem(), name)
	case reflect.Struct:
		out := map[string]any{}
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || tag == "-" || tag == "" {
				continue // parsed at load time, or not from the file
			}
			out[tag] = redactValue(v.Field(i), tag)
		}
		return out
	case reflect.Map:
		if v.IsNil() {
			return nil
		}
		out := map[string]any{}
		it := v.MapRange()
		for it.Next() {
			k := it.Key().String()
			out[k] = redactValue(it.Value(), k)
		}
		return out
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			return nil
		}
		out := make([]any, v.Len())
		for i := range out {
			out[i] = redactValue(v.Index(i), name)
		}
		return out
	case reflect.String:
		s := v.String()
		if s != "" && secretName(name) {
			return Redacted
		}
		return redactURLs(name, s)
	case reflect.Bool:
		return v.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return v.Uint()
	case reflect.Float32, reflect.Float64:
		return v.Float()
	}
	// A kind the configuration does not use yet: shown as nothing rather
	// than risked.
	return nil
}

// secretName reports whether a field called name holds a secret.
func secretName(name string) bool {
	n := strings.ToLower(name)
	return n == "token" || strings.Contains(n, "password") || strings.Contains(n, "secret") ||
		n == "pass" || n == "passwd" || n == "private_key" || n == "nkey" || n == "seed"
}

// redactURLs replaces the user information of each URL in s (one, or a
// comma-separated list as nats.url takes) with "redacted". A URL that does
// not parse, and an address with an '@' but no scheme in a field that
// holds addresses (url, upstream), are redacted whole.
func redactURLs(name, s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		t := strings.TrimSpace(p)
		if !strings.Contains(t, "@") {
			continue
		}
		if !strings.Contains(t, "://") {
			if name == "url" || name == "upstream" {
				return Redacted
			}
			continue // not a URL: a path or a name
		}
		u, err := url.Parse(t)
		if err != nil {
			return Redacted
		}
		if u.User != nil {
			u.User = url.User("redacted")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}
