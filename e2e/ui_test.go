package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/chromedp"
)

// chromium returns the path of the Chromium to drive. Without one the
// test is skipped, or fails where CI=1 or TOLLGATE_REQUIRE_BROWSER=1 say
// that a browser must be there.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("TOLLGATE_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	msg := "no Chromium found (/usr/bin/chromium): install Debian's (apt-get install chromium) to run the browser test"
	if os.Getenv("CI") == "1" || os.Getenv("TOLLGATE_REQUIRE_BROWSER") == "1" {
		t.Fatal(msg + "; CI=1 or TOLLGATE_REQUIRE_BROWSER=1 require it")
	}
	t.Skip(msg)
	return ""
}

// tab drives one browser tab; every step is bounded by its own timeout.
type tab struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex // protects problems
	problems []string   // script exceptions and console errors of the page
}

// do runs steps within d, or fails the test saying what it was doing.
func (b *tab) do(what string, d time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v\n%s", what, err, b.text())
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *tab, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS polls until expr is true, for at most d, running between (a
// click on Refresh) before each try after the first.
func (b *tab) waitJS(what, expr string, d time.Duration, between ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	deadline := time.Now().Add(d)
	for try := 0; ; try++ {
		if try > 0 && len(between) > 0 {
			b.do(what+": between tries", 10*time.Second, between...)
		}
		if eval[bool](b, expr) {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s: %s still false after %v; the page says:\n%s", what, expr, d, b.text())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// text is what the page shows, for failure messages.
func (b *tab) text() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	if err != nil {
		return "(the page cannot be read: " + err.Error() + ")"
	}
	if len(s) > 4000 {
		s = s[:4000] + "…"
	}
	return s
}

// watch collects the page's uncaught exceptions and its console and
// security errors (a refused inline script or style among them) until
// ctx ends. Network errors (the 401 of a wrong token) are expected.
func (b *tab) watch() {
	exceptions := chromedp.Events(b.ctx, runtime.ExceptionThrown)
	entries := chromedp.Events(b.ctx, cdplog.EntryAdded)
	if _, err := chromedp.Call(b.ctx, cdplog.Enable, cdp.Empty{}); err != nil {
		b.t.Fatalf("enable the log: %v", err)
	}
	add := func(s string) {
		b.mu.Lock()
		b.problems = append(b.problems, s)
		b.mu.Unlock()
	}
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			add(fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber, msg))
		}
	}()
	go func() {
		for ev, err := range entries {
			if err != nil {
				return
			}
			if e := ev.Entry; e.Level == cdplog.EntryLevelError && e.Source != cdplog.EntrySourceNetwork {
				add(fmt.Sprintf("%s error: %s (%s)", e.Source, e.Text, e.URL))
			}
		}
	}()
}

// secretsNowhere checks that the admin token is in the tab's
// sessionStorage (when signedIn) and nowhere else the browser keeps or
// shows: not in the URL, a cookie, localStorage or the page.
func (b *tab) secretsNowhere(when, token string, signedIn bool) {
	b.t.Helper()
	if href := eval[string](b, `location.href`); strings.Contains(href, token) {
		b.t.Errorf("%s: the token is in the URL %s", when, href)
	}
	if c := eval[string](b, `document.cookie`); c != "" {
		b.t.Errorf("%s: the page has cookies %q", when, c)
	}
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	cookies, err := chromedp.Call(ctx, storage.GetCookies, storage.GetCookiesParams{})
	if err != nil {
		b.t.Fatalf("read the cookies: %v", err)
	}
	if len(cookies.Cookies) != 0 {
		b.t.Errorf("%s: the browser holds %d cookies", when, len(cookies.Cookies))
	}
	if n := eval[int](b, `localStorage.length`); n != 0 {
		b.t.Errorf("%s: localStorage holds %d items", when, n)
	}
	if eval[bool](b, fmt.Sprintf(`document.documentElement.outerHTML.includes(%q)`, token)) {
		b.t.Errorf("%s: the token is in the page", when)
	}
	stored := eval[[]string](b, `Object.keys(sessionStorage).map(k => sessionStorage.getItem(k))`)
	in := false
	for _, v := range stored {
		in = in || v == token
	}
	if in != signedIn {
		b.t.Errorf("%s: token in sessionStorage: %v, want %v (sessionStorage has %d items)", when, in, signedIn, len(stored))
	}
}

// TestUIInBrowser drives the operators' web page of the real binary in
// headless Chromium: sign in, create a tenant and a key (shown once),
// watch usage and the daily plot move with requests through the proxy,
// approve a limit increase request with less than asked, and sign out;
// the admin token stays in sessionStorage only.
func TestUIInBrowser(t *testing.T) {
	browser := chromium(t)
	up := backend(t)
	in := configured(t, "", fmt.Sprintf(`log: {access: false}
quota: {max_lease: 10, lease_idle: 1s}
plans:
  pro: {monthly_requests: 1000}
routes:
  - {path_prefix: /, upstream: http://%s, auth: [api_key]}
`, up))
	in.start()
	shot := os.Getenv("TOLLGATE_UI_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "tenant-page.png")
	}

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.WindowSize(1280, 1000))...)
	defer cancelAlloc()
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	defer cancelTab()
	// The browser lives as long as the context of the first call: start
	// it on one without a deadline (bounded here by a timer), then bound
	// each step.
	stopAll := time.AfterFunc(4*time.Minute, cancelTab)
	defer stopAll.Stop()
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start %s: %v", browser, err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not start within 60s", browser)
	}
	b := &tab{t: t, ctx: ctx}
	b.watch()
	const step = 30 * time.Second
	token := replicaToken
	ui := "http://" + in.admin + "/ui"

	// Sign in: a wrong token is refused, the right one opens the tenants.
	b.do("open the page", step, chromedp.Navigate(ui), chromedp.WaitVisible(chromedp.ID("token-input")))
	if href := eval[string](b, `location.pathname`); href != "/ui/" {
		t.Errorf("/ui led to %s, want /ui/", href)
	}
	b.do("sign in with a wrong token", step,
		chromedp.SendKeys(chromedp.ID("token-input"), "tga_not_the_token_0123456789"),
		chromedp.Click(chromedp.CSS("#sign-in-form button[type=submit]")))
	b.waitJS("wrong token refused", `document.querySelector('#sign-in-error').textContent.includes('not the admin token')`, step)
	b.secretsNowhere("after a refused sign-in", "tga_not_the_token_0123456789", false)
	b.do("sign in", step,
		chromedp.Evaluate[chromedp.Void](`document.querySelector('#token-input').value = ''`),
		chromedp.SendKeys(chromedp.ID("token-input"), token),
		chromedp.Click(chromedp.CSS("#sign-in-form button[type=submit]")))
	b.waitJS("the tenants list", `document.querySelector('main h1')?.textContent === 'Tenants'`, step)
	b.secretsNowhere("signed in", token, true)

	// A tenant and a key, created in the page; the key is shown once.
	b.do("create a tenant", step,
		chromedp.WaitVisible(chromedp.ID("tenant-id")),
		chromedp.SendKeys(chromedp.ID("tenant-id"), "acme"),
		chromedp.SetValue(chromedp.ID("tenant-plan"), "pro"),
		chromedp.Click(chromedp.ID("tenant-create")))
	b.waitJS("the tenant page", `document.querySelector('main h1')?.textContent === 'Tenant acme'`, step)
	var tv struct {
		ID    string
		Plan  string
		Limit int64
	}
	if st := adminCall(t, in, "GET", "/v1/tenants/acme", nil, &tv); st != 200 || tv.Plan != "pro" || tv.Limit != 1000 {
		t.Fatalf("the tenant made in the page: %d %+v", st, tv)
	}
	b.do("create a key", step,
		chromedp.WaitVisible(chromedp.ID("keys-name")),
		chromedp.SendKeys(chromedp.ID("keys-name"), "erp"),
		chromedp.Click(chromedp.ID("keys-create")))
	b.waitJS("the new key", `!!document.querySelector('#new-secret')`, step)
	key := eval[string](b, `document.querySelector('#new-secret').textContent`)
	if !strings.HasPrefix(key, "tg_") {
		t.Fatalf("the page shows the key %q, want tg_…", key)
	}
	if !eval[bool](b, `document.querySelector('#keys-secret').textContent.includes('will not be shown again') && document.querySelector('#copy-secret')?.tagName === 'BUTTON'`) {
		t.Errorf("the new key lacks its warning or its copy button:\n%s", b.text())
	}
	b.waitJS("the key in the list", `!!document.querySelector('#keys-table tbody tr')`, step)

	b.do("reload", step, chromedp.Reload())
	b.waitJS("the tenant page after the reload", `document.querySelector('main h1')?.textContent === 'Tenant acme' && !!document.querySelector('#keys-table tbody tr')`, step)
	if eval[bool](b, fmt.Sprintf(`!!document.querySelector('#new-secret') || document.documentElement.outerHTML.includes(%q)`, key)) {
		t.Errorf("the key is shown again after a reload")
	}
	if eval[bool](b, fmt.Sprintf(`Object.keys(sessionStorage).some(k => sessionStorage.getItem(k).includes(%q))`, key[10:])) {
		t.Errorf("the key was kept in sessionStorage")
	}
	b.secretsNowhere("after a reload", token, true)

	// Requests through the proxy move the usage bar and the daily plot.
	const n = 7
	for i := range n {
		if r := get(t, "http://"+in.proxy+"/anything", map[string]string{"X-API-Key": key}); r.status != 200 {
			t.Fatalf("request %d with the page's key: %d %s", i+1, r.status, r.body)
		}
	}
	refresh := chromedp.Click(chromedp.ID("refresh-usage"))
	b.waitJS("the usage bar", fmt.Sprintf(`document.querySelector('#usage-bar')?.getAttribute('data-used') === '%d' && document.querySelector('#usage-bar').getAttribute('data-limit') === '1000' && document.querySelector('#usage-used').textContent === '%d'`, n, n), step, refresh)
	if w := eval[float64](b, `+document.querySelector('#usage-bar rect.fill').getAttribute('width')`); w < 0.69 || w > 0.71 {
		t.Errorf("the usage bar is %v%% full, want 0.7%% (7 of 1000)", w)
	}
	// The daily history counts reservations and returns of leases: once
	// the unused part of the lease is back (lease_idle 1s), today holds
	// exactly the requests made.
	daily := fmt.Sprintf(`(() => {
		const p = document.querySelector('#daily-plot');
		if (!p || p.dataset.currentTotal !== '%d') return false;
		const cell = document.querySelector('#daily-table td[data-date="' + p.dataset.today + '"]');
		return !!cell && cell.textContent === '%d' && document.querySelectorAll('#daily-plot svg polyline.current').length === 1;
	})()`, n, n)
	deadline := time.Now().Add(step)
	for !eval[bool](b, daily) {
		if eval[bool](b, `!!document.querySelector('#daily-none')`) {
			t.Fatalf("the page shows no daily history: GET /v1/tenants/{id}/usage/daily answered 404")
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daily plot does not show %d requests today:\n%s", n, b.text())
		}
		b.do("refresh", step, refresh)
		time.Sleep(250 * time.Millisecond)
	}

	// Usage and history agree once the lease is back.
	b.waitJS("the usage bar and the plot agree", fmt.Sprintf(`document.querySelector('#usage-bar').getAttribute('data-used') === '%d' && %s`, n, daily), step, refresh)

	b.do("screenshot scroll", step, chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
	ctxShot, cancelShot := context.WithTimeout(ctx, step)
	png, err := chromedp.Run(ctxShot, chromedp.FullScreenshot(100))
	cancelShot()
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(shot), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the tenant page: %s", shot)

	// Regenerating with a grace: the new key is shown once, the old one
	// keeps working, and the list says until when.
	b.do("regenerate the key", step,
		chromedp.Click(chromedp.CSS(`#keys-table tbody tr button.secondary`)),
		chromedp.WaitVisible(chromedp.CSS(`dialog[open] select`)),
		chromedp.SetValue(chromedp.CSS(`dialog[open] select`), "24h"),
		chromedp.Click(chromedp.CSS(`dialog[open] button[type=submit]`)))
	b.waitJS("the regenerated key", fmt.Sprintf(`(document.querySelector('#new-secret')?.textContent || %q) !== %q && !!document.querySelector('#keys-table .hint')`, key, key), step)
	newKey := eval[string](b, `document.querySelector('#new-secret').textContent`)
	for _, k := range []string{key, newKey} {
		if r := get(t, "http://"+in.proxy+"/anything", map[string]string{"X-API-Key": k}); r.status != 200 {
			t.Errorf("after regenerating with a grace, key %s…: %d", k[:16], r.status)
		}
	}

	// The tenants list shows the tenant's usage.
	b.do("open the tenants", step, chromedp.Click(chromedp.CSS(`#nav a[href="#/tenants"]`)))
	b.waitJS("the tenant in the list", fmt.Sprintf(`document.querySelector('tr[data-tenant="acme"] td[data-field="used"]')?.textContent === '%d' && !!document.querySelector('tr[data-tenant="acme"] svg.bar')`, n+2), step,
		chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`tr[data-tenant="acme"]`)))

	// A limit increase request, filed by the tenant with its key, is
	// approved in the page with less than asked.
	req, _ := http.NewRequest("POST", "http://"+in.proxy+"/_tollgate/limit-requests", bytes.NewReader([]byte(`{"requested":5000,"reason":"launch"}`)))
	req.Header.Set("X-API-Key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var lr struct{ ID, Status string }
	err = json.NewDecoder(resp.Body).Decode(&lr)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 201 || lr.Status != "pending" {
		t.Fatalf("file a limit request: %d %v %+v", resp.StatusCode, err, lr)
	}
	b.do("open the requests", step, chromedp.Click(chromedp.CSS(`#nav a[href="#/requests"]`)))
	row := fmt.Sprintf(`#pending-table tr[data-id=%q]`, lr.ID)
	b.waitJS("the pending request", fmt.Sprintf(`!!document.querySelector(%q)`, row), step)
	b.do("approve 4000", step,
		chromedp.SetValue(chromedp.ID("grant-"+lr.ID), "4000"),
		chromedp.Click(chromedp.CSS(row+" button.approve")))
	b.waitJS("the request decided", fmt.Sprintf(`!document.querySelector(%q) && !!document.querySelector('tr[data-id=%q][data-status="granted"]')`, row, lr.ID), step)
	var decided struct {
		Status    string
		Granted   int64
		DecidedBy string `json:"decided_by"`
	}
	if st := adminCall(t, in, "GET", "/v1/limit-requests/"+lr.ID, nil, &decided); st != 200 || decided.Status != "granted" || decided.Granted != 4000 {
		t.Errorf("the request after the page approved it: %d %+v, want granted 4000", st, decided)
	}
	if adminCall(t, in, "GET", "/v1/tenants/acme", nil, &tv); tv.Limit != 4000 {
		t.Errorf("the tenant's limit after the grant: %d, want 4000", tv.Limit)
	}

	// The configuration, redacted.
	b.do("open the configuration", step, chromedp.Click(chromedp.CSS(`#nav a[href="#/config"]`)))
	b.waitJS("the configuration", `!!document.querySelector('#config-json')`, step)
	if cfg := eval[string](b, `document.querySelector('#config-json').textContent`); strings.Contains(cfg, token) || !strings.Contains(cfg, `"token": "[redacted]"`) || !strings.Contains(cfg, strconv.Quote(in.proxy)) {
		t.Errorf("the configuration shown:\n%s", cfg)
	}
	b.secretsNowhere("at the end", token, true)

	// Signing out forgets the token.
	b.do("sign out", step, chromedp.Click(chromedp.ID("sign-out")), chromedp.WaitVisible(chromedp.ID("token-input")))
	b.secretsNowhere("signed out", token, false)
	if n := eval[int](b, `sessionStorage.length`); n != 0 {
		t.Errorf("sessionStorage holds %d items after signing out", n)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		t.Errorf("the page: %s", p)
	}
	if strings.Contains(in.logs(), token) {
		t.Error("the admin token is in tollgate's logs")
	}
}

