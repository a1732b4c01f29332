package store_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// openCluster opens a store on the cluster as a replica with nats.url
// pointing at all its nodes would.
func openCluster(t *testing.T, c *storetest.Cluster, replicas, shards int) (*store.Store, error) {
	t.Helper()
	s, err := store.Open(context.Background(), store.Options{URL: c.URL(), Replicas: replicas,
		LedgerShards: shards, Timeout: 2 * time.Second})
	if err == nil {
		t.Cleanup(s.Close)
	}
	return s, err
}

// streams returns every stream of the account with its configuration.
func streams(t *testing.T, js jetstream.JetStream) map[string]jetstream.StreamConfig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got := map[string]jetstream.StreamConfig{}
	l := js.ListStreams(ctx)
	for si := range l.Info() {
		got[si.Config.Name] = si.Config
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

func wantStreams(t *testing.T, got map[string]jetstream.StreamConfig, replicas int, names ...string) {
	t.Helper()
	if len(got) != len(names) {
		t.Errorf("%d streams, want %d: %v", len(got), len(names), got)
	}
	for _, n := range names {
		cfg, ok := got[n]
		if !ok {
			t.Errorf("stream %s missing", n)
			continue
		}
		if cfg.Replicas != replicas {
			t.Errorf("stream %s has %d replicas, want %d", n, cfg.Replicas, replicas)
		}
	}
}

var kvStreams = []string{"KV_tollgate_tenants", "KV_tollgate_keys", "KV_tollgate_limit_requests", "KV_tollgate_leases", "KV_tollgate_tokens", "KV_tollgate_notifications"}

// A replica started with the default nats.replicas: 1 against a cluster
// whose assets have 3 must refuse to start, not turn them into single
// replica ones, and create nothing either (here: a third ledger shard).
func TestOpenRefusesOtherReplicaCount(t *testing.T) {
	c := storetest.StartCluster(t, 3)
	s3, err := openCluster(t, c, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s1, err := openCluster(t, c, 1, 3)
	if err == nil {
		s1.Close()
		t.Fatal("Open with Replicas 1 on assets with 3 replicas succeeded")
	}
	t.Logf("refused in %v: %v", time.Since(start).Round(time.Millisecond), err)
	var re *store.ReplicasError
	if !errors.As(err, &re) {
		t.Fatalf("error %T, want *store.ReplicasError", err)
	}
	if re.Configured != 1 || len(re.Assets) != 9 {
		t.Errorf("ReplicasError{Configured: %d, %d assets}, want 1 and 9", re.Configured, len(re.Assets))
	}
	for _, want := range []string{"nats.replicas is 1", "bucket tollgate_keys (stream KV_tollgate_keys) has 3 replicas",
		"stream TOLLGATE_LEDGER_1 has 3 replicas", "Set nats.replicas to 3",
		"nats stream edit KV_tollgate_tenants --replicas 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q", want)
		}
	}
	wantStreams(t, streams(t, s3.JS), 3, append(kvStreams, "TOLLGATE_DAILY", "TOLLGATE_LEDGER_0", "TOLLGATE_LEDGER_1")...)
}

// Three replicas started at once on a fresh cluster race to create the
// same assets while the cluster places them: all must start, and the
// atomic batch settings must be on.
func TestConcurrentFirstOpensOnCluster(t *testing.T) {
	c := storetest.StartCluster(t, 3)
	start := time.Now()
	var (
		wg     sync.WaitGroup
		stores [3]*store.Store
		errs   [3]error
	)
	for i := range stores {
		wg.Go(func() {
			stores[i], errs[i] = store.Open(context.Background(), store.Options{URL: c.NodeURL(i), Replicas: 3,
				Timeout: 2 * time.Second})
		})
	}
	wg.Wait()
	for i, s := range stores {
		if s != nil {
			t.Cleanup(s.Close)
		}
		if errs[i] != nil {
			t.Errorf("replica %d: %v", i, errs[i])
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("three concurrent Opens took %v", time.Since(start).Round(time.Millisecond))
	got := streams(t, stores[0].JS)
	wantStreams(t, got, 3, append(kvStreams, "TOLLGATE_DAILY", "TOLLGATE_LEDGER_0")...)
	for _, n := range []string{"KV_tollgate_leases", "TOLLGATE_LEDGER_0", "TOLLGATE_DAILY"} {
		if !got[n].AllowAtomicPublish {
			t.Errorf("stream %s does not allow atomic publish", n)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, s := range stores {
		if _, _, err := s.Ledger.Add(ctx, "t1", "2026-01", 1, "m"+string(rune('a'+i))); err != nil {
			t.Fatalf("replica %d: ledger add: %v", i, err)
		}
	}
	if total, err := stores[2].Ledger.Total(ctx, "t1", "2026-01"); err != nil || total != 3 {
		t.Errorf("total = %d, %v; want 3", total, err)
	}
}

// A replica that restarts with the same configuration finds its assets
// and changes none of them (no stream update advisories), also with one
// node of the cluster down.
func TestReopenChangesNothing(t *testing.T) {
	c := storetest.StartCluster(t, 3)
	s, err := openCluster(t, c, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	before := streams(t, s.JS)
	s.Close()

	nc, err := nats.Connect(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	updates, err := nc.SubscribeSync("$JS.EVENT.ADVISORY.STREAM.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	reopen := func() {
		t.Helper()
		start := time.Now()
		s, err := openCluster(t, c, 3, 1)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		t.Logf("reopened in %v", time.Since(start).Round(time.Millisecond))
		after := streams(t, s.JS)
		for n, cfg := range before {
			if a := after[n]; a.Replicas != cfg.Replicas || a.AllowAtomicPublish != cfg.AllowAtomicPublish ||
				a.Duplicates != cfg.Duplicates || a.MaxMsgsPerSubject != cfg.MaxMsgsPerSubject {
				t.Errorf("stream %s changed: %+v, was %+v", n, a, cfg)
			}
		}
		s.Close()
	}
	reopen()
	c.Stop(2)
	reopen()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := updates.NextMsg(200 * time.Millisecond)
		if err != nil {
			break
		}
		if strings.Contains(m.Subject, ".UPDATED.") || strings.Contains(m.Subject, ".CREATED.") ||
			strings.Contains(m.Subject, ".DELETED.") {
			t.Errorf("stream changed on reopen: %s", m.Subject)
		}
	}
}
