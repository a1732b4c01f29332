package cli

// Tests of the mapping of the credential commands of `tollgate admin`
// (keys, clients, users) to admin API requests: an httptest.Server records
// what the CLI sends and answers canned JSON. The package's own tests, not
// cli_test: passwords are read from the package's stdin, which IO lacks.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// sent is one request the fake admin API received.
type sent struct {
	method, path, query string
	header              http.Header
	body                []byte
}

// fakeAdmin is an admin API that records requests and answers status with
// answer (none for 204).
type fakeAdmin struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []sent
	status int
	answer string
}

func newFakeAdmin(t *testing.T) *fakeAdmin {
	t.Helper()
	f := &fakeAdmin{status: 200, answer: `{"id":"k1"}`}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.got = append(f.got, sent{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Clone(), b})
		status, answer := f.status, f.answer
		f.mu.Unlock()
		if status == 204 {
			w.WriteHeader(204)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, answer)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAdmin) requests() []sent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sent(nil), f.got...)
}

// admin runs `tollgate admin -url ... -token tok args...` with stdin
// reading in.
func (f *fakeAdmin) admin(t *testing.T, in io.Reader, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return f.adminCtx(context.Background(), t, in, args...)
}

func (f *fakeAdmin) adminCtx(ctx context.Context, t *testing.T, in io.Reader, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	old := stdin
	stdin = in
	t.Cleanup(func() { stdin = old })
	var out, errb bytes.Buffer
	err = Run(ctx, append([]string{"admin", "-url", f.srv.URL, "-token", "tok"}, args...),
		IO{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }})
	return out.String(), errb.String(), err
}

// noStdin fails the test when it is read: a command that must not ask for
// a password, or must refuse before asking.
type noStdin struct{ t *testing.T }

func (n noStdin) Read([]byte) (int, error) {
	n.t.Error("stdin was read")
	return 0, io.EOF
}

