package problems

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCatalogue(t *testing.T) {
	if len(Catalogue) == 0 {
		t.Fatal("Catalogue is empty")
	}
	seen := map[Code]bool{}
	for _, e := range Catalogue {
		if e.Code == "" {
			t.Errorf("entry %+v has an empty code", e)
		}
		if seen[e.Code] {
			t.Errorf("code %q is listed twice", e.Code)
		}
		seen[e.Code] = true
		if e.Status < 400 || e.Status > 599 {
			t.Errorf("code %q: status %d, want 400-599", e.Code, e.Status)
		}
		if strings.TrimSpace(e.Message) == "" {
			t.Errorf("code %q has no message", e.Code)
		}
		if got, want := e.Code.Status(), e.Status; got != want {
			t.Errorf("%q.Status() = %d, want %d", e.Code, got, want)
		}
		if got, want := e.Code.Message(), e.Message; got != want {
			t.Errorf("%q.Message() = %q, want %q", e.Code, got, want)
		}
	}
	unknown := Code("no_such_code")
	if got, want := unknown.Status(), 500; got != want {
		t.Errorf("unknown code Status() = %d, want %d", got, want)
	}
	if got := unknown.Message(); got != "" {
		t.Errorf("unknown code Message() = %q, want empty", got)
	}
}

// codeConstants parses the package's non-test sources and returns every
// constant declared with type Code, name → value.
func codeConstants(t *testing.T) map[string]Code {
	t.Helper()
	fset := token.NewFileSet()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]Code{}
	for _, de := range entries {
		name := de.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Code" {
					continue
				}
				for i, n := range vs.Names {
					if i >= len(vs.Values) {
						t.Fatalf("%s: constant %s has no value", fset.Position(n.Pos()), n.Name)
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Fatalf("%s: constant %s is not a string literal", fset.Position(n.Pos()), n.Name)
					}
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					consts[n.Name] = Code(v)
				}
			}
		}
	}
	return consts
}

func TestEveryCodeConstantIsCatalogued(t *testing.T) {
	consts := codeConstants(t)
	if len(consts) < len(Catalogue) {
		t.Fatalf("found %d Code constants in the sources but the catalogue has %d entries", len(consts), len(Catalogue))
	}
	listed := map[Code]bool{}
	for _, e := range Catalogue {
		listed[e.Code] = true
	}
	values := map[Code]string{}
	for name, v := range consts {
		if !listed[v] {
			t.Errorf("constant %s = %q is not in Catalogue", name, v)
		}
		if other, dup := values[v]; dup {
			t.Errorf("constants %s and %s share the value %q", name, other, v)
		}
		values[v] = name
	}
	for _, e := range Catalogue {
		if _, ok := values[e.Code]; !ok {
			t.Errorf("catalogue code %q has no constant", e.Code)
		}
	}
}

func decodeBody(t *testing.T, b []byte) Body {
	t.Helper()
	if !json.Valid(b) {
		t.Fatalf("not valid JSON: %s", b)
	}
	var got Body
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return got
}

