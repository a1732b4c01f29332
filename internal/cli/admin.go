package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/term"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
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
  tenants list [LIST]
  tenants get ID
  tenants update ID [--plan PLAN] [--addon NAME=UNITS ...] [--granted N] [--anchor-day N]
  tenants delete ID
  keys create TENANT --name NAME [LIMITS]
                                      prints the key; it is shown only once
  keys list TENANT [LIST]
  keys get TENANT KEY_ID
  keys delete TENANT KEY_ID
  keys regenerate TENANT KEY_ID [--grace DURATION]
                                      prints the new key, shown only once; the old
                                      one stops working at once, or when the grace
                                      (24h, 7d; at most 30d) ends
  clients create TENANT --name NAME [LIMITS]
                                      prints the OAuth client's id and its
                                      client_secret; the secret is shown only once
  clients list TENANT [LIST]
  clients get TENANT CLIENT_ID
  clients delete TENANT CLIENT_ID
  clients regenerate TENANT CLIENT_ID [--grace DURATION]
                                      a new client_secret, as keys regenerate
  users create USERNAME --tenants T1,T2 [--type api_only|standard] [--name NAME]
               [LIMITS] [--password-file FILE]
  users list [--tenant TENANT] [LIST]
  users get USERNAME
  users update USERNAME [--tenants T1,T2] [--type api_only|standard] [--name NAME] [LIMITS]
  users delete USERNAME
  users password USERNAME [--password-file FILE]
                                      sets a new password; the old one stops working
  tokens list [--client ID] [--user USERNAME] [--tenant TENANT] [LIST]
                                      the OAuth2 access tokens issued that have not
                                      expired (never the tokens themselves)
  tokens get TOKEN_ID
  tokens revoke TOKEN_ID
  tokens revoke --client ID | --user USERNAME | --tenant TENANT
                                      revokes every token issued to the client (or
                                      API key), acting for the user, or for the
                                      tenant; prints how many
  usage TENANT [--daily [--from 2026-11-01] [--to 2026-11-30]]
                                      the tenant's usage in the current period; with
                                      --daily, its requests per day (by default from
                                      the start of the previous period to today)
  limit-requests create TENANT --requested N [--reason TEXT]
  limit-requests list [TENANT] [--status pending|granted|denied] [LIST]
  limit-requests approve REQUEST_ID [--granted N]
  limit-requests deny REQUEST_ID
  notifications [--status pending|delivered] [--tenant TENANT] [--kind KIND] [LIST]
                                      webhook notifications (usage thresholds, limit
                                      requests), newest first, with their delivery state
  reload                              reload the config file of the running tollgate

LIST:   [--position N] [--size N] [--order-by FIELD] [--desc]
LIMITS: [--scopes CREATE,READ,UPDATE,DELETE] [--modules M1,M2]
        [--grants password,client_credentials] [--expires 2027-01-01T00:00:00Z]
        Without --scopes a credential has all four scopes; without --modules,
        every module. A list is comma-separated, or the flag repeated.
        Keys and clients also take --token-lifetime 10m: how long the OAuth2
        access tokens issued to them live.

