// Package e2e builds the real tollgate binary and walks the user's path
// through it: embedded NATS, a real backend, the admin CLI, restarts and
// kill -9.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/echo"

	// The binary is built with "go build" from TestMain, which the test
	// cache does not see: importing the command's package ties cached
	// results to every source file it is built from.
	_ "github.com/tollgate/tollgate/internal/cli"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tollgate-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "tollgate")
	build := exec.Command("go", "build", "-race", "-o", binary, "../cmd/tollgate")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cannot build tollgate:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// backend runs the echo backend on loopback.
func backend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = echo.Serve(ln) }()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

type instance struct {
	t      *testing.T
	dir    string
	config string
	proxy  string
	admin  string
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    bytes.Buffer // stderr: logs, the generated admin token
	exited chan struct{}
}

func newInstance(t *testing.T, upstream string, monthly int) *instance {
	t.Helper()
	in := &instance{t: t, dir: t.TempDir(), proxy: freeAddr(t), admin: freeAddr(t)}
	in.config = filepath.Join(in.dir, "config.yaml")
	cfg := fmt.Sprintf(`listen: %s
admin: {listen: %s, token: "${E2E_ADMIN_TOKEN}"}
data_dir: %s
nats: {url: ""}
quota: {timezone: UTC, max_lease: 10}
plans:
  pro: {monthly_requests: %d, addons: {mcal: 8000}}
routes:
  - {path_prefix: /, upstream: http://%s, auth: [api_key]}
`, in.proxy, in.admin, filepath.Join(in.dir, "data"), monthly, upstream)
	if err := os.WriteFile(in.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return in
}

func (in *instance) start() {
	in.t.Helper()
	in.spawn()
	in.waitReady()
}

// spawn starts the process without waiting until it is ready, so that
// several can start at once.
func (in *instance) spawn() {
	in.t.Helper()
	in.mu.Lock()
	in.out.Reset()
	in.mu.Unlock()
	cmd := exec.Command(binary, "serve", "-config", in.config)
	cmd.Env = append(os.Environ(), "E2E_ADMIN_TOKEN=")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		in.t.Fatal(err)
	}
	in.cmd = cmd
	in.exited = make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			in.mu.Lock()
			in.out.WriteString(sc.Text() + "\n")
			in.mu.Unlock()
		}
	}()
	go func() { _ = cmd.Wait(); pw.Close(); close(in.exited) }()
	in.t.Cleanup(func() { in.kill() })
}

func (in *instance) logs() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.out.String()
}

