package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/tollgate/tollgate/internal/admin"
	"github.com/tollgate/tollgate/internal/config"
	"go.uber.org/zap"
)

// ReloadError says why a reload was refused; the old configuration keeps
// serving.
type ReloadError struct {
	Problems []string
}

func (e *ReloadError) Error() string {
	return "app: reload refused: " + strings.Join(e.Problems, "; ")
}

// ReloadProblems makes a refusal an admin.ReloadRefusal: POST /v1/reload
// answers 422 with each problem.
func (e *ReloadError) ReloadProblems() []string { return e.Problems }

var _ admin.ReloadRefusal = (*ReloadError)(nil)

// Reload reads the configuration file again, validates it and swaps it in.
// What cannot change while running is named in the refusal. It is POST
// /v1/reload; the outcome is recorded for GET /v1/config.
func (a *App) Reload() error { return a.reloadBy("api") }

// reloadBy reloads, and records the outcome with what started it (under
// reloadMu, so that the record is the last reload's).
func (a *App) reloadBy(trigger string) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	err := a.reload()
	if a.adminAPI != nil {
		a.adminAPI.RecordReload(trigger, err)
	}
	return err
}

// reload is Reload under reloadMu.
func (a *App) reload() error {
	old := a.Config()
	if old.File == "" {
		return &ReloadError{Problems: []string{"tollgate was started without a config file"}}
	}
	next, err := config.Load(old.File)
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			re := &ReloadError{}
			for _, p := range ce.Problems {
				re.Problems = append(re.Problems, p.Error())
			}
			return re
		}
		return &ReloadError{Problems: []string{err.Error()}}
	}
	if fixed := fixedChanges(old, next); len(fixed) > 0 {
		re := &ReloadError{}
		for _, f := range fixed {
			re.Problems = append(re.Problems, f+": cannot change while running; restart tollgate to apply it")
		}
		return re
	}
	if err := a.proxy.Update(next); err != nil {
		return &ReloadError{Problems: []string{err.Error()}}
	}
	a.cfg.Store(next)
	_ = a.level.UnmarshalText([]byte(next.Log.Level))
	a.quotas.ChangedAll()
	a.log.Named("app").Info("configuration reloaded", zap.String("file", next.File))
	return nil
}

// fixedChanges names the settings that differ between a and b but are
// bound at start: listeners, the store, the server's limits.
func fixedChanges(a, b *config.Config) []string {
	var out []string
	check := func(name string, x, y any) {
		if !reflect.DeepEqual(x, y) {
			out = append(out, name)
		}
	}
	check("listen", a.Listen, b.Listen)
	check("tls", a.TLS, b.TLS)
	check("auth.basic", a.Auth.Basic, b.Auth.Basic)
	check("auth.failures", a.Auth.Failures, b.Auth.Failures)
	check("admin", a.Admin, b.Admin)
	check("data_dir", a.DataDir, b.DataDir)
	check("nats", a.NATS, b.NATS)
	check("server", a.Server, b.Server)
	check("quota.timezone", a.Quota.Timezone, b.Quota.Timezone)
	check("quota.max_lease", a.Quota.MaxLease, b.Quota.MaxLease)
	check("quota.lease_idle", a.Quota.LeaseIdle, b.Quota.LeaseIdle)
	check("quota.lease_ttl", a.Quota.LeaseTTL, b.Quota.LeaseTTL)
	check("quota.lease_horizon", a.Quota.LeaseHorizon, b.Quota.LeaseHorizon)
	check("quota.failover_horizon", a.Quota.FailoverHorizon, b.Quota.FailoverHorizon)
	check("log.access", a.AccessLog(), b.AccessLog())
	return out
}

// notifyReloads starts catching SIGHUP (before Run reports ready, so that
// an early one does not end the process) for watchReloads.
func notifyReloads() chan os.Signal {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return hup
}

// watchReloads reloads on SIGHUP (from notifyReloads) and when the config
// file changes, until ctx is done.
func (a *App) watchReloads(ctx context.Context, hup chan os.Signal) {
	defer signal.Stop(hup)
	file := a.Config().File
	if file == "" {
		<-ctx.Done()
		return
	}
	log := a.log.Named("reload")
	stamp := func() string {
		fi, err := os.Stat(file)
		if err != nil {
			return ""
		}
		return fmt.Sprint(fi.ModTime().UnixNano(), fi.Size())
	}
	last := stamp()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		why := ""
		select {
		case <-ctx.Done():
			return
		case <-hup:
			why = "SIGHUP"
		case <-t.C:
			if s := stamp(); s != last && s != "" {
				last = s
				why = "file changed"
			}
		}
		if why == "" {
			continue
		}
		if err := a.reloadBy(why); err != nil {
			log.Error("reload refused; the old configuration keeps serving", zap.String("trigger", why), zap.Error(err))
		}
	}
}