// sameJSON reports whether a and b hold equal JSON values.
func sameJSON(t *testing.T, a []byte, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("body %q: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("want %q: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

func TestAdminCredentialCommandsMapToRequests(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		method string
		path   string
		query  string
		body   string // "" for none
		status int    // of the answer; 0 is 200
		answer string
		stdout string // a part of stdout
		stderr string // a part of stderr
	}{
		{args: []string{"keys", "create", "acme", "--name", "erp"},
			method: "POST", path: "/v1/tenants/acme/keys", body: `{"name":"erp"}`,
			answer: `{"id":"k1","key":"tg_k1_s3cr3t"}`, stdout: `"key": "tg_k1_s3cr3t"`,
			stderr: "The key above is shown only this once"},
		{args: []string{"keys", "create", "acme", "--name", "erp", "--scopes", "read,CREATE", "--scopes", "DELETE",
			"--modules", "invoices, billing", "--grants", "password", "--expires", "2027-01-01T00:00:00Z"},
			method: "POST", path: "/v1/tenants/acme/keys",
			body:   `{"name":"erp","scopes":["READ","CREATE","DELETE"],"modules":["invoices","billing"],"grants":["password"],"expires":"2027-01-01T00:00:00Z"}`,
			stderr: "shown only this once"},
		{args: []string{"keys", "create", "acme", "--name=erp", "--expires=2027-01-01T02:00:00+02:00"},
			method: "POST", path: "/v1/tenants/acme/keys", body: `{"name":"erp","expires":"2027-01-01T02:00:00+02:00"}`,
			stderr: "shown only this once"},
		{args: []string{"keys", "list", "acme", "--size", "5", "--order-by", "name", "--desc"},
			method: "GET", path: "/v1/tenants/acme/keys", query: "desc=true&orderBy=name&size=5"},
		{args: []string{"keys", "get", "acme", "k1"}, method: "GET", path: "/v1/tenants/acme/keys/k1"},
		{args: []string{"keys", "delete", "acme", "k1"}, method: "DELETE", path: "/v1/tenants/acme/keys/k1",
			status: 204, stdout: "done"},
		{args: []string{"keys", "regenerate", "acme", "k1"},
			method: "POST", path: "/v1/tenants/acme/keys/k1/regenerate",
			answer: `{"id":"k1","key":"tg_k1_new"}`, stderr: "The key above is shown only this once"},
		{args: []string{"keys", "regenerate", "acme", "k1", "--grace", "24h"},
			method: "POST", path: "/v1/tenants/acme/keys/k1/regenerate", body: `{"grace":"24h"}`,
			answer: `{"id":"k1","key":"tg_k1_new","previous":{"expires":"2027-01-02T00:00:00Z"}}`,
			stderr: "The old key keeps working until 2027-01-02T00:00:00Z"},

		{args: []string{"clients", "create", "acme", "--name", "erp", "--scopes", "READ", "--grants", "client_credentials"},
			method: "POST", path: "/v1/tenants/acme/clients", body: `{"name":"erp","scopes":["READ"],"grants":["client_credentials"]}`,
			answer: `{"id":"tgc_1","client_secret":"shh"}`, stdout: `"client_secret": "shh"`,
			stderr: "The client secret above is shown only this once"},
		{args: []string{"clients", "list", "acme"}, method: "GET", path: "/v1/tenants/acme/clients"},
		{args: []string{"clients", "get", "acme", "tgc_1"}, method: "GET", path: "/v1/tenants/acme/clients/tgc_1"},
		{args: []string{"clients", "delete", "acme", "tgc_1"}, method: "DELETE", path: "/v1/tenants/acme/clients/tgc_1", status: 204},
		{args: []string{"clients", "regenerate", "acme", "tgc_1", "--grace", "7d"},
			method: "POST", path: "/v1/tenants/acme/clients/tgc_1/regenerate", body: `{"grace":"7d"}`,
			answer: `{"id":"tgc_1","client_secret":"new"}`, stderr: "The client secret above"},

		{args: []string{"users", "list"}, method: "GET", path: "/v1/users"},
		{args: []string{"users", "list", "--tenant", "acme", "--position", "2"},
			method: "GET", path: "/v1/users", query: "position=2&tenant=acme"},
		{args: []string{"users", "get", "bob@example.com"}, method: "GET", path: "/v1/users/bob@example.com"},
		{args: []string{"users", "update", "bob", "--type", "api_only", "--tenants", "acme,beta", "--name", "Bob",
			"--modules", "invoices", "--expires", "2027-01-01T00:00:00Z"},
			method: "PATCH", path: "/v1/users/bob",
			body: `{"type":"api_only","tenants":["acme","beta"],"name":"Bob","modules":["invoices"],"expires":"2027-01-01T00:00:00Z"}`},
		{args: []string{"users", "update", "bob", "--scopes", "READ"}, method: "PATCH", path: "/v1/users/bob", body: `{"scopes":["READ"]}`},
		{args: []string{"users", "delete", "bob"}, method: "DELETE", path: "/v1/users/bob", status: 204, stdout: "done"},

		{args: []string{"tokens", "list"}, method: "GET", path: "/v1/tokens"},
		{args: []string{"tokens", "list", "--client", "tgc_1", "--user", "bob@example.com", "--tenant", "acme", "--order-by", "expires", "--desc"},
			method: "GET", path: "/v1/tokens", query: "client=tgc_1&desc=true&orderBy=expires&tenant=acme&user=bob%40example.com"},
		{args: []string{"tokens", "get", "AbCdEfGhIjKlMnOp"}, method: "GET", path: "/v1/tokens/AbCdEfGhIjKlMnOp"},
		{args: []string{"tokens", "revoke", "AbCdEfGhIjKlMnOp"}, method: "DELETE", path: "/v1/tokens/AbCdEfGhIjKlMnOp",
			status: 204, stdout: "done"},
		{args: []string{"tokens", "revoke", "--client", "tgc_1"}, method: "POST", path: "/v1/tokens/revoke",
			body: `{"client":"tgc_1"}`, answer: `{"revoked":3}`, stdout: `"revoked": 3`},
		{args: []string{"tokens", "revoke", "--user=bob"}, method: "POST", path: "/v1/tokens/revoke", body: `{"user":"bob"}`},
		{args: []string{"tokens", "revoke", "--tenant", "acme"}, method: "POST", path: "/v1/tokens/revoke", body: `{"tenant":"acme"}`},

		// The commands there were before, still mapped as they were.
		{args: []string{"tenants", "create", "acme", "--plan", "pro", "--addon", "mcal=2"},
			method: "POST", path: "/v1/tenants", body: `{"id":"acme","plan":"pro","addons":{"mcal":2}}`},
		{args: []string{"tenants", "get", "a/b"}, method: "GET", path: "/v1/tenants/a%2Fb"},
		{args: []string{"tenants", "update", "acme", "--granted", "9000"}, method: "PATCH", path: "/v1/tenants/acme", body: `{"granted":9000}`},
		{args: []string{"usage", "acme"}, method: "GET", path: "/v1/tenants/acme/usage"},
		{args: []string{"usage", "acme", "--daily"}, method: "GET", path: "/v1/tenants/acme/usage/daily"},
		{args: []string{"usage", "acme", "--daily", "--from", "2026-11-01", "--to=2026-11-30"}, method: "GET",
			path: "/v1/tenants/acme/usage/daily", query: "from=2026-11-01&to=2026-11-30"},
		{args: []string{"reload"}, method: "POST", path: "/v1/reload"},
		{args: []string{"notifications"}, method: "GET", path: "/v1/notifications"},
		{args: []string{"notifications", "--status", "pending", "--tenant=acme", "--size", "10"},
			method: "GET", path: "/v1/notifications", query: "size=10&status=pending&tenant=acme"},
		{args: []string{"limit-requests", "list", "acme", "--status", "pending"},
			method: "GET", path: "/v1/tenants/acme/limit-requests", query: "status=pending"},
		{args: []string{"limit-requests", "approve", "r1", "--granted", "8500"},
			method: "POST", path: "/v1/limit-requests/r1/approve", body: `{"granted":8500}`},
		{args: []string{"limit-requests", "deny", "r1"}, method: "POST", path: "/v1/limit-requests/r1/deny"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			f := newFakeAdmin(t)
			if tc.status != 0 {
				f.status = tc.status
			}
			if tc.answer != "" {
				f.answer = tc.answer
			}
			stdout, stderr, err := f.admin(t, noStdin{t}, tc.args...)
			if err != nil {
				t.Fatalf("err %v; stderr: %s", err, stderr)
			}
			got := f.requests()
			if len(got) != 1 {
				t.Fatalf("%d requests, want 1", len(got))
			}
			r := got[0]
			if r.method != tc.method || r.path != tc.path || r.query != tc.query {
				t.Errorf("sent %s %s?%s, want %s %s?%s", r.method, r.path, r.query, tc.method, tc.path, tc.query)
			}
			if a := r.header.Get("Authorization"); a != "Bearer tok" {
				t.Errorf("Authorization %q", a)
			}
			switch {
			case tc.body == "" && len(r.body) > 0:
				t.Errorf("body %s, want none", r.body)
			case tc.body != "" && !sameJSON(t, r.body, tc.body):
				t.Errorf("body %s, want %s", r.body, tc.body)
			case tc.body != "" && r.header.Get("Content-Type") != "application/json":
				t.Errorf("Content-Type %q", r.header.Get("Content-Type"))
			}
			if !strings.Contains(stdout, tc.stdout) {
				t.Errorf("stdout %q lacks %q", stdout, tc.stdout)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr %q lacks %q", stderr, tc.stderr)
			}
			if tc.stderr == "" && stderr != "" {
				t.Errorf("stderr %q, want none", stderr)
			}
		})
	}
}