func (in *instance) waitReady() {
	in.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + in.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-in.exited:
			in.t.Fatalf("tollgate exited:\n%s", in.logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
	in.t.Fatalf("tollgate not ready after 60s:\n%s", in.logs())
}

func (in *instance) stop(sig syscall.Signal) {
	in.t.Helper()
	if in.cmd == nil || in.cmd.Process == nil {
		return
	}
	_ = in.cmd.Process.Signal(sig)
	select {
	case <-in.exited:
	case <-time.After(30 * time.Second):
		in.t.Errorf("tollgate did not stop on %v", sig)
		_ = in.cmd.Process.Kill()
		<-in.exited
	}
	in.cmd = nil
}

func (in *instance) kill() { in.stop(syscall.SIGKILL) }

// cli runs the admin CLI of the real binary.
func (in *instance) cli(token string, args ...string) (string, error) {
	in.t.Helper()
	cmd := exec.Command(binary, append([]string{"admin", "-config", in.config}, args...)...)
	cmd.Env = append(os.Environ(), "TOLLGATE_ADMIN_TOKEN="+token, "E2E_ADMIN_TOKEN=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%v: %s", err, stderr.String())
	}
	return stdout.String(), nil
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func get(t *testing.T, url string, hdr map[string]string) result {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{resp.StatusCode, resp.Header, b}
}

func problemCode(t *testing.T, r result) string {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var body struct {
		OK       bool `json:"ok"`
		Status   int  `json:"status"`
		Problems []struct {
			Level, Code, Message string
		} `json:"problems"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || body.OK || body.Status != r.status || len(body.Problems) == 0 {
		t.Fatalf("not a problems body for %d: %s", r.status, r.body)
	}
	return body.Problems[0].Code
}

var tokenRE = regexp.MustCompile(`TOLLGATE_ADMIN_TOKEN=(tga_[A-Za-z0-9]+)`)

func TestUserPath(t *testing.T) {
	in := newInstance(t, backend(t), 25)
	in.start()
	m := tokenRE.FindStringSubmatch(in.logs())
	if m == nil {
		t.Fatalf("serve printed no admin token:\n%s", in.logs())
	}
	token := m[1]
	if strings.Count(in.logs(), token) != 1 {
		t.Errorf("admin token printed %d times, want once", strings.Count(in.logs(), token))
	}

	if out, err := in.cli(token, "tenants", "create", "acme", "--plan", "pro"); err != nil {
		t.Fatalf("tenants create: %v\n%s", err, out)
	}
	out, err := in.cli(token, "keys", "create", "acme", "--name", "erp")
	if err != nil {
		t.Fatalf("keys create: %v", err)
	}
	var created struct{ ID, Key, Name string }
	if err := json.Unmarshal([]byte(out), &created); err != nil || !strings.HasPrefix(created.Key, "tg_") {
		t.Fatalf("keys create printed %q", out)
	}
	key := created.Key
	url := "http://" + in.proxy + "/anything"

	// 401 without a key, with a malformed one and with an unknown one.
	r := get(t, url, nil)
	if r.status != 401 || problemCode(t, r) != "credential_missing" || r.header.Get("WWW-Authenticate") == "" {
		t.Errorf("no key: %d %s", r.status, r.body)
	}
	if r = get(t, url, map[string]string{"X-API-Key": "tg_nope"}); r.status != 401 || problemCode(t, r) != "credential_malformed" {
		t.Errorf("malformed key: %d %s", r.status, r.body)
	}

	// 200 with the key: limit headers, identity to the backend, forged
	// identity and the key itself removed.
	r = get(t, url, map[string]string{"X-API-Key": key, "X-Tollgate-Tenant": "evil", "X-Tollgate-Credential": "evil"})
	if r.status != 200 {
		t.Fatalf("with key: %d %s", r.status, r.body)
	}
	for k, v := range map[string]string{"X-RateLimit-Limit": "25", "X-RateLimit-Remaining": "24", "RateLimit-Policy": `"monthly";q=25`} {
		if got := r.header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if r.header.Get("X-RateLimit-Reset") == "" || !strings.HasPrefix(r.header.Get("RateLimit"), `"monthly";r=24;t=`) {
		t.Errorf("reset headers: %q %q", r.header.Get("X-RateLimit-Reset"), r.header.Get("RateLimit"))
	}
	var seen echo.Reply
	if err := json.Unmarshal(r.body, &seen); err != nil {
		t.Fatal(err)
	}
	if seen.Headers["X-Tollgate-Tenant"] != "acme" || seen.Headers["X-Tollgate-Credential"] != created.ID || seen.Headers["X-Tollgate-Auth"] != "api_key" {
		t.Errorf("backend saw identity %v", seen.Headers)
	}
	if _, ok := seen.Headers["X-Api-Key"]; ok {
		t.Error("the API key was forwarded to the backend")
	}
	if strings.Contains(in.logs(), key[10:]) {
		t.Error("the key's secret appears in the logs")
	}

	// Use up the quota: 25 in all, then 429 with Retry-After.
	for i := 0; i < 24; i++ {
		if r = get(t, url, map[string]string{"X-API-Key": key}); r.status != 200 {
			t.Fatalf("request %d: %d %s", i+2, r.status, r.body)
		}
	}
	r = get(t, url, map[string]string{"X-API-Key": key})
	if r.status != 429 || problemCode(t, r) != "quota_exceeded" || r.header.Get("Retry-After") == "" || r.header.Get("X-RateLimit-Remaining") != "0" {
		t.Errorf("over quota: %d %v %s", r.status, r.header, r.body)
	}

	// Usage survives a graceful restart exactly.
	in.stop(syscall.SIGTERM)
	in.start()
	if strings.Contains(in.logs(), "Generated an admin token") {
		t.Error("a second admin token was generated on restart")
	}
	out, err = in.cli(token, "usage", "acme")
	if err != nil {
		t.Fatal(err)
	}
	var u struct {
		Period      string
		Limit, Used int64
		Remaining   int64
		Reset       time.Time
	}
	if err := json.Unmarshal([]byte(out), &u); err != nil {
		t.Fatal(err)
	}
	if u.Used != 25 || u.Remaining != 0 || u.Limit != 25 || u.Period != time.Now().UTC().Format("2006-01") {
		t.Errorf("usage after restart = %+v, want 25 used of 25 this month", u)
	}
	if r = get(t, url, map[string]string{"X-API-Key": key}); r.status != 429 {
		t.Errorf("after restart: %d, want 429", r.status)
	}

	// An add-on unit raises the limit at once.
	if _, err := in.cli(token, "tenants", "update", "acme", "--addon", "mcal=1"); err != nil {
		t.Fatal(err)
	}
	if r = get(t, url, map[string]string{"X-API-Key": key}); r.status != 200 || r.header.Get("X-RateLimit-Limit") != "8025" {
		t.Errorf("after add-on: %d limit %q", r.status, r.header.Get("X-RateLimit-Limit"))
	}

	// An increase request above the plan's auto_approve_up_to waits for
	// an admin, who grants less than asked.
	out, err = in.cli(token, "limit-requests", "create", "acme", "--requested", "9000", "--reason", "year-end")
	var lr struct{ ID, Status string }
	if err != nil || json.Unmarshal([]byte(out), &lr) != nil || lr.Status != "pending" {
		t.Fatalf("limit-requests create: %v %s", err, out)
	}
	if out, err = in.cli(token, "limit-requests", "list", "--status", "pending"); err != nil || !strings.Contains(out, lr.ID) {
		t.Fatalf("pending list: %v %s", err, out)
	}
	if out, err = in.cli(token, "limit-requests", "approve", lr.ID, "--granted", "8500"); err != nil || !strings.Contains(out, `"granted": 8500`) {
		t.Fatalf("approve: %v %s", err, out)
	}
	if r = get(t, url, map[string]string{"X-API-Key": key}); r.status != 200 || r.header.Get("X-RateLimit-Limit") != "8500" {
		t.Errorf("after the grant: %d limit %q", r.status, r.header.Get("X-RateLimit-Limit"))
	}

	// Regenerating a key: the old one stops working, the new one works.
	out, err = in.cli(token, "keys", "regenerate", "acme", created.ID)
	var regen struct{ ID, Key string }
	if err != nil || json.Unmarshal([]byte(out), &regen) != nil || regen.ID != created.ID || regen.Key == key {
		t.Fatalf("regenerate: %v %s", err, out)
	}
	if r = get(t, url, map[string]string{"X-API-Key": key}); r.status != 401 {
		t.Errorf("old key after regenerate: %d", r.status)
	}
	if r = get(t, url, map[string]string{"X-API-Key": regen.Key}); r.status != 200 {
		t.Errorf("new key: %d %s", r.status, r.body)
	}
	key = regen.Key

	// A deleted key stops working.
	if _, err := in.cli(token, "keys", "delete", "acme", created.ID); err != nil {
		t.Fatal(err)
	}
	if r = get(t, url, map[string]string{"X-API-Key": key}); r.status != 401 || problemCode(t, r) != "credential_invalid" {
		t.Errorf("deleted key: %d %s", r.status, r.body)
	}
	out, _ = in.cli(token, "keys", "list", "acme")
	if strings.Contains(out, created.ID) || strings.Contains(out, key) {
		t.Errorf("deleted key still listed: %s", out)
	}
}

// TestKill9KeepsCounts: kill -9 during load forgets no admitted request;
// at most the unused part of one lease is counted without being served.
func TestKill9KeepsCounts(t *testing.T) {
	in := newInstance(t, backend(t), 100000)
	in.start()
	token := tokenRE.FindStringSubmatch(in.logs())[1]
	created := struct{ Key string }{newTenantKey(t, in, token, "acme")}

	var served int64
	var mu sync.Mutex
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000 && ctx.Err() == nil; i++ {
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+in.proxy+"/x", nil)
				req.Header.Set("X-API-Key", created.Key)
				resp, err := client.Do(req)
				if err != nil {
					return // the process is gone
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					mu.Lock()
					served++
					mu.Unlock()
				}
			}
		}()
	}
	// Kill once some requests have been served.
	waitFor(ctx, 5*time.Millisecond, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return served >= 300
	})
	in.kill()
	wg.Wait()
	in.start()
	out, err := in.cli(token, "usage", "acme")
	if err != nil {
		t.Fatal(err)
	}
	var u struct{ Used int64 }
	_ = json.Unmarshal([]byte(out), &u)
	// max_lease is 10; a background refill may hold a second lease.
	if u.Used < served || u.Used > served+20 {
		t.Errorf("after kill -9: %d counted for %d served; want served ≤ counted ≤ served+20", u.Used, served)
	}
	t.Logf("kill -9 after %d served: %d counted", served, u.Used)
}

func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("listen: nope\nroutes:\n  - {path_prefix: /, upstream: 'ftp://x', auth: [magic]}\nextra: 1\n"), 0o600)
	cmd := exec.Command(binary, "check", bad)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("check of a bad file: %v, want exit 1\n%s", err, out)
	}
	for _, want := range []string{bad + ":1: listen:", bad + ":3: routes[0].upstream:", bad + ":3: routes[0].auth[0]:", bad + `:4: extra: unknown key "extra"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	out, err = exec.Command(binary, "check", "../config.yaml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "config ../config.yaml is valid") {
		t.Errorf("shipped config: %v %s", err, out)
	}
}