func TestAppend(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		problems []Problem
		want     []Problem // as decoded; nil means problems as given
		wantRaw  []string  // substrings of the output
		notRaw   []string  // must not appear in the output
	}{
		{
			name:    "no problems",
			status:  500,
			want:    []Problem{},
			wantRaw: []string{`"problems":[]`},
		},
		{
			name:     "with field",
			status:   400,
			problems: []Problem{{Level: Severe, Code: CodeInvalidField, Field: "addons.mcal", Message: "units must not be negative"}},
			wantRaw:  []string{`{"ok":false,"status":400,"problems":[{"level":"SEVERE","code":"invalid_field","field":"addons.mcal","message":"units must not be negative"}]}`},
		},
		{
			name:     "without field and code",
			status:   503,
			problems: []Problem{{Level: Warning, Message: "degraded"}},
			notRaw:   []string{`"field"`, `"code"`},
		},
		{
			name:     "empty level renders as SEVERE",
			status:   401,
			problems: []Problem{{Code: CodeCredentialMissing, Message: "a credential is required"}},
			want:     []Problem{{Level: Severe, Code: CodeCredentialMissing, Message: "a credential is required"}},
		},
		{
			name:   "several problems",
			status: 400,
			problems: []Problem{
				{Level: Severe, Code: CodeInvalidField, Field: "a", Message: "one"},
				{Level: Info, Field: "b", Message: "two"},
				{Level: Warning, Code: CodeConflict, Message: "three"},
			},
		},
		{
			name:     "special characters",
			status:   400,
			problems: []Problem{{Level: Severe, Field: `a"b\c/d`, Message: "quote \" backslash \\ slash / héllo 世界 🙂 \ufffd"}},
		},
		{
			name:     "invalid UTF-8 becomes U+FFFD",
			status:   400,
			problems: []Problem{{Level: Severe, Field: "f\xff", Message: "a\xffb\xc3(\xed\xa0\x80z"}},
			want:     []Problem{{Level: Severe, Field: "f\ufffd", Message: "a\ufffdb\ufffd(\ufffd\ufffd\ufffdz"}},
		},
		{
			name:     "control characters",
			status:   400,
			problems: []Problem{{Level: Severe, Message: "\x00\x01\x08\t\n\r\x0b\x0c\x1b\x1f\x7f end"}},
			wantRaw:  []string{`\u0000\u0001\u0008\t\n\r\u000b\u000c\u001b\u001f`},
		},
		{
			name:     "HTML characters escaped",
			status:   400,
			problems: []Problem{{Level: Severe, Field: "<b>", Message: "</script><script>alert(1)&amp;</script>"}},
			wantRaw:  []string{`\u003c/script\u003e`, `\u0026amp;`},
			notRaw:   []string{"<", ">", "&"},
		},
		{
			name:     "line and paragraph separators escaped",
			status:   400,
			problems: []Problem{{Level: Severe, Message: "a\u2028b\u2029c"}},
			wantRaw:  []string{`a\u2028b\u2029c`},
			notRaw:   []string{"\u2028", "\u2029"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("keep:")
			out := Append(bytes.Clone(prefix), tt.status, tt.problems)
			if !bytes.HasPrefix(out, prefix) {
				t.Fatalf("Append lost dst: %q", out)
			}
			raw := out[len(prefix):]
			got := decodeBody(t, raw)
			want := Body{OK: false, Status: tt.status, Problems: tt.problems}
			if tt.want != nil {
				want.Problems = tt.want
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("decoded %+v, want %+v (raw %s)", got, want, raw)
			}
			if !utf8.Valid(raw) {
				t.Errorf("output is not valid UTF-8: %q", raw)
			}
			for _, c := range raw {
				if c < 0x20 {
					t.Errorf("raw control byte %#x in %q", c, raw)
				}
			}
			for _, s := range tt.wantRaw {
				if !bytes.Contains(raw, []byte(s)) {
					t.Errorf("output %s does not contain %s", raw, s)
				}
			}
			for _, s := range tt.notRaw {
				if bytes.Contains(raw, []byte(s)) {
					t.Errorf("output %s contains %q", raw, s)
				}
			}
			// encoding/json agrees on what the problems say.
			if len(tt.problems) > 0 {
				ref, err := json.Marshal(Body{Status: tt.status, Problems: withLevels(tt.problems)})
				if err != nil {
					t.Fatal(err)
				}
				if refBody := decodeBody(t, ref); !reflect.DeepEqual(got.Problems, refBody.Problems) {
					t.Errorf("decoded %+v, encoding/json renders %+v", got.Problems, refBody.Problems)
				}
			}
		})
	}
}

func withLevels(ps []Problem) []Problem {
	out := make([]Problem, len(ps))
	for i, p := range ps {
		if p.Level == "" {
			p.Level = Severe
		}
		out[i] = p
	}
	return out
}

func TestNew(t *testing.T) {
	tests := []struct {
		name string
		e    *Error
		want Problem
		str  string
	}{
		{
			name: "default message",
			e:    New(404, CodeRouteNotFound, "", ""),
			want: Problem{Level: Severe, Code: CodeRouteNotFound, Message: "no route matches this request"},
			str:  "404 no route matches this request",
		},
		{
			name: "own message and field",
			e:    New(400, CodeInvalidField, "plan", "unknown plan"),
			want: Problem{Level: Severe, Code: CodeInvalidField, Field: "plan", Message: "unknown plan"},
			str:  "400 plan: unknown plan",
		},
		{
			name: "formatted",
			e:    Newf(400, CodeInvalidField, "cost", "%d: want 1 to %d", -1, 10),
			want: Problem{Level: Severe, Code: CodeInvalidField, Field: "cost", Message: "-1: want 1 to 10"},
			str:  "400 cost: -1: want 1 to 10",
		},
		{
			name: "wrapped detail in Error only",
			e:    New(503, CodeStoreUnavailable, "", "").Wrap(errors.New("nats: no responders")),
			want: Problem{Level: Severe, Code: CodeStoreUnavailable, Message: "the credential store is unavailable"},
			str:  "503 the credential store is unavailable (nats: no responders)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.e.Problems) != 1 || tt.e.Problems[0] != tt.want {
				t.Errorf("Problems = %+v, want [%+v]", tt.e.Problems, tt.want)
			}
			if got := tt.e.Error(); got != tt.str {
				t.Errorf("Error() = %q, want %q", got, tt.str)
			}
			if tt.e.Err != nil && bytes.Contains(tt.e.Bytes(), []byte(tt.e.Err.Error())) {
				t.Errorf("Bytes() = %s leaks the internal error", tt.e.Bytes())
			}
		})
	}
}

