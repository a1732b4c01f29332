package proxy_test

import (
	"bytes"
	"testing"

	"github.com/tollgate/tollgate/proxy"
)

// FuzzParseAuthorization: any header value yields nil or credentials that
// are a non-empty, space-trimmed part of the value after the scheme.
func FuzzParseAuthorization(f *testing.F) {
	for _, s := range []string{"ApiKey tg_abc", "apikey   tg_abc  ", "ApiKey", "ApiKey ", "Bearer x", "ApiKeyx y", "", "ApiKey \x00\xff", "APIKEY a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got := proxy.ParseAuthorization([]byte(v), []byte("ApiKey"))
		if got == nil {
			return
		}
		if len(got) == 0 || got[0] == ' ' || got[len(got)-1] == ' ' {
			t.Fatalf("ParseAuthorization(%q) = %q: empty or untrimmed", v, got)
		}
		if !bytes.EqualFold([]byte(v[:6]), []byte("ApiKey")) || v[6] != ' ' || !bytes.Contains([]byte(v[7:]), got) {
			t.Fatalf("ParseAuthorization(%q) = %q: not the part after the scheme", v, got)
		}
	})
}
