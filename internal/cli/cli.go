// Package cli owns tollgate's command line: serve, check, demo, version
// and the admin subcommands that drive the admin API from a shell.
package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/tollgate/tollgate/internal/app"
	"github.com/tollgate/tollgate/internal/config"
)

// Version is set at build time with -ldflags "-X ...cli.Version=v1.2.3".
var Version = ""

// ExitError carries a process exit code.
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("exit %d", e.Code) }

// IO is where a command reads and writes.
type IO struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

const usage = `tollgate: API authentication and metering sidecar

Usage:
  tollgate [serve] [-config config.yaml]   run tollgate (the default command)
  tollgate check FILE                      validate a config file without starting
  tollgate demo [-data DIR]                run tollgate with a built-in echo backend
  tollgate admin SUBCOMMAND ...            drive the admin API (tollgate admin -h)
  tollgate migrate -to URLS [-config F]    copy all data to a NATS cluster (tollgate migrate -h)
  tollgate version                         print the version
`

// Run runs the command line args (without the program name).
func Run(ctx context.Context, args []string, stdio IO) error {
	if stdio.Getenv == nil {
		stdio.Getenv = os.Getenv
	}
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, stdio)
	case "check":
		return check(args, stdio)
	case "demo":
		return demo(ctx, args, stdio)
	case "admin":
		return adminCmd(ctx, args, stdio)
	case "migrate":
		return migrate(ctx, args, stdio)
	case "version":
		fmt.Fprintln(stdio.Stdout, "tollgate", version())
		return nil
	case "help":
		fmt.Fprint(stdio.Stdout, usage)
		return nil
	default:
		fmt.Fprintf(stdio.Stderr, "tollgate: unknown command %q\n\n%s", cmd, usage)
		return ExitError{2}
	}
}

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

func serve(ctx context.Context, args []string, stdio IO) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stdio.Stderr)
	file := fs.String("config", "config.yaml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return ExitError{2}
	}
	cfg, err := loadConfig(*file, stdio)
	if err != nil {
		printConfigError(stdio.Stderr, *file, err)
		return ExitError{1}
	}
	return app.Run(ctx, cfg, app.Options{Out: stdio.Stderr, LogOut: stdio.Stderr})
}

func check(args []string, stdio IO) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stdio.Stderr)
	if err := fs.Parse(args); err != nil {
		return ExitError{2}
	}
	file := "config.yaml"
	if fs.NArg() > 0 {
		file = fs.Arg(0)
	}
	if _, err := loadConfig(file, stdio); err != nil {
		printConfigError(stdio.Stderr, file, err)
		return ExitError{1}
	}
	fmt.Fprintf(stdio.Stdout, "config %s is valid\n", file)
	return nil
}

func printConfigError(w io.Writer, file string, err error) {
	var ce *config.Error
	if errors.As(err, &ce) {
		fmt.Fprintf(w, "config %s is invalid (%d problems):\n", file, len(ce.Problems))
		for _, p := range ce.Problems {
			fmt.Fprintln(w, "  "+p.Error())
		}
		return
	}
	fmt.Fprintf(w, "config %s: %v\n", file, err)
}

func loadConfig(file string, stdio IO) (*config.Config, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return config.Parse(bytes.NewReader(raw), file, stdio.Getenv)
}
