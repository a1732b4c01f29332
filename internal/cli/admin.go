package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/config"
)

const adminUsage = `Usage: tollgate admin [-config FILE] [-url URL] [-token TOKEN] COMMAND

The admin API's address and token come from the flags, else from
TOLLGATE_ADMIN_URL and TOLLGATE_ADMIN_TOKEN, else from the config file
(admin.listen, admin.token), else http://127.0.0.1:9901.

Commands:
  tenants create ID --plan PLAN [--addon NAME=UNITS ...] [--anchor-day N]
  tenants list [--position N] [--size N] [--order-by FIELD] [--desc]
  tenants get ID
  tenants update ID [--plan PLAN] [--addon NAME=UNITS ...] [--granted N] [--anchor-day N]
  tenants delete ID
  keys create TENANT --name NAME      prints the key; it is shown only once
  keys list TENANT
  keys delete TENANT KEY_ID
  keys regenerate TENANT KEY_ID       the old key stops working; the new one is shown once
  usage TENANT
  limit-requests create TENANT --requested N [--reason TEXT]
  limit-requests list [TENANT] [--status pending|granted|denied]
  limit-requests approve REQUEST_ID [--granted N]
  limit-requests deny REQUEST_ID
  reload                              reload the config file of the running tollgate
`

// Client calls the admin API.
type Client struct {
	URL   string
	Token string
	HTTP  *http.Client
}

// Do sends a request with an optional JSON body and decodes a JSON answer
// into out (when not nil). Errors carry the problems body's messages.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) (int, []byte, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.URL, "/")+path, body)
	if err != nil {
		return 0, nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("admin API at %s: %w", c.URL, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode >= 400 {
		return resp.StatusCode, raw, problemError(resp.StatusCode, raw)
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, raw, fmt.Errorf("admin API: bad answer: %w", err)
		}
	}
	return resp.StatusCode, raw, nil
}

func problemError(status int, raw []byte) error {
	var pb struct {
		Problems []struct {
			Field   string `json:"field"`
			Message string `json:"message"`
		} `json:"problems"`
	}
	if json.Unmarshal(raw, &pb) != nil || len(pb.Problems) == 0 {
		return fmt.Errorf("admin API: %d %s", status, http.StatusText(status))
	}
	var msgs []string
	for _, p := range pb.Problems {
		if p.Field != "" {
			msgs = append(msgs, p.Field+": "+p.Message)
		} else {
			msgs = append(msgs, p.Message)
		}
	}
	return fmt.Errorf("admin API: %d: %s", status, strings.Join(msgs, "; "))
}

// args splits positional arguments from --flags (which may come after
// positionals: `keys create acme --name erp`).
type args struct {
	pos   []string
	flags map[string][]string
}

func parseArgs(in []string, boolFlags ...string) (args, error) {
	a := args{flags: map[string][]string{}}
	isBool := map[string]bool{}
	for _, b := range boolFlags {
		isBool[b] = true
	}
	for i := 0; i < len(in); i++ {
		s := in[i]
		if !strings.HasPrefix(s, "-") || s == "-" {
			a.pos = append(a.pos, s)
			continue
		}
		name := strings.TrimLeft(s, "-")
		if k, v, ok := strings.Cut(name, "="); ok {
			a.flags[k] = append(a.flags[k], v)
			continue
		}
		if isBool[name] {
			a.flags[name] = append(a.flags[name], "true")
			continue
		}
		if i+1 >= len(in) {
			return a, fmt.Errorf("flag --%s needs a value", name)
		}
		a.flags[name] = append(a.flags[name], in[i+1])
		i++
	}
	return a, nil
}

func (a args) get(name string) (string, bool) {
	v := a.flags[name]
	if len(v) == 0 {
		return "", false
	}
	return v[len(v)-1], true
}

