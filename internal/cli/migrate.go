package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

const migrateUsage = `Usage: tollgate migrate [-config FILE] -to URLS [-replicas N] [-creds FILE]

Copies tenants, keys, limit requests, lease records and the month's counts
(every ledger counter) from the store the config file describes (the
embedded server in data_dir when nats.url is empty) to a NATS server or
cluster, and checks the copy. Stop every tollgate first.

A target that already holds tenants, keys or counters that are not the
source's is refused before anything is written. What it holds of the
source's is kept: running the command again after a failure copies the
rest, and after a success writes nothing.

Flags:
`

// migrate moves a deployment's data to another NATS (store.Migrate).
func migrate(ctx context.Context, args []string, stdio IO) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stdio.Stderr)
	fs.Usage = func() {
		fmt.Fprint(stdio.Stderr, migrateUsage)
		fs.PrintDefaults()
	}
	file := fs.String("config", "config.yaml", "configuration file of the tollgates whose data moves")
	to := fs.String("to", "", "comma-separated nats:// URLs of the target (required)")
	replicas := fs.Int("replicas", 3, "replicas of the buckets and ledger streams on the target (1 for a single server)")
	creds := fs.String("creds", "", "credentials (.creds) file for the target")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return ExitError{2}
	}
	fail := func(code int, format string, args ...any) error {
		fmt.Fprintf(stdio.Stderr, "tollgate migrate: "+format+"\n", args...)
		return ExitError{code}
	}
	switch {
	case fs.NArg() > 0:
		return fail(2, "unexpected argument %q", fs.Arg(0))
	case *to == "":
		return fail(2, "-to is required: the target's URLs, e.g. -to nats://10.0.0.1:4222,nats://10.0.0.2:4222,nats://10.0.0.3:4222")
	case *replicas < 1 || *replicas > 5:
		return fail(2, "-replicas %d: want 1 to 5", *replicas)
	}
	for _, u := range strings.Split(*to, ",") {
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil || (pu.Scheme != "nats" && pu.Scheme != "tls" && pu.Scheme != "ws" && pu.Scheme != "wss") || pu.Host == "" {
			return fail(2, "-to %q: want nats://host:port", redactURLs(u))
		}
	}
	cfg, err := loadConfig(*file, stdio)
	if err != nil {
		printConfigError(stdio.Stderr, *file, err)
		return ExitError{1}
	}

	from := cfg.NATS.URL
	if from == "" {
		from = "the embedded server in " + cfg.DataDir
		// Opening the source must not create an empty store elsewhere.
		dir := filepath.Join(cfg.DataDir, "nats", "jetstream")
		if _, err := os.Stat(dir); err != nil {
			return fail(1, "no embedded NATS store in %s (data_dir is %s and nats.url is empty): nothing to migrate; "+
				"is %s the file tollgate runs with?", dir, cfg.DataDir, *file)
		}
		// Two servers on one store would corrupt it: tollgate's embedded
		// server runs while its listeners are open.
		for _, l := range []struct{ field, addr string }{
			{"listen", cfg.Listen}, {"admin.listen", cfg.Admin.Listen}, {"nats.listen", cfg.NATS.Listen},
		} {
			if l.addr != "" && inUse(l.addr) {
				return fail(1, "%s %s is in use: stop every tollgate first (its embedded server must not run while "+
					"migrate opens %s)", l.field, l.addr, cfg.DataDir)
			}
		}
	}
	src, err := store.Open(ctx, store.Options{
		URL: cfg.NATS.URL, Credentials: cfg.NATS.Credentials, DataDir: cfg.DataDir,
		SyncAlways: cfg.NATS.SyncAlways == nil || *cfg.NATS.SyncAlways, Replicas: cfg.NATS.Replicas,
		Timeout: cfg.NATS.Timeout.D(), LedgerShards: cfg.NATS.LedgerShards, Name: "tollgate-migrate",
	})
	if err != nil {
		return fail(1, "source: %v", err)
	}
	defer src.Close()

	fmt.Fprintf(stdio.Stdout, "migrating from %s to %s (%s, %s)\n", redactURLs(from), redactURLs(*to),
		plural(*replicas, "replica", "replicas"), plural(cfg.NATS.LedgerShards, "ledger shard", "ledger shards"))
	rep, err := store.Migrate(ctx, src, store.MigrateOptions{
		Target: store.Options{
			URL: *to, Credentials: *creds, Replicas: *replicas, LedgerShards: cfg.NATS.LedgerShards,
			Timeout: cfg.NATS.Timeout.D(), DuplicateWindow: store.DefaultDuplicateWindow, Name: "tollgate-migrate",
		},
		Progress: stdio.Stdout,
	})
	if err != nil {
		return fail(1, "%v", err)
	}
	fmt.Fprintf(stdio.Stdout, "done in %v: %s\n", rep.Elapsed.Round(time.Millisecond), rep.Summary())
	fmt.Fprintln(stdio.Stdout, "verified: every record and counter on the target equals the source's")
	if rep.Returns > 0 {
		fmt.Fprintf(stdio.Stdout, "%d lease records name returns of tokens the source had applied: "+
			"the target's ledger recognises their message ids\n", rep.Returns)
	}
	fmt.Fprintf(stdio.Stdout, "next: start every tollgate with nats.url: %s and nats.replicas: %d", redactURLs(*to), *replicas)
	if *creds != "" {
		fmt.Fprintf(stdio.Stdout, " and nats.credentials: %s", *creds)
	}
	fmt.Fprintln(stdio.Stdout)
	return nil
}

// inUse reports whether something listens on addr.
func inUse(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return errors.Is(err, syscall.EADDRINUSE)
	}
	l.Close()
	return false
}

// redactURLs hides the passwords of comma-separated URLs.
func redactURLs(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
