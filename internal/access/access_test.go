package access

import "testing"

func TestKinds(t *testing.T) {
	for k := KindAPIKey; k <= KindClient; k++ {
		if KindNamed(k.String()) != k {
			t.Errorf("KindNamed(%q) = %v, want %v", k.String(), KindNamed(k.String()), k)
		}
	}
	if KindNamed("magic") != 0 || Kind(0).String() != "" {
		t.Error("an unknown name or the zero Kind matched something")
	}
	s := Kinds(0).With(KindAPIKey).With(KindBearer)
	if !s.Has(KindAPIKey) || !s.Has(KindBearer) || s.Has(KindBasic) || s.Has(0) {
		t.Errorf("Kinds %b: wrong membership", s)
	}
}

func TestScopes(t *testing.T) {
	tests := []struct {
		method string
		have   Scopes
		ok     bool
	}{
		{"GET", ScopeRead, true},
		{"HEAD", ScopeRead, true},
		{"POST", ScopeRead, false},
		{"POST", ScopeCreate, true},
		{"PATCH", ScopeUpdate, true},
		{"PUT", ScopeCreate | ScopeRead, false},
		{"DELETE", ScopeDelete, true},
		{"PROPFIND", ScopeRead | ScopeDelete, false},
		{"PROPFIND", AllScopes, true},
	}
	for _, tt := range tests {
		if got := tt.have.Covers(MethodScope([]byte(tt.method))); got != tt.ok {
			t.Errorf("%s with scopes %b: %v, want %v", tt.method, tt.have, got, tt.ok)
		}
	}
}

func TestMayActFor(t *testing.T) {
	one := Principal{Tenant: "a"}
	several := Principal{Tenants: []string{"a", "b"}}
	if !one.MayActFor("a") || one.MayActFor("b") || !several.MayActFor("b") || several.MayActFor("c") {
		t.Error("MayActFor answers wrongly")
	}
}

func TestDecodeBasic(t *testing.T) {
	buf := make([]byte, 64)
	tests := []struct {
		token, user, pw string
		ok              bool
	}{
		{"dTpw", "u", "p", true},
		{"YWxhZGRpbjpvcGVuIHNlc2FtZQ==", "aladdin", "open sesame", true},
		{"OnNlY3JldA==", "", "secret", true}, // ":secret"
		{"bm9jb2xvbg==", "", "", false},      // "nocolon"
		{"!!!", "", "", false},
		{string(make([]byte, 200)), "", "", false}, // does not fit
	}
	for _, tt := range tests {
		u, pw, ok := DecodeBasic([]byte(tt.token), buf)
		if ok != tt.ok || ok && (string(u) != tt.user || string(pw) != tt.pw) {
			t.Errorf("DecodeBasic(%q) = %q, %q, %v", tt.token, u, pw, ok)
		}
	}
}
