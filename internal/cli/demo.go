package cli

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"

	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/app"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/echo"
)

// demo runs tollgate on its embedded defaults in front of the built-in
// echo backend, makes sure a demo tenant exists, gives it a fresh key and
// prints what to try.
func demo(ctx context.Context, args []string, stdio IO) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stdio.Stderr)
	data := fs.String("data", "./tollgate-demo-data", "data directory (embedded NATS store)")
	listen := fs.String("listen", "127.0.0.1:8080", "proxy listen address")
	adminListen := fs.String("admin", "127.0.0.1:9901", "admin listen address")
	quiet := fs.Bool("quiet", false, "no access log")
	if err := fs.Parse(args); err != nil {
		return ExitError{2}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() { _ = echo.Serve(ln) }()

	cfg := config.Default()
	cfg.Listen, cfg.Admin.Listen, cfg.DataDir = *listen, *adminListen, *data
	// A fresh admin token each run: the demo prints it, nothing stores it
	// in plain text.
	cfg.Admin.Token = "tga_" + authn.NewID(40)
	cfg.Plans = map[string]config.Plan{
		"demo": {MonthlyRequests: 1000},
		"pro":  {MonthlyRequests: 8000, Addons: map[string]int64{"mcal": 8000}},
	}
	cfg.Routes = []config.Route{{PathPrefix: "/", Upstream: "http://" + ln.Addr().String(), Auth: []string{config.AuthAPIKey, "basic"}}}
	if *quiet {
		f := false
		cfg.Log.Access = &f
	}
	if err := config.Validate(cfg); err != nil {
		return err
	}
	onReady := func(a *app.App) {
		c := &Client{URL: "http://" + a.AdminAddr, Token: cfg.Admin.Token}
		key, err := demoKey(ctx, c)
		if err != nil {
			fmt.Fprintln(stdio.Stderr, "demo: could not create the demo key:", err)
			return
		}
		fmt.Fprintf(stdio.Stdout, `
tollgate demo is running: proxy on http://%[1]s, admin API on http://%[2]s,
echo backend on http://%[3]s, data in %[4]s.

Try it (the key belongs to tenant "demo", plan "demo": 1000 requests a month):

    curl -i -H 'X-API-Key: %[5]s' http://%[1]s/anything

Without a key you get 401 in the problems shape:

    curl -i http://%[1]s/anything

Users authenticate with HTTP Basic (the password is read from stdin):

    echo 'a long passphrase' | go run ./cmd/tollgate admin users create demo-bot --tenants demo --type api_only --scopes READ
    curl -i -u demo-bot:'a long passphrase' http://%[1]s/anything     # 200; a POST is 403: no CREATE scope

Admin token for this run (a new one each start):

    export TOLLGATE_ADMIN_URL=http://%[2]s TOLLGATE_ADMIN_TOKEN=%[6]s
    go run ./cmd/tollgate admin usage demo

Stop with Ctrl-C.
`, a.ProxyAddr, a.AdminAddr, ln.Addr(), *data, key, cfg.Admin.Token)
	}
	return app.Run(ctx, cfg, app.Options{Out: stdio.Stderr, LogOut: stdio.Stderr, OnReady: onReady})
}

// demoKey makes sure tenant "demo" exists and gives it a fresh key named
// "demo", deleting the one of an earlier run (its secret was shown then and
// is not stored).
func demoKey(ctx context.Context, c *Client) (string, error) {
	status, _, err := c.Do(ctx, "POST", "/v1/tenants", map[string]any{"id": "demo", "plan": "demo"}, nil)
	if err != nil && status != http.StatusConflict {
		return "", err
	}
	var keys struct {
		Items []struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"items"`
	}
	if _, _, err := c.Do(ctx, "GET", "/v1/tenants/demo/keys?size=1000", nil, &keys); err != nil {
		return "", err
	}
	for _, k := range keys.Items {
		if k.Name == "demo" {
			if _, _, err := c.Do(ctx, "DELETE", "/v1/tenants/demo/keys/"+k.ID, nil, nil); err != nil {
				return "", err
			}
		}
	}
	var created struct {
		Key string `json:"key"`
	}
	if _, _, err := c.Do(ctx, "POST", "/v1/tenants/demo/keys", map[string]any{"name": "demo"}, &created); err != nil {
		return "", err
	}
	return created.Key, nil
}