// checkPasswordOnlyInBody checks that the one request sent carries the
// password in its JSON body and nowhere else, and that the output does
// not show it.
func checkPasswordOnlyInBody(t *testing.T, r sent, password, stdout, stderr string) {
	t.Helper()
	var body map[string]any
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	if body["password"] != password {
		t.Errorf("body password %v, want %q", body["password"], password)
	}
	if strings.Contains(r.path+"?"+r.query, password) {
		t.Errorf("the password is in the URL %s?%s", r.path, r.query)
	}
	for k, vs := range r.header {
		for _, v := range vs {
			if strings.Contains(v, password) {
				t.Errorf("the password is in header %s", k)
			}
		}
	}
	if strings.Contains(stdout, password) || strings.Contains(stderr, password) {
		t.Errorf("the password is shown: stdout %q stderr %q", stdout, stderr)
	}
}

func TestAdminUsersCreateReadsPasswordFromStdin(t *testing.T) {
	f := newFakeAdmin(t)
	f.status, f.answer = 201, `{"id":"bob","kind":"user","type":"api_only"}`
	const pw = "correct horse battery"
	stdout, stderr, err := f.admin(t, strings.NewReader(pw+"\r\nthe second line is not read\n"),
		"users", "create", "bob", "--tenants", "acme,beta", "--type", "api_only", "--scopes", "READ",
		"--grants", "password", "--name", "Bob")
	if err != nil {
		t.Fatalf("err %v; stderr: %s", err, stderr)
	}
	got := f.requests()
	if len(got) != 1 || got[0].method != "POST" || got[0].path != "/v1/users" {
		t.Fatalf("sent %+v", got)
	}
	want := `{"username":"bob","password":"` + pw + `","tenants":["acme","beta"],"type":"api_only","scopes":["READ"],"grants":["password"],"name":"Bob"}`
	if !sameJSON(t, got[0].body, want) {
		t.Errorf("body %s, want %s", got[0].body, want)
	}
	checkPasswordOnlyInBody(t, got[0], pw, stdout, stderr)
	if !strings.Contains(stdout, `"id": "bob"`) {
		t.Errorf("stdout %q", stdout)
	}
}

