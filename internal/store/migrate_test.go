package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
	"github.com/tollgate/tollgate/limiter"
)

// migrateShards is the ledger shards of the migration tests' stores.
const migrateShards = 2

// A counter of the seeded source: its tenant, period and total.
type seededCounter struct {
	tenant, period string
	total          int64
}

// seeded is what seedSource writes: every key of each bucket, and the
// counters.
type seeded struct {
	tenants, keys, limitRequests, leases []string
	counters                             []seededCounter
	tokens                               int64
}

var seededData = seeded{
	tenants:       []string{"acme", "globex", "initech", "umbrella"},
	keys:          []string{"k1", "k2", "k3", "k4"},
	limitRequests: []string{"lr-1"},
	leases:        []string{"acme.2026-11.replica-a", "globex.2026-11.replica-b", "umbrella.2026-11.replica-c"},
	counters: []seededCounter{
		{"acme", "2026-10", 380}, {"acme", "2026-11", 1175}, {"globex", "2026-11", 40},
		{"initech", "2026-10", 0}, {"umbrella", "2026-11", 1},
	},
	tokens: 380 + 1175 + 40 + 0 + 1,
}

// openSource opens an embedded store, as tollgate with an empty nats.url
// does, with two ledger shards.
func openSource(t testing.TB) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), store.Options{DataDir: t.TempDir(), LedgerShards: migrateShards,
		Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// seedSource writes seededData into s with the calls tollgate makes:
// records through the store's helpers, counters through Ledger.Add
// (refunds among them), lease records through the lease book.
func seedSource(t *testing.T, s *store.Store) {
	t.Helper()
	ctx := context.Background()
	created := time.Date(2026, 10, 3, 12, 0, 0, 0, time.UTC)
	for _, id := range seededData.tenants {
		if _, err := store.Create(ctx, s.Tenants, id, store.Tenant{ID: id, Plan: "pro", Created: created, Updated: created,
			Addons: map[string]int64{"mcal": 2}}); err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range seededData.keys[:3] {
		if _, err := store.Create(ctx, s.Keys, id, store.Key{ID: id, Tenant: seededData.tenants[i], Name: "erp",
			Prefix: "tg_" + id, Digest: strings.Repeat("ab", 32), Created: created}); err != nil {
			t.Fatal(err)
		}
	}
	// Bytes as no encoder writes them: copied as they are.
	if _, err := s.Keys.Put(ctx, "k4", []byte(`{ "id": "k4",  "tenant": "acme" }`)); err != nil {
		t.Fatal(err)
	}
	// A deleted key leaves a marker, which is not a record.
	if _, err := store.Create(ctx, s.Keys, "k-gone", store.Key{ID: "k-gone", Tenant: "acme"}); err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(ctx, s.Keys, "k-gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LimitRequests.Put(ctx, "lr-1",
		[]byte(`{"id":"lr-1","tenant":"acme","requested":20000,"status":"pending"}`)); err != nil {
		t.Fatal(err)
	}

	adds := []struct {
		tenant, period string
		delta          int64
		id             string
	}{
		{"acme", "2026-10", 500, "r1.1"}, {"acme", "2026-10", -120, "r1.2"},
		{"acme", "2026-11", 1000, "r1.3"}, {"acme", "2026-11", 250, "r2.1"}, {"acme", "2026-11", -75, "r2.2"},
		{"globex", "2026-11", 30, "r1.4"}, {"globex", "2026-11", 12, "r2.3"},
		// replica-b's return on shutdown, applied; its record stayed.
		{"globex", "2026-11", -2, "replica-b.ret1"},
		{"initech", "2026-10", 7, "r1.5"}, {"initech", "2026-10", -7, "r1.6"},
		{"umbrella", "2026-11", 1, "r1.7"},
	}
	for _, a := range adds {
		if _, _, err := s.Ledger.Add(ctx, a.tenant, a.period, a.delta, a.id); err != nil {
			t.Fatal(err)
		}
	}

	book := s.Leases()
	past := time.Now().Add(-time.Hour).UTC()
	for _, r := range []struct {
		tenant, period, replica string
		rec                     limiter.LeaseRecord
	}{
		// A crashed replica's lease: the new cluster's sweepers return
		// its 150 unspent tokens.
		{"acme", "2026-11", "replica-a", limiter.LeaseRecord{Reserved: 250, SpentMax: 100, Expires: past}},
		// Returns named by their records: replica-b's was applied
		// (above), replica-c's was not.
		{"globex", "2026-11", "replica-b", limiter.LeaseRecord{Reserved: 12, SpentMax: 10, Expires: past,
			ReturnID: "replica-b.ret1", ReturnAt: time.Now().UTC()}},
		{"umbrella", "2026-11", "replica-c", limiter.LeaseRecord{Reserved: 1, SpentMax: 0, Expires: past,
			ReturnID: "replica-c.ret9", ReturnAt: time.Now().UTC()}},
	} {
		if _, _, err := book.Put(ctx, r.tenant, r.period, r.replica, r.rec, 0); err != nil {
			t.Fatal(err)
		}
	}

	// The counters are on both shards.
	for i := range migrateShards {
		st, err := s.JS.Stream(ctx, "TOLLGATE_LEDGER_"+string(rune('0'+i)))
		if err != nil {
			t.Fatal(err)
		}
		if st.CachedInfo().State.NumSubjects == 0 {
			t.Fatalf("seeded counters are all on one shard; ledger stream %d has none", i)
		}
	}
	for _, c := range seededData.counters {
		if got, err := s.Ledger.Total(ctx, c.tenant, c.period); err != nil || got != c.total {
			t.Fatalf("seeded counter %s %s = %d, %v; want %d", c.tenant, c.period, got, err, c.total)
		}
	}
}

// openOn opens a store on url as a tollgate replica would.
func openOn(t *testing.T, url string, replicas int) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), store.Options{URL: url, Replicas: replicas,
		LedgerShards: migrateShards, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func migrateTo(ctx context.Context, src *store.Store, url string, replicas int) (*store.MigrateReport, error) {
	return store.Migrate(ctx, src, store.MigrateOptions{Target: store.Options{URL: url, Replicas: replicas,
		Timeout: 5 * time.Second}})
}

// bucketKeys lists the keys of kv.
func bucketKeys(t *testing.T, kv jetstream.KeyValue) []string {
	t.Helper()
	l, err := kv.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Stop() }()
	var keys []string
	for k := range l.Keys() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// checkSame fails unless dst holds exactly the seeded records, byte for
// byte as src holds them, and the seeded counters.
func checkSame(t *testing.T, src, dst *store.Store) {
	t.Helper()
	ctx := context.Background()
	for _, b := range []struct {
		name     string
		src, dst jetstream.KeyValue
		want     []string
	}{
		{"tenants", src.Tenants, dst.Tenants, seededData.tenants},
		{"keys", src.Keys, dst.Keys, seededData.keys},
		{"limit requests", src.LimitRequests, dst.LimitRequests, seededData.limitRequests},
	} {
		if got := bucketKeys(t, b.dst); !slices.Equal(got, b.want) {
			t.Errorf("target %s: keys %v, want %v", b.name, got, b.want)
		}
		for _, k := range b.want {
			se, err := b.src.Get(ctx, k)
			if err != nil {
				t.Fatalf("source %s %s: %v", b.name, k, err)
			}
			de, err := b.dst.Get(ctx, k)
			if err != nil {
				t.Errorf("target %s %s: %v", b.name, k, err)
				continue
			}
			if !bytes.Equal(se.Value(), de.Value()) {
				t.Errorf("target %s %s = %s, want %s", b.name, k, de.Value(), se.Value())
			}
		}
	}
	// Lease records, as the target's sweepers will read them.
	srcLeases, err := src.Leases().Expired(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dstLeases, err := dst.Leases().Expired(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(srcLeases) != len(seededData.leases) || len(dstLeases) != len(srcLeases) {
		t.Errorf("%d lease records on the target, %d on the source, want %d", len(dstLeases), len(srcLeases), len(seededData.leases))
	}
	leaseMap := func(ls []limiter.ExpiredLease) map[string]string {
		m := map[string]string{}
		for _, l := range ls {
			b, _ := json.Marshal(l.Record)
			m[l.Tenant+"."+l.Period+"."+l.Replica] = string(b)
		}
		return m
	}
	sm, dm := leaseMap(srcLeases), leaseMap(dstLeases)
	for _, k := range seededData.leases {
		if sm[k] == "" || dm[k] != sm[k] {
			t.Errorf("lease record %s on the target = %s, want %s", k, dm[k], sm[k])
		}
	}
	for _, c := range seededData.counters {
		s, err := src.Ledger.Total(ctx, c.tenant, c.period)
		if err != nil {
			t.Fatal(err)
		}
		d, err := dst.Ledger.Total(ctx, c.tenant, c.period)
		if err != nil {
			t.Fatal(err)
		}
		if d != s || d != c.total {
			t.Errorf("counter %s %s: %d on the target, %d on the source, want %d", c.tenant, c.period, d, s, c.total)
		}
	}
	// No counter the source lacks.
	var subjects uint64
	for i := range migrateShards {
		st, err := dst.JS.Stream(ctx, "TOLLGATE_LEDGER_"+string(rune('0'+i)))
		if err != nil {
			t.Fatal(err)
		}
		subjects += st.CachedInfo().State.NumSubjects
	}
	if subjects != uint64(len(seededData.counters)) {
		t.Errorf("%d counters on the target, want %d", subjects, len(seededData.counters))
	}
}

func wantCounts(t *testing.T, rep *store.MigrateReport, present, copied bool) {
	t.Helper()
	for _, c := range []struct {
		name string
		got  store.MigrateCount
		n    int
	}{
		{"tenants", rep.Tenants, len(seededData.tenants)},
		{"keys", rep.Keys, len(seededData.keys)},
		{"limit requests", rep.LimitRequests, len(seededData.limitRequests)},
		{"lease records", rep.Leases, len(seededData.leases)},
		{"counters", rep.Counters, len(seededData.counters)},
	} {
		want := store.MigrateCount{Source: c.n}
		if present {
			want.Present = c.n
		}
		if copied {
			want.Copied = c.n
		}
		if c.got != want {
			t.Errorf("report %s = %+v, want %+v", c.name, c.got, want)
		}
	}
	if rep.Tokens != seededData.tokens {
		t.Errorf("report tokens = %d, want %d", rep.Tokens, seededData.tokens)
	}
}

// noConsumers fails if any stream of s has a consumer left.
func noConsumers(t *testing.T, s *store.Store, side string) {
	t.Helper()
	l := s.JS.ListStreams(context.Background())
	for si := range l.Info() {
		if n := si.State.Consumers; n != 0 {
			t.Errorf("%s stream %s has %d consumers left", side, si.Config.Name, n)
		}
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestMigrateEmbeddedToCluster moves an embedded store onto a 3-node
// cluster with 3 replicas: every record byte for byte, every counter's
// total, and the counters go on counting there. Run again, it writes
// nothing and doubles nothing.
func TestMigrateEmbeddedToCluster(t *testing.T) {
	src := openSource(t)
	seedSource(t, src)
	c := storetest.StartCluster(t, 3)
	ctx := context.Background()

	rep, err := migrateTo(ctx, src, c.URL(), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("migrated in %v: %s", rep.Elapsed.Round(time.Millisecond), rep.Summary())
	wantCounts(t, rep, false, true)
	if rep.Returns != 1 {
		t.Errorf("report returns = %d, want 1 (replica-b's)", rep.Returns)
	}
	noConsumers(t, src, "source")

	dst := openOn(t, c.URL(), 3)
	noConsumers(t, dst, "target")
	checkSame(t, src, dst)
	for name, cfg := range streams(t, dst.JS) {
		if cfg.Replicas != 3 {
			t.Errorf("target stream %s has %d replicas, want 3", name, cfg.Replicas)
		}
	}

	// Run again: a no-op that finds everything in place.
	rep, err = migrateTo(ctx, src, c.URL(), 3)
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	t.Logf("second run in %v: %s", rep.Elapsed.Round(time.Millisecond), rep.Summary())
	wantCounts(t, rep, true, false)
	checkSame(t, src, dst)

	// The target's ledger counts on from the source's totals.
	if got, _, err := dst.Ledger.Add(ctx, "acme", "2026-11", 5, "after-1"); err != nil || got != 1175+5 {
		t.Errorf("first addition on the target: total %d, %v; want %d", got, err, 1175+5)
	}
	// A sweeper resending the return replica-b's record names, which the
	// source had applied, is recognised; replica-c's, which the source
	// had not applied, is applied now.
	if got, dup, err := dst.Ledger.Add(ctx, "globex", "2026-11", -2, "replica-b.ret1"); err != nil || !dup || got != 40 {
		t.Errorf("resent applied return: total %d, dup %v, %v; want 40, a duplicate", got, dup, err)
	}
	if got, dup, err := dst.Ledger.Add(ctx, "umbrella", "2026-11", -1, "replica-c.ret9"); err != nil || dup || got != 0 {
		t.Errorf("return never applied: total %d, dup %v, %v; want 0, applied", got, dup, err)
	}
}

// streamSeqs is the last sequence of every stream on the server behind s.
func streamSeqs(t *testing.T, s *store.Store) map[string]uint64 {
	t.Helper()
	got := map[string]uint64{}
	l := s.JS.ListStreams(context.Background())
	for si := range l.Info() {
		got[si.Config.Name] = si.State.LastSeq
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

// A target holding anything that is not the source's is refused before
// anything is written, with the item named.
func TestMigrateRefusesForeignData(t *testing.T) {
	src := openSource(t)
	seedSource(t, src)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		prep  func(*store.Store) error
		wants []string
	}{
		{"tenant the source lacks", func(s *store.Store) error {
			_, err := store.Create(ctx, s.Tenants, "intruder", store.Tenant{ID: "intruder", Plan: "pro"})
			return err
		}, []string{`tenant "intruder" on the target, not on the source`}},
		{"tenant that differs", func(s *store.Store) error {
			_, err := store.Create(ctx, s.Tenants, "acme", store.Tenant{ID: "acme", Plan: "free"})
			return err
		}, []string{`tenant "acme" differs`}},
		{"lease record that differs", func(s *store.Store) error {
			_, _, err := s.Leases().Put(ctx, "acme", "2026-11", "replica-a", limiter.LeaseRecord{Reserved: 1}, 0)
			return err
		}, []string{`lease record "acme.2026-11.replica-a" differs`}},
		{"counter that differs", func(s *store.Store) error {
			_, _, err := s.Ledger.Add(ctx, "acme", "2026-11", 3, "used-on-the-target")
			return err
		}, []string{"counter \"tollgate.ledger.", ".acme.2026-11\" 3 on the target, 1175 on the source"}},
		{"counter the source lacks", func(s *store.Store) error {
			_, _, err := s.Ledger.Add(ctx, "newco", "2026-11", 1, "used-on-the-target")
			return err
		}, []string{".newco.2026-11\" 1 on the target, none on the source"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := storetest.StartServer(t)
			dst := openOn(t, srv.URL(), 1)
			if err := tc.prep(dst); err != nil {
				t.Fatal(err)
			}
			before := streamSeqs(t, dst)
			_, err := migrateTo(ctx, src, srv.URL(), 1)
			var me *store.MigrateError
			if !errors.As(err, &me) || me.Written {
				t.Fatalf("Migrate = %v, want a *MigrateError with nothing written", err)
			}
			t.Logf("refused: %v", err)
			for _, w := range append(tc.wants, "already holds data that is not the source's", "Nothing was written") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q", w)
				}
			}
			if after := streamSeqs(t, dst); !mapsEqual(before, after) {
				t.Errorf("streams' last sequences went from %v to %v: written after all", before, after)
			}
		})
	}
}

func mapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// cancelOn cancels a context when a progress line contains a word.
type cancelOn struct {
	word   string
	cancel func()
}

func (c cancelOn) Write(p []byte) (int, error) {
	if strings.Contains(string(p), c.word) {
		c.cancel()
	}
	return len(p), nil
}

// A migration that stops midway says what it copied, and running it
// again finishes it: the records already there are kept, the counters
// copied once.
func TestMigrateFinishesWhatFailedMidway(t *testing.T) {
	src := openSource(t)
	seedSource(t, src)
	srv := storetest.StartServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := store.Migrate(ctx, src, store.MigrateOptions{
		Target:   store.Options{URL: srv.URL(), Replicas: 1, Timeout: 5 * time.Second},
		Progress: cancelOn{"counters", cancel},
	})
	var me *store.MigrateError
	if !errors.As(err, &me) || !me.Written || !me.Rerun {
		t.Fatalf("Migrate cut short = %v, want a *MigrateError, written, safe to rerun", err)
	}
	t.Logf("cut short: %v", err)
	for _, w := range []string{"tenants 4 of 4", "keys 4 of 4", "lease records 3 of 3", "counters 0 of 5", "Running the same command again is safe"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q", w)
		}
	}

	rep, err := migrateTo(context.Background(), src, srv.URL(), 1)
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	t.Logf("second run: %s", rep.Summary())
	if rep.Tenants.Present != 4 || rep.Tenants.Copied != 0 || rep.Counters.Present != 0 || rep.Counters.Copied != 5 {
		t.Errorf("second run: tenants %+v, counters %+v; want 4 present, 5 counters copied", rep.Tenants, rep.Counters)
	}
	checkSame(t, src, openOn(t, srv.URL(), 1))
}

// A source written to while it is copied (a tollgate still running) fails
// the migration.
func TestMigrateNoticesASourceInUse(t *testing.T) {
	src := openSource(t)
	seedSource(t, src)
	srv := storetest.StartServer(t)
	ctx := context.Background()
	w := writeOn{func() {
		if _, _, err := src.Ledger.Add(ctx, "acme", "2026-11", 1, "still-running"); err != nil {
			t.Error(err)
		}
	}}
	_, err := store.Migrate(ctx, src, store.MigrateOptions{
		Target:   store.Options{URL: srv.URL(), Replicas: 1, Timeout: 5 * time.Second},
		Progress: w,
	})
	if err == nil || !strings.Contains(err.Error(), "the source changed while it was copied") {
		t.Fatalf("Migrate = %v, want the source changed", err)
	}
	t.Logf("refused: %v", err)
}

// writeOn calls f when the copy of the counters begins.
type writeOn struct{ f func() }

func (w writeOn) Write(p []byte) (int, error) {
	if strings.Contains(string(p), "copying") && strings.Contains(string(p), "counters") {
		w.f()
	}
	return len(p), nil
}

func TestMigrateRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	t.Run("same server", func(t *testing.T) {
		srv := storetest.StartServer(t)
		src := openOn(t, srv.URL(), 1)
		seedSource(t, src)
		_, err := migrateTo(ctx, src, srv.URL(), 1)
		if !errors.Is(err, store.ErrMigrateSame) {
			t.Errorf("Migrate to its own server = %v, want ErrMigrateSame", err)
		}
	})
	t.Run("same cluster through another node", func(t *testing.T) {
		c := storetest.StartCluster(t, 3)
		src, err := store.Open(ctx, store.Options{URL: c.NodeURL(0), Replicas: 3, LedgerShards: migrateShards,
			Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		seedSource(t, src)
		_, err = migrateTo(ctx, src, c.NodeURL(2), 3)
		if !errors.Is(err, store.ErrMigrateSame) {
			t.Errorf("Migrate to another node of its cluster = %v, want ErrMigrateSame", err)
		}
	})
	t.Run("empty source", func(t *testing.T) {
		srv := storetest.StartServer(t)
		_, err := migrateTo(ctx, openSource(t), srv.URL(), 1)
		if err == nil || !strings.Contains(err.Error(), "the source holds no tenant") {
			t.Errorf("Migrate of an empty source = %v, want refused", err)
		}
	})
	t.Run("replicas on a single server", func(t *testing.T) {
		srv := storetest.StartServer(t)
		src := openSource(t)
		seedSource(t, src)
		start := time.Now()
		_, err := migrateTo(ctx, src, srv.URL(), 3)
		if err == nil || !strings.Contains(err.Error(), "is a single server, not a cluster") {
			t.Errorf("Migrate with 3 replicas to one server = %v, want refused", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("refused after %v, want at once", d)
		}
	})
	t.Run("other ledger shards", func(t *testing.T) {
		srv := storetest.StartServer(t)
		src := openSource(t)
		_, err := store.Migrate(ctx, src, store.MigrateOptions{Target: store.Options{URL: srv.URL(), LedgerShards: 3}})
		if err == nil || !strings.Contains(err.Error(), "2 ledger shards and the target would have 3") {
			t.Errorf("Migrate to 3 shards from 2 = %v, want refused", err)
		}
	})
	t.Run("no target", func(t *testing.T) {
		_, err := store.Migrate(ctx, openSource(t), store.MigrateOptions{})
		if err == nil || !strings.Contains(err.Error(), "needs a URL") {
			t.Errorf("Migrate without a target URL = %v, want refused", err)
		}
	})
}

// BenchmarkMigrate moves 1,000 tenants, 20,000 keys and 2,000 counters
// from an embedded store onto a fresh 3-node cluster with 3 replicas.
// 3.3–4.3 s on a 2-core machine (the cluster's nodes in the same process).
func BenchmarkMigrate(b *testing.B) {
	src := openSource(b)
	ctx := context.Background()
	for i := range 20000 {
		v := fmt.Sprintf(`{"id":"k%d","tenant":"t%d","name":"erp","prefix":"tg_abc","digest":"%064d"}`, i, i%1000, i)
		if _, err := src.Keys.Put(ctx, fmt.Sprintf("k%d", i), []byte(v)); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 1000 {
		if _, err := src.Tenants.Put(ctx, fmt.Sprintf("t%d", i), []byte(`{"id":"x","plan":"pro"}`)); err != nil {
			b.Fatal(err)
		}
		for _, p := range []string{"2026-10", "2026-11"} {
			if _, _, err := src.Ledger.Add(ctx, fmt.Sprintf("t%d", i), p, int64(i+1), "a"+p+fmt.Sprint(i)); err != nil {
				b.Fatal(err)
			}
		}
	}
	for b.Loop() {
		b.StopTimer()
		c := storetest.StartCluster(b, 3)
		b.StartTimer()
		rep, err := migrateTo(ctx, src, c.URL(), 3)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if rep.Keys.Copied != 20000 || rep.Counters.Copied != 2000 {
			b.Fatalf("copied %+v keys, %+v counters", rep.Keys, rep.Counters)
		}
		c.Cleanup()
		b.StartTimer()
	}
}