func adminCmd(ctx context.Context, in []string, stdio IO) error {
	a, err := parseArgs(in, "desc", "h", "help")
	if err != nil {
		fmt.Fprintln(stdio.Stderr, "tollgate admin:", err)
		return ExitError{2}
	}
	if _, h := a.get("h"); h || len(a.pos) == 0 {
		fmt.Fprint(stdio.Stderr, adminUsage)
		if h {
			return nil
		}
		return ExitError{2}
	}
	if _, h := a.get("help"); h {
		fmt.Fprint(stdio.Stdout, adminUsage)
		return nil
	}
	c, err := clientFor(a, stdio)
	if err != nil {
		fmt.Fprintln(stdio.Stderr, "tollgate admin:", err)
		return ExitError{1}
	}
	var (
		method, path string
		body         any
		showKeyNote  bool
	)
	need := func(n int, what string) error {
		if len(a.pos) < n {
			return fmt.Errorf("usage: tollgate admin %s", what)
		}
		return nil
	}
	cmd := strings.Join(a.pos[:min(2, len(a.pos))], " ")
	if a.pos[0] == "usage" || a.pos[0] == "reload" {
		cmd = a.pos[0]
	}
	switch cmd {
	case "tenants create":
		if err = need(3, "tenants create ID --plan PLAN"); err != nil {
			break
		}
		t := map[string]any{"id": a.pos[2]}
		err = tenantFlags(a, t)
		if _, ok := t["plan"]; !ok && err == nil {
			err = fmt.Errorf("--plan is required")
		}
		method, path, body = "POST", "/v1/tenants", t
	case "tenants list":
		method, path = "GET", "/v1/tenants"+listQuery(a)
	case "tenants get":
		err = need(3, "tenants get ID")
		if err == nil {
			method, path = "GET", "/v1/tenants/"+url.PathEscape(a.pos[2])
		}
	case "tenants update":
		if err = need(3, "tenants update ID [--plan PLAN] [--addon NAME=UNITS] [--granted N]"); err != nil {
			break
		}
		t := map[string]any{}
		err = tenantFlags(a, t)
		method, path, body = "PATCH", "/v1/tenants/"+url.PathEscape(a.pos[2]), t
	case "tenants delete":
		err = need(3, "tenants delete ID")
		if err == nil {
			method, path = "DELETE", "/v1/tenants/"+url.PathEscape(a.pos[2])
		}
	case "keys create":
		if err = need(3, "keys create TENANT --name NAME"); err != nil {
			break
		}
		name, ok := a.get("name")
		if !ok {
			err = fmt.Errorf("--name is required")
			break
		}
		method, path, body, showKeyNote = "POST", "/v1/tenants/"+url.PathEscape(a.pos[2])+"/keys", map[string]any{"name": name}, true
	case "keys list":
		err = need(3, "keys list TENANT")
		if err == nil {
			method, path = "GET", "/v1/tenants/"+url.PathEscape(a.pos[2])+"/keys"+listQuery(a)
		}
	case "keys delete":
		err = need(4, "keys delete TENANT KEY_ID")
		if err == nil {
			method, path = "DELETE", "/v1/tenants/"+url.PathEscape(a.pos[2])+"/keys/"+url.PathEscape(a.pos[3])
		}
	case "keys regenerate":
		err = need(4, "keys regenerate TENANT KEY_ID")
		if err == nil {
			method, path, showKeyNote = "POST", "/v1/tenants/"+url.PathEscape(a.pos[2])+"/keys/"+url.PathEscape(a.pos[3])+"/regenerate", true
		}
	case "usage":
		err = need(2, "usage TENANT")
		if err == nil {
			method, path = "GET", "/v1/tenants/"+url.PathEscape(a.pos[1])+"/usage"
		}
	case "reload":
		method, path = "POST", "/v1/reload"
	case "limit-requests create":
		if err = need(3, "limit-requests create TENANT --requested N [--reason TEXT]"); err != nil {
			break
		}
		v, ok := a.get("requested")
		n, perr := strconv.ParseInt(v, 10, 64)
		if !ok || perr != nil {
			err = fmt.Errorf("--requested N is required")
			break
		}
		in := map[string]any{"requested": n}
		if r, ok := a.get("reason"); ok {
			in["reason"] = r
		}
		method, path, body = "POST", "/v1/tenants/"+url.PathEscape(a.pos[2])+"/limit-requests", in
	case "limit-requests list":
		q := listQuery(a)
		if st, ok := a.get("status"); ok {
			if q == "" {
				q = "?status=" + url.QueryEscape(st)
			} else {
				q += "&status=" + url.QueryEscape(st)
			}
		}
		method, path = "GET", "/v1/limit-requests"+q
		if len(a.pos) > 2 {
			path = "/v1/tenants/" + url.PathEscape(a.pos[2]) + "/limit-requests" + q
		}
	case "limit-requests approve", "limit-requests deny":
		if err = need(3, cmd+" REQUEST_ID"); err != nil {
			break
		}
		method, path = "POST", "/v1/limit-requests/"+url.PathEscape(a.pos[2])+"/"+a.pos[1]
		if g, ok := a.get("granted"); ok {
			n, perr := strconv.ParseInt(g, 10, 64)
			if perr != nil {
				err = fmt.Errorf("--granted %q: want a number", g)
				break
			}
			body = map[string]any{"granted": n}
		}
	default:
		err = fmt.Errorf("unknown command %q\n\n%s", strings.Join(a.pos, " "), adminUsage)
	}
	if err != nil {
		fmt.Fprintln(stdio.Stderr, "tollgate admin:", err)
		return ExitError{2}
	}
	status, raw, err := c.Do(ctx, method, path, body, nil)
	if err != nil {
		fmt.Fprintln(stdio.Stderr, "tollgate admin:", err)
		return ExitError{1}
	}
	if status == http.StatusNoContent || len(raw) == 0 {
		fmt.Fprintln(stdio.Stdout, "done")
		return nil
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, raw, "", "  ") == nil {
		raw = pretty.Bytes()
	}
	fmt.Fprintln(stdio.Stdout, strings.TrimSpace(string(raw)))
	if showKeyNote {
		fmt.Fprintln(stdio.Stderr, "\nThe key above is shown only this once: store it now. Only its digest is kept.")
	}
	return nil
}