func TestAdminUsersPasswordReadsStdinOrFile(t *testing.T) {
	t.Run("stdin without a final newline", func(t *testing.T) {
		f := newFakeAdmin(t)
		stdout, stderr, err := f.admin(t, strings.NewReader("n3w-password"), "users", "password", "bob")
		if err != nil {
			t.Fatalf("err %v; stderr: %s", err, stderr)
		}
		got := f.requests()
		if len(got) != 1 || got[0].method != "POST" || got[0].path != "/v1/users/bob/password" {
			t.Fatalf("sent %+v", got)
		}
		if !sameJSON(t, got[0].body, `{"password":"n3w-password"}`) {
			t.Errorf("body %s", got[0].body)
		}
		checkPasswordOnlyInBody(t, got[0], "n3w-password", stdout, stderr)
	})
	t.Run("--password-file", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(file, []byte("from-the-file\nrest\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{
			{"users", "password", "bob", "--password-file", file},
			{"users", "create", "bob", "--tenants", "acme", "--password-file=" + file},
		} {
			f := newFakeAdmin(t)
			stdout, stderr, err := f.admin(t, noStdin{t}, args...)
			if err != nil {
				t.Fatalf("%v: err %v; stderr: %s", args, err, stderr)
			}
			got := f.requests()
			if len(got) != 1 {
				t.Fatalf("%v: %d requests", args, len(got))
			}
			checkPasswordOnlyInBody(t, got[0], "from-the-file", stdout, stderr)
		}
	})
	t.Run("--password-file -", func(t *testing.T) {
		f := newFakeAdmin(t)
		_, stderr, err := f.admin(t, strings.NewReader("dash-is-stdin\n"), "users", "password", "bob", "--password-file", "-")
		if err != nil {
			t.Fatalf("err %v; stderr: %s", err, stderr)
		}
		if got := f.requests(); len(got) != 1 || !sameJSON(t, got[0].body, `{"password":"dash-is-stdin"}`) {
			t.Errorf("sent %+v", got)
		}
	})
	t.Run("a missing file", func(t *testing.T) {
		f := newFakeAdmin(t)
		_, stderr, err := f.admin(t, noStdin{t}, "users", "password", "bob", "--password-file", filepath.Join(t.TempDir(), "none"))
		if !errors.Is(err, ExitError{1}) || !strings.Contains(stderr, "--password-file") || len(f.requests()) != 0 {
			t.Errorf("err %v, stderr %q, %d requests", err, stderr, len(f.requests()))
		}
	})
}

func TestAdminRefusesPasswordOnCommandLine(t *testing.T) {
	const pw = "hunter2-on-the-line"
	for _, args := range [][]string{
		{"users", "create", "bob", "--tenants", "acme", "--password", pw},
		{"users", "create", "bob", "--tenants", "acme", "--password=" + pw},
		{"users", "password", "bob", "--password", pw},
		{"users", "update", "bob", "--password", pw},
	} {
		f := newFakeAdmin(t)
		stdout, stderr, err := f.admin(t, noStdin{t}, args...)
		if !errors.Is(err, ExitError{2}) {
			t.Errorf("%v: err %v, want exit 2", args, err)
		}
		if !strings.Contains(stderr, "unknown flag --password") {
			t.Errorf("%v: stderr %q", args, stderr)
		}
		if strings.Contains(stdout+stderr, pw) {
			t.Errorf("%v: the password is echoed: %q", args, stderr)
		}
		if n := len(f.requests()); n != 0 {
			t.Errorf("%v: %d requests sent", args, n)
		}
	}
	// Nor as an argument: refused, and not echoed.
	f := newFakeAdmin(t)
	_, stderr, err := f.admin(t, noStdin{t}, "users", "password", "bob", pw)
	if !errors.Is(err, ExitError{2}) || !strings.Contains(stderr, "too many arguments") || strings.Contains(stderr, pw) {
		t.Errorf("err %v, stderr %q", err, stderr)
	}
}