func TestFrom(t *testing.T) {
	secret := errors.New("dial tcp 10.0.0.7:4222: password=hunter2")
	pe := New(409, CodeConflict, "id", "")
	tests := []struct {
		name    string
		err     error
		same    *Error // when set, From must return this very error
		status  int
		code    Code
		message string
	}{
		{name: "plain error", err: secret, status: 500, code: CodeInternal, message: "internal error"},
		{name: "wrapped plain error", err: fmt.Errorf("lookup: %w", secret), status: 500, code: CodeInternal, message: "internal error"},
		{name: "joined plain errors", err: errors.Join(secret, errors.New("second")), status: 500, code: CodeInternal, message: "internal error"},
		{name: "problems error", err: pe, same: pe, status: 409, code: CodeConflict, message: "already exists"},
		{name: "wrapped problems error", err: fmt.Errorf("create: %w", pe), same: pe, status: 409, code: CodeConflict, message: "already exists"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := From(tt.err)
			if got == nil {
				t.Fatal("From returned nil")
			}
			if tt.same != nil && got != tt.same {
				t.Errorf("From = %p, want the wrapped *Error %p", got, tt.same)
			}
			if got.Status != tt.status {
				t.Errorf("Status = %d, want %d", got.Status, tt.status)
			}
			body := decodeBody(t, got.Bytes())
			if len(body.Problems) != 1 || body.Problems[0].Code != tt.code || body.Problems[0].Message != tt.message {
				t.Errorf("body problems = %+v, want one %q %q", body.Problems, tt.code, tt.message)
			}
			if body.Status != tt.status || body.OK {
				t.Errorf("body = %+v, want status %d and ok false", body, tt.status)
			}
			if bytes.Contains(got.Bytes(), []byte("hunter2")) || bytes.Contains(got.Bytes(), []byte("10.0.0.7")) {
				t.Errorf("Bytes() = %s leaks the error text", got.Bytes())
			}
			if tt.same == nil && !errors.Is(got, secret) {
				t.Errorf("From(%v) does not keep the error as detail: errors.Is = false", tt.err)
			}
		})
	}
}

func TestAppendStringAppends(t *testing.T) {
	got := AppendString([]byte("x="), "a<b")
	if want := `x="a\u003cb"`; string(got) != want {
		t.Errorf("AppendString = %s, want %s", got, want)
	}
	if got, want := string(AppendString(nil, "")), `""`; got != want {
		t.Errorf("AppendString(\"\") = %s, want %s", got, want)
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\"back\\slash", "<>&", "\x00\x1f\x7f", "a\xffb", "\u2028\u2029", "héllo 世界 🙂", "\xed\xa0\x80", "\xf4\x90\x80\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := AppendString(nil, s)
		if !json.Valid(out) {
			t.Fatalf("AppendString(%q) = %s is not valid JSON", s, out)
		}
		if !utf8.Valid(out) {
			t.Fatalf("AppendString(%q) = %q is not valid UTF-8", s, out)
		}
		if bytes.ContainsAny(out, "<>&\u2028\u2029") {
			t.Fatalf("AppendString(%q) = %s has an unescaped HTML or separator character", s, out)
		}
		for _, c := range out {
			if c < 0x20 {
				t.Fatalf("AppendString(%q) = %q has a raw control byte", s, out)
			}
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("Unmarshal(%s): %v", out, err)
		}
		if utf8.ValidString(s) {
			if got != s {
				t.Fatalf("round trip of %q = %q", s, got)
			}
			return
		}
		// Invalid UTF-8: encoding/json's replacement is the reference.
		ref, _ := json.Marshal(s)
		var want string
		if err := json.Unmarshal(ref, &want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("AppendString(%q) decodes to %q, encoding/json to %q", s, got, want)
		}
	})
}
