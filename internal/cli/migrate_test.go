package cli_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/cli"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// writeConfig writes a config file for tollgate with its embedded server
// in dataDir, listening on listen.
func writeConfig(t *testing.T, dataDir, listen string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "config.yaml")
	cfg := fmt.Sprintf(`listen: %s
admin: {listen: "127.0.0.1:0"}
data_dir: %s
plans:
  pro: {monthly_requests: 8000}
routes:
  - {path_prefix: /, upstream: "http://127.0.0.1:3000", auth: [api_key]}
`, listen, dataDir)
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func run(args ...string) (stdout, stderr string, err error) {
	var out, errb bytes.Buffer
	err = cli.Run(context.Background(), args, cli.IO{Stdout: &out, Stderr: &errb,
		Getenv: func(string) string { return "" }})
	return out.String(), errb.String(), err
}

func TestMigrateCommand(t *testing.T) {
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "data")
	s, err := store.Open(ctx, store.Options{DataDir: data, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(ctx, s.Tenants, "acme", store.Tenant{ID: "acme", Plan: "pro"}); err != nil {
		t.Fatal(err)
	}
	for i, d := range []int64{42, -2} {
		if _, _, err := s.Ledger.Add(ctx, "acme", "2026-11", d, fmt.Sprint("r.", i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	file := writeConfig(t, data, "127.0.0.1:0")
	srv := storetest.StartServer(t)

	out, errOut, err := run("migrate", "-config", file, "-to", srv.URL(), "-replicas", "1")
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, errOut)
	}
	t.Logf("first run:\n%s", out)
	for _, w := range []string{"migrating from the embedded server in " + data + " to " + srv.URL(),
		"1 tenant, 0 keys, 0 limit requests, 0 lease records, 1 counter holding 40 tokens",
		"verified: every record and counter on the target equals the source's",
		"next: start every tollgate with nats.url: " + srv.URL() + " and nats.replicas: 1"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q", w)
		}
	}
	dst := storetest.ConnectURL(t, srv.URL())
	if got, err := dst.Ledger.Total(ctx, "acme", "2026-11"); err != nil || got != 40 {
		t.Errorf("target counter = %d, %v; want 40", got, err)
	}

	out, errOut, err = run("migrate", "-config", file, "-to", srv.URL(), "-replicas", "1")
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, errOut)
	}
	if w := "1 tenant (1 already on the target, 0 copied)"; !strings.Contains(out, w) {
		t.Errorf("second run's output lacks %q:\n%s", w, out)
	}
	if got, err := dst.Ledger.Total(ctx, "acme", "2026-11"); err != nil || got != 40 {
		t.Errorf("target counter after a second run = %d, %v; want 40", got, err)
	}
}

func TestMigrateCommandRefuses(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(filepath.Join(data, "nats", "jetstream"), 0o700); err != nil {
		t.Fatal(err)
	}
	good := writeConfig(t, data, "127.0.0.1:0")
	elsewhere := filepath.Join(t.TempDir(), "elsewhere")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no target", []string{"-config", good}, 2, "-to is required"},
		{"bad target", []string{"-config", good, "-to", "http://x:4222"}, 2, `-to "http://x:4222": want nats://host:port`},
		{"bad replicas", []string{"-config", good, "-to", "nats://x:4222", "-replicas", "7"}, 2, "want 1 to 5"},
		{"no config", []string{"-config", filepath.Join(t.TempDir(), "none.yaml"), "-to", "nats://x:4222"}, 1, "none.yaml"},
		{"no store", []string{"-config", writeConfig(t, elsewhere, "127.0.0.1:0"),
			"-to", "nats://x:4222"}, 1, "no embedded NATS store in"},
		{"tollgate running", []string{"-config", writeConfig(t, data, busy.Addr().String()), "-to", "nats://x:4222"},
			1, "listen " + busy.Addr().String() + " is in use: stop every tollgate first"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, err := run(append([]string{"migrate"}, tc.args...)...)
			var ee cli.ExitError
			if !errors.As(err, &ee) || ee.Code != tc.code {
				t.Errorf("exit %v, want %d", err, tc.code)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr %q lacks %q", errOut, tc.want)
			}
		})
	}
	if _, err := os.Stat(elsewhere); err == nil {
		t.Error("a refused migration created a data directory")
	}
}