// TestConfigEndpointReloads: GET /v1/config on the real binary shows the
// configuration without the admin token, and the outcome of the last
// reload whether a signal, the file's change or POST /v1/reload started
// it.
func TestConfigEndpointReloads(t *testing.T) {
	in := configured(t, "", fmt.Sprintf(`log: {access: false}
plans:
  pro: {monthly_requests: 1000}
routes:
  - {path_prefix: /, upstream: http://%s, auth: [api_key]}
`, backend(t)))
	in.start()
	type view struct {
		File       string
		Config     map[string]any
		LastReload *struct {
			OK       bool
			Trigger  string
			Problems []string
		} `json:"last_reload"`
	}
	read := func() (view, string) {
		t.Helper()
		r := get(t, "http://"+in.admin+"/v1/config", map[string]string{"Authorization": "Bearer " + replicaToken})
		var v view
		if r.status != 200 || json.Unmarshal(r.body, &v) != nil {
			t.Fatalf("GET /v1/config: %d %s", r.status, r.body)
		}
		if strings.Contains(string(r.body), replicaToken) {
			t.Fatalf("GET /v1/config shows the admin token: %s", r.body)
		}
		return v, string(r.body)
	}
	if v, _ := read(); v.File != in.config || v.LastReload != nil || v.Config["listen"] != in.proxy {
		t.Errorf("at the start: file %q listen %v last_reload %+v", v.File, v.Config["listen"], v.LastReload)
	}

	// A broken file, signalled: refused, with its problem.
	good, err := os.ReadFile(in.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in.config, append(bytes.Clone(good), "  - {path_prefix: /x, upstream: 'ftp://nope', auth: [api_key]}\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := in.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		v, body := read()
		if r := v.LastReload; r == nil || r.OK || (r.Trigger != "SIGHUP" && r.Trigger != "file changed") ||
			len(r.Problems) == 0 || !strings.Contains(strings.Join(r.Problems, "\n"), "routes[1].upstream") {
			return fmt.Errorf("after a broken file: %s", body)
		}
		return nil
	})

	// Mended, through the API.
	if err := os.WriteFile(in.config, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if st := adminCall(t, in, "POST", "/v1/reload", nil, nil); st != 200 {
		t.Fatalf("POST /v1/reload: %d", st)
	}
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		// The file watcher may reload the mended file too; either way
		// the last reload took effect.
		v, body := read()
		if r := v.LastReload; r == nil || !r.OK || len(r.Problems) != 0 || (r.Trigger != "api" && r.Trigger != "file changed") {
			return fmt.Errorf("after mending: %s", body)
		}
		return nil
	})
}