func TestAdminCommandMistakesSendNothing(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		stdin  string
		code   int
		stderr string
	}{
		{[]string{"users", "create", "bob"}, "", 2, "--tenants is required"},
		{[]string{"users", "create", "bob", "--tenants", "acme", "--expires", "tomorrow"}, "", 2, "--expires"},
		{[]string{"users", "create", "bob", "--tenants", "acme"}, "\n", 1, "no password"},
		{[]string{"users", "create", "bob", "--tenants", "acme"}, "", 1, "no password"},
		{[]string{"users", "password", "bob"}, strings.Repeat("x", maxPasswordLine+1), 1, "longer than"},
		{[]string{"users", "update", "bob"}, "", 2, "nothing to change"},
		{[]string{"users", "get"}, "", 2, "usage: tollgate admin users get USERNAME"},
		{[]string{"keys", "create", "acme"}, "", 2, "--name is required"},
		{[]string{"clients", "create", "acme", "--name", "erp", "--plan", "pro"}, "", 2, "unknown flag --plan"},
		{[]string{"clients", "get", "acme"}, "", 2, "usage: tollgate admin clients get TENANT CLIENT_ID"},
		{[]string{"keys", "get", "acme", "k1", "--desc"}, "", 2, "unknown flag --desc"},
		{[]string{"keys", "delete", "acme", "k1", "k2"}, "", 2, "too many arguments"},
		{[]string{"clients", "rotate", "acme", "c"}, "", 2, `unknown command "clients rotate"`},
		{[]string{"tokens", "revoke"}, "", 2, "give a TOKEN_ID or exactly one of --client, --user or --tenant"},
		{[]string{"tokens", "revoke", "--client", "tgc_1", "--user", "bob"}, "", 2, "exactly one of"},
		{[]string{"tokens", "revoke", "AbCdEfGhIjKlMnOp", "--tenant", "acme"}, "", 2, "exactly one of"},
		{[]string{"tokens", "revoke", "a", "b"}, "", 2, "too many arguments"},
		{[]string{"tokens", "get"}, "", 2, "usage: tollgate admin tokens get TOKEN_ID"},
		{[]string{"usage", "acme", "--from", "2026-11-01"}, "", 2, "--from and --to go with --daily"},
		{[]string{"tokens", "list", "--name", "x"}, "", 2, "unknown flag --name"},
		{[]string{"tokens", "get", "AbCdEfGhIjKlMnOp", "--client", "tgc_1"}, "", 2, "unknown flag --client"},
	} {
		f := newFakeAdmin(t)
		var in io.Reader = noStdin{t}
		if tc.code == 1 {
			in = strings.NewReader(tc.stdin)
		}
		_, stderr, err := f.admin(t, in, tc.args...)
		if !errors.Is(err, ExitError{tc.code}) || !strings.Contains(stderr, tc.stderr) {
			t.Errorf("%v: err %v, stderr %q; want exit %d and %q", tc.args, err, stderr, tc.code, tc.stderr)
		}
		if n := len(f.requests()); n != 0 {
			t.Errorf("%v: %d requests sent", tc.args, n)
		}
	}
}

func TestAdminShowsAPIProblems(t *testing.T) {
	f := newFakeAdmin(t)
	f.status, f.answer = 400, `{"problems":[{"field":"password","message":"required: 8-128 bytes"}]}`
	_, stderr, err := f.admin(t, strings.NewReader("short\n"), "users", "password", "bob")
	if !errors.Is(err, ExitError{1}) || !strings.Contains(stderr, "password: required: 8-128 bytes") {
		t.Errorf("err %v, stderr %q", err, stderr)
	}
	if strings.Contains(stderr, "short") {
		t.Errorf("stderr shows the password: %q", stderr)
	}
}

// An interrupt while the password is awaited ends the command: main's
// signal.NotifyContext turns it into ctx's end, and stdin may never answer.
func TestAdminPasswordWaitEndsWithContext(t *testing.T) {
	f := newFakeAdmin(t)
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, stderr, err := f.adminCtx(ctx, t, pr, "users", "password", "bob")
	if !errors.Is(err, ExitError{1}) || !strings.Contains(stderr, "context canceled") {
		t.Errorf("err %v, stderr %q", err, stderr)
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("%d requests sent", n)
	}
}

func TestAdminUsageListsCredentialCommands(t *testing.T) {
	for cmd := range adminCommands {
		if !strings.Contains(adminUsage, "  "+cmd) {
			t.Errorf("the usage text lacks %q", cmd)
		}
	}
}