A user's password is read from the first line of --password-file FILE, else
of stdin (with a prompt when stdin is a terminal): never from the command
line, where shell history and ps would show it.
`

// adminCommand is what one `tollgate admin` command takes.
type adminCommand struct {
	args     string   // its positional arguments, for the usage line
	min, max int      // how many positional arguments it takes
	flags    []string // its flags, besides the global ones
}

var (
	listFlags = []string{"position", "size", "order-by", "desc"}
	// limitFlags limit what a credential may do.
	limitFlags = []string{"scopes", "modules", "grants", "expires"}
	credFlags  = append([]string{"name", "token-lifetime"}, limitFlags...)
	userFlags  = append([]string{"tenants", "type", "name"}, limitFlags...)
	// tokenFlags select access tokens.
	tokenFlags = []string{"client", "user", "tenant"}
)

// globalFlags are taken by every command.
var globalFlags = []string{"config", "url", "token", "h", "help"}

var adminCommands = map[string]adminCommand{
	"tenants create":         {"ID --plan PLAN [--addon NAME=UNITS ...] [--anchor-day N]", 1, 1, []string{"plan", "addon", "granted", "anchor-day"}},
	"tenants list":           {"[LIST]", 0, 0, listFlags},
	"tenants get":            {"ID", 1, 1, nil},
	"tenants update":         {"ID [--plan PLAN] [--addon NAME=UNITS] [--granted N] [--anchor-day N]", 1, 1, []string{"plan", "addon", "granted", "anchor-day"}},
	"tenants delete":         {"ID", 1, 1, nil},
	"keys create":            {"TENANT --name NAME [LIMITS]", 1, 1, credFlags},
	"keys list":              {"TENANT [LIST]", 1, 1, listFlags},
	"keys get":               {"TENANT KEY_ID", 2, 2, nil},
	"keys delete":            {"TENANT KEY_ID", 2, 2, nil},
	"keys regenerate":        {"TENANT KEY_ID [--grace DURATION]", 2, 2, []string{"grace"}},
	"clients create":         {"TENANT --name NAME [LIMITS]", 1, 1, credFlags},
	"clients list":           {"TENANT [LIST]", 1, 1, listFlags},
	"clients get":            {"TENANT CLIENT_ID", 2, 2, nil},
	"clients delete":         {"TENANT CLIENT_ID", 2, 2, nil},
	"clients regenerate":     {"TENANT CLIENT_ID [--grace DURATION]", 2, 2, []string{"grace"}},
	"users create":           {"USERNAME --tenants T1,T2 [--type api_only|standard] [--name NAME] [LIMITS] [--password-file FILE]", 1, 1, append([]string{"password-file"}, userFlags...)},
	"users list":             {"[--tenant TENANT] [LIST]", 0, 0, append([]string{"tenant"}, listFlags...)},
	"users get":              {"USERNAME", 1, 1, nil},
	"users update":           {"USERNAME [--tenants T1,T2] [--type api_only|standard] [--name NAME] [LIMITS]", 1, 1, userFlags},
	"users delete":           {"USERNAME", 1, 1, nil},
	"users password":         {"USERNAME [--password-file FILE]", 1, 1, []string{"password-file"}},
	"tokens list":            {"[--client ID] [--user USERNAME] [--tenant TENANT] [LIST]", 0, 0, append(slices.Clone(tokenFlags), listFlags...)},
	"tokens get":             {"TOKEN_ID", 1, 1, nil},
	"tokens revoke":          {"TOKEN_ID | --client ID | --user USERNAME | --tenant TENANT", 0, 1, tokenFlags},
	"usage":                  {"TENANT [--daily [--from 2026-11-01] [--to 2026-11-30]]", 1, 1, []string{"daily", "from", "to"}},
	"reload":                 {"", 0, 0, nil},
	"notifications":          {"[--status pending|delivered] [--tenant TENANT] [--kind KIND] [LIST]", 0, 0, append([]string{"status", "tenant", "kind"}, listFlags...)},
	"limit-requests create":  {"TENANT --requested N [--reason TEXT]", 1, 1, []string{"requested", "reason"}},
	"limit-requests list":    {"[TENANT] [--status pending|granted|denied] [LIST]", 0, 1, append([]string{"status"}, listFlags...)},
	"limit-requests approve": {"REQUEST_ID [--granted N]", 1, 1, []string{"granted"}},
	"limit-requests deny":    {"REQUEST_ID", 1, 1, nil},
}

// check refuses positional arguments and flags that cmd does not take,
// without echoing their values: a password given on the command line by
// mistake is not printed again.
func (c adminCommand) check(cmd string, pos []string, a args) error {
	usage := fmt.Errorf("usage: tollgate admin %s", strings.TrimSpace(cmd+" "+c.args))
	for _, f := range slices.Sorted(maps.Keys(a.flags)) {
		if slices.Contains(globalFlags, f) || slices.Contains(c.flags, f) {
			continue
		}
		if f == "password" {
			return fmt.Errorf("unknown flag --password: a password is read from stdin or --password-file, never from the command line\n%w", usage)
		}
		return fmt.Errorf("unknown flag --%s\n%w", f, usage)
	}
	switch {
	case len(pos) < c.min:
		return usage
	case len(pos) > c.max:
		return fmt.Errorf("too many arguments\n%w", usage)
	}
	return nil
}

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
	a, err := parseArgs(in, "desc", "daily", "h", "help")
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
	cmd := strings.Join(a.pos[:min(2, len(a.pos))], " ")
	if a.pos[0] == "usage" || a.pos[0] == "reload" || a.pos[0] == "notifications" {
		cmd = a.pos[0]
	}
	spec, ok := adminCommands[cmd]
	if !ok {
		fmt.Fprintf(stdio.Stderr, "tollgate admin: unknown command %q\n\n%s", cmd, adminUsage)
		return ExitError{2}
	}
	// pos are the command's arguments, after its words.
	pos := a.pos[len(strings.Fields(cmd)):]
	if err := spec.check(cmd, pos, a); err != nil {
		fmt.Fprintln(stdio.Stderr, "tollgate admin:", err)
		return ExitError{2}
	}
	var (
		method, path string
		body         any
		// secret names the secret the answer shows once ("key",
		// "client secret"), for the note printed after it.
		secret string
		// password is the body the password read is added to.
		password map[string]any
	)
	noun := a.pos[0]
	switch cmd {
	case "tenants create":
		t := map[string]any{"id": pos[0]}
		err = tenantFlags(a, t)
		if _, ok := t["plan"]; !ok && err == nil {
			err = fmt.Errorf("--plan is required")
		}
		method, path, body = "POST", "/v1/tenants", t
	case "tenants list":
		method, path = "GET", "/v1/tenants"+listQuery(a)
	case "tenants get":
		method, path = "GET", pathOf("v1", "tenants", pos[0])
	case "tenants update":
		t := map[string]any{}
		err = tenantFlags(a, t)
		method, path, body = "PATCH", pathOf("v1", "tenants", pos[0]), t
	case "tenants delete":
		method, path = "DELETE", pathOf("v1", "tenants", pos[0])
	case "keys create", "clients create":
		if _, ok := a.get("name"); !ok {
			err = fmt.Errorf("--name is required")
			break
		}
		c := map[string]any{}
		err = credFields(a, c)
		method, path, body, secret = "POST", pathOf("v1", "tenants", pos[0], noun), c, secretOf[noun]
	case "keys list", "clients list":
		method, path = "GET", pathOf("v1", "tenants", pos[0], noun)+listQuery(a)
	case "keys get", "clients get":
		method, path = "GET", pathOf("v1", "tenants", pos[0], noun, pos[1])
	case "keys delete", "clients delete":
		method, path = "DELETE", pathOf("v1", "tenants", pos[0], noun, pos[1])
	case "keys regenerate", "clients regenerate":
		// Without --grace there is no body, and the old secret stops at once.
		method, path, secret = "POST", pathOf("v1", "tenants", pos[0], noun, pos[1], "regenerate"), secretOf[noun]
		if g, ok := a.get("grace"); ok {
			body = map[string]any{"grace": g}
		}
	case "users create":
		if _, ok := a.get("tenants"); !ok {
			err = fmt.Errorf("--tenants is required: the tenants the user may act for")
			break
		}
		u := map[string]any{"username": pos[0]}
		err = userFields(a, u)
		method, path, body, password = "POST", "/v1/users", u, u
	case "users list":
		method, path = "GET", "/v1/users"+listQuery(a, "tenant")
	case "users get":
		method, path = "GET", pathOf("v1", "users", pos[0])
	case "users update":
		u := map[string]any{}
		if err = userFields(a, u); err == nil && len(u) == 0 {
			err = fmt.Errorf("nothing to change: give --tenants, --type, --name, --scopes, --modules, --grants or --expires (a password is changed with users password)")
		}
		method, path, body = "PATCH", pathOf("v1", "users", pos[0]), u
	case "users delete":
		method, path = "DELETE", pathOf("v1", "users", pos[0])
	case "users password":
		p := map[string]any{}
		method, path, body, password = "POST", pathOf("v1", "users", pos[0], "password"), p, p
	case "tokens list":
		method, path = "GET", "/v1/tokens"+listQuery(a, tokenFlags...)
	case "tokens get":
		method, path = "GET", pathOf("v1", "tokens", pos[0])
	case "tokens revoke":
		sel := map[string]any{}
		for _, f := range tokenFlags {
			if v, ok := a.get(f); ok {
				sel[f] = v
			}
		}
		switch {
		case len(pos) == 1 && len(sel) == 0:
			method, path = "DELETE", pathOf("v1", "tokens", pos[0])
		case len(pos) == 0 && len(sel) == 1:
			method, path, body = "POST", "/v1/tokens/revoke", sel
		default:
			err = fmt.Errorf("give a TOKEN_ID or exactly one of --client, --user or --tenant\nusage: tollgate admin tokens revoke %s", spec.args)
		}
	case "usage":
		method, path = "GET", pathOf("v1", "tenants", pos[0], "usage")
		_, daily := a.get("daily")
		if _, from := a.get("from"); !daily && from {
			err = errors.New("--from and --to go with --daily")
		} else if _, to := a.get("to"); !daily && to {
			err = errors.New("--from and --to go with --daily")
		}
		if daily {
			path = pathOf("v1", "tenants", pos[0], "usage", "daily") + listQuery(a, "from", "to")
		}
	case "reload":
		method, path = "POST", "/v1/reload"
	case "notifications":
		method, path = "GET", "/v1/notifications"+listQuery(a, "status", "tenant", "kind")
	case "limit-requests create":
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
		method, path, body = "POST", pathOf("v1", "tenants", pos[0], "limit-requests"), in
	case "limit-requests list":
		q := listQuery(a, "status")
		method, path = "GET", "/v1/limit-requests"+q
		if len(pos) > 0 {
			path = pathOf("v1", "tenants", pos[0], "limit-requests") + q
		}
	case "limit-requests approve", "limit-requests deny":
		method, path = "POST", pathOf("v1", "limit-requests", pos[0], a.pos[1])
		if g, ok := a.get("granted"); ok {
			n, perr := strconv.ParseInt(g, 10, 64)
			if perr != nil {
				err = fmt.Errorf("--granted %q: want a number", g)
				break
			}
			body = map[string]any{"granted": n}
		}
	}
	if err != nil {
		fmt.Fprintln(stdio.Stderr, "tollgate admin:", err)
		return ExitError{2}
	}
	c, err := clientFor(a, stdio)
	if err != nil {
		fmt.Fprintln(stdio.Stderr, "tollgate admin:", err)
		return ExitError{1}
	}
	if password != nil {
		// Read last: every other mistake is reported before it is asked for.
		p, err := readPassword(ctx, a, stdio, pos[0])
		if err != nil {
			fmt.Fprintln(stdio.Stderr, "tollgate admin:", err)
			return ExitError{1}
		}
		password["password"] = p
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
	var shown struct {
		Previous *struct {
			Expires string `json:"expires"`
		} `json:"previous"`
	}
	_ = json.Unmarshal(raw, &shown)
	var pretty bytes.Buffer
	if json.Indent(&pretty, raw, "", "  ") == nil {
		raw = pretty.Bytes()
	}
	fmt.Fprintln(stdio.Stdout, strings.TrimSpace(string(raw)))
	if secret != "" {
		fmt.Fprintf(stdio.Stderr, "\nThe %s above is shown only this once: store it now. Only its digest is kept.\n", secret)
		if shown.Previous != nil {
			fmt.Fprintf(stdio.Stderr, "The old %s keeps working until %s.\n", secret, shown.Previous.Expires)
		}
	}
	return nil
}

// secretOf names the secret that creating or regenerating a credential of
// each noun shows once.
var secretOf = map[string]string{"keys": "key", "clients": "client secret"}

// pathOf joins escaped path segments: pathOf("v1", "users", u) is
// /v1/users/{u}.
func pathOf(segments ...string) string {
	var b strings.Builder
	for _, s := range segments {
		b.WriteString("/" + url.PathEscape(s))
	}
	return b.String()
}

// credFields sets the name and limits of a key or client from the flags.
func credFields(a args, m map[string]any) error {
	if n, ok := a.get("name"); ok {
		m["name"] = n
	}
	if l, ok := listFlag(a, "scopes"); ok {
		for i, s := range l {
			l[i] = strings.ToUpper(s)
		}
		m["scopes"] = l
	}
	if l, ok := listFlag(a, "modules"); ok {
		m["modules"] = l
	}
	if l, ok := listFlag(a, "grants"); ok {
		m["grants"] = l
	}
	if d, ok := a.get("token-lifetime"); ok {
		m["token_lifetime"] = d
	}
	if e, ok := a.get("expires"); ok {
		t, err := time.Parse(time.RFC3339, e)
		if err != nil {
			return fmt.Errorf("--expires %q: want an RFC 3339 time such as 2027-01-01T00:00:00Z", e)
		}
		m["expires"] = t.Format(time.RFC3339Nano)
	}
	return nil
}

// userFields sets what users create and users update take besides the
// username and password.
func userFields(a args, m map[string]any) error {
	if l, ok := listFlag(a, "tenants"); ok {
		m["tenants"] = l
	}
	if t, ok := a.get("type"); ok {
		m["type"] = t
	}
	return credFields(a, m)
}

// listFlag is the list a flag gives: comma-separated, the flag repeated,
// or both. Empty items are dropped; a flag given empty is an empty list,
// which the admin API refuses with its reason.
func listFlag(a args, name string) ([]string, bool) {
	vs, ok := a.flags[name]
	if !ok {
		return nil, false
	}
	l := []string{}
	for _, v := range vs {
		for s := range strings.SplitSeq(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				l = append(l, s)
			}
		}
	}
	return l, true
}

// stdin is where a password is read from without --password-file. IO has
// no reader; tests set this.
var stdin io.Reader = os.Stdin

// maxPasswordLine bounds the line a password is read from; the admin API
// refuses passwords over authn.MaxPassword (128 bytes) with its reason.
const maxPasswordLine = 4096

// readPassword reads the password of user from the first line of
// --password-file, else of stdin; on a terminal it prompts on stderr,
// without echo, and asks twice.
func readPassword(ctx context.Context, a args, stdio IO, user string) (string, error) {
	from, r := "stdin", stdin
	if file, ok := a.get("password-file"); ok && file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("--password-file: %w", err)
		}
		defer f.Close()
		from, r = file, f
	}
	f, tty := r.(*os.File)
	tty = tty && term.IsTerminal(int(f.Fd()))
	if !tty {
		p, err := readLine(ctx, bufio.NewReaderSize(r, maxPasswordLine))
		if err == nil && p == "" {
			err = fmt.Errorf("no password on the first line of %s", from)
		}
		return p, err
	}
	// On a terminal: without echo (golang.org/x/term), twice.
	read := func(prompt string) (string, error) {
		fmt.Fprint(stdio.Stderr, prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stdio.Stderr)
		return string(b), err
	}
	p, err := read(fmt.Sprintf("Password for user %s: ", user))
	if err != nil {
		return "", err
	}
	if p == "" {
		return "", fmt.Errorf("no password given")
	}
	again, err := read("Again: ")
	if err != nil {
		return "", err
	}
	if again != p {
		return "", fmt.Errorf("the two passwords differ")
	}
	return p, nil
}

// readLine reads a line from r, without its line ending; ctx ends the wait
// (an interrupt is delivered as ctx's end, not by killing the process).
func readLine(ctx context.Context, r *bufio.Reader) (string, error) {
	type line struct {
		s   string
		err error
	}
	done := make(chan line, 1)
	go func() {
		b, err := r.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			err = fmt.Errorf("the password's line is longer than %d bytes", maxPasswordLine)
		case errors.Is(err, io.EOF):
			err = nil
		case err != nil:
			err = fmt.Errorf("reading the password: %w", err)
		}
		s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		done <- line{s, err}
	}()
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case l := <-done:
		return l.s, l.err
	}
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

// listQuery is the query of a list: the list flags, and the flags named
// in also (users list --tenant) under their own names.
func listQuery(a args, also ...string) string {
	q := url.Values{}
	for flag, param := range map[string]string{"position": "position", "size": "size", "order-by": "orderBy", "desc": "desc"} {
		if v, ok := a.get(flag); ok {
			q.Set(param, v)
		}
	}
	for _, flag := range also {
		if v, ok := a.get(flag); ok {
			q.Set(flag, v)
		}
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// clientFor resolves the admin URL and token: flags, then environment,
// then the config file.
// trusting returns an HTTP client that trusts the certificates in the PEM
// file certFile as well as the system's roots.
func trusting(certFile string) (*http.Client, error) {
	pem, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("admin.tls: %w", err)
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("admin.tls: no certificate in %s", certFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr}, nil
}

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
				if t := cfg.Admin.TLS; t != nil {
					// The admin listener's own certificate is trusted,
					// beside the system's roots: it is often self-signed.
					c.URL = "https://" + cfg.Admin.Listen
					if c.HTTP, err = trusting(t.CertFile); err != nil {
						return nil, err
					}
				}
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