func tenantFlags(a args, t map[string]any) error {
	if p, ok := a.get("plan"); ok {
		t["plan"] = p
	}
	if vs := a.flags["addon"]; len(vs) > 0 {
		addons := map[string]int64{}
		for _, v := range vs {
			k, n, ok := strings.Cut(v, "=")
			units, err := strconv.ParseInt(n, 10, 64)
			if !ok || err != nil {
				return fmt.Errorf("--addon %q: want NAME=UNITS", v)
			}
			addons[k] = units
		}
		t["addons"] = addons
	}
	if g, ok := a.get("granted"); ok {
		n, err := strconv.ParseInt(g, 10, 64)
		if err != nil {
			return fmt.Errorf("--granted %q: want a number", g)
		}
		t["granted"] = n
	}
	if d, ok := a.get("anchor-day"); ok {
		n, err := strconv.Atoi(d)
		if err != nil {
			return fmt.Errorf("--anchor-day %q: want a day of the month", d)
		}
		t["anchor_day"] = n
	}
	return nil
}

func listQuery(a args) string {
	q := url.Values{}
	for flag, param := range map[string]string{"position": "position", "size": "size", "order-by": "orderBy", "desc": "desc"} {
		if v, ok := a.get(flag); ok {
			q.Set(param, v)
		}
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// clientFor resolves the admin URL and token: flags, then environment,
// then the config file.
func clientFor(a args, stdio IO) (*Client, error) {
	c := &Client{}
	c.URL, _ = a.get("url")
	c.Token, _ = a.get("token")
	if c.URL == "" {
		c.URL = stdio.Getenv("TOLLGATE_ADMIN_URL")
	}
	if c.Token == "" {
		c.Token = stdio.Getenv("TOLLGATE_ADMIN_TOKEN")
	}
	file, explicit := a.get("config")
	if file == "" {
		file = "config.yaml"
	}
	if c.URL == "" || c.Token == "" {
		if raw, err := os.ReadFile(file); err == nil {
			cfg, err := config.Parse(bytes.NewReader(raw), file, stdio.Getenv)
			if err != nil {
				return nil, fmt.Errorf("reading admin settings: %w", err)
			}
			if c.URL == "" {
				c.URL = "http://" + cfg.Admin.Listen
			}
			if c.Token == "" {
				c.Token = cfg.Admin.Token
			}
		} else if explicit {
			return nil, err
		}
	}
	if c.URL == "" {
		c.URL = "http://127.0.0.1:9901"
	}
	if !strings.Contains(c.URL, "://") {
		c.URL = "http://" + c.URL
	}
	if c.Token == "" {
		return nil, fmt.Errorf("no admin token: set TOLLGATE_ADMIN_TOKEN (serve printed one on first start) or pass -token")
	}
	return c, nil
}
