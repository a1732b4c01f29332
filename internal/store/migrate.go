package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tollgate/tollgate/limiter"
	"golang.org/x/sync/errgroup"
)

// Migration copies everything tollgate keeps from one store to another
// (tollgate migrate): from the embedded server to a NATS cluster, say,
// while every tollgate is stopped.
//
// It reads without consumers: a stream's subjects come from its info
// (which lists them with a subject filter) and each one's last message
// from a get, so nothing is left on either side when it ends (issue 14:
// per-call consumers piled up on the server).
//
// Records are copied byte for byte. A counter is copied as one increment
// of its total under the message id migrate-<subject>-<total>, so that a
// resend of it inside the ledger's duplicate window is not applied twice.
// What the target already holds must be the source's: a record with the
// same bytes, a counter with the same total. Such items are kept, so a
// migration that failed midway is finished by running it again, and
// running a finished one again writes nothing. Anything else on the
// target (a record or counter the source lacks, or another value) is
// refused before anything is written.

// MigrateOptions configure Migrate.
type MigrateOptions struct {
	// Target is how to open the target store (Open). Its URL is required:
	// the target is a NATS server or cluster, not an embedded one.
	// LedgerShards defaults to the source's and must be equal to it: a
	// counter keeps its subject, which names its shard.
	Target Options
	// Workers is how many reads or writes are in flight at once.
	// Default 32.
	Workers int
	// Progress, if not nil, receives a line as each stage begins.
	Progress io.Writer
}

// MigrateReport says what Migrate found and did.
type MigrateReport struct {
	Tenants, Keys, LimitRequests, Leases, Counters MigrateCount
	// Tokens is the sum of the source's counters: the quota used in all
	// periods.
	Tokens int64
	// Returns counts lease records that name a return of tokens (their
	// replica was giving them back when it stopped) which the source's
	// ledger had applied. The target's ledger is told each one's message
	// id, so that a sweeper sending the return again does not apply it a
	// second time.
	Returns int
	// Elapsed is how long Migrate took.
	Elapsed time.Duration
}

// MigrateCount counts one kind of record or the counters.
type MigrateCount struct {
	Source  int // on the source
	Present int // already on the target, equal (a run before this one)
	Copied  int // written by this run
}

func (r *MigrateReport) counts() [5]*MigrateCount {
	return [5]*MigrateCount{&r.Tenants, &r.Keys, &r.LimitRequests, &r.Leases, &r.Counters}
}

// Summary says, for each kind, how many there are on the source, with
// what was already on the target and what was copied when those differ
// from it: "3 tenants, 4 keys (1 already on the target, 3 copied), …".
func (r *MigrateReport) Summary() string {
	var b strings.Builder
	for i, c := range r.counts() {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(plural(c.Source, migrateKinds[i].one, migrateKinds[i].many))
		if c.Present > 0 {
			fmt.Fprintf(&b, " (%d already on the target, %d copied)", c.Present, c.Copied)
		}
	}
	fmt.Fprintf(&b, " holding %d tokens", r.Tokens)
	return b.String()
}

// progress is what was copied before a failure: "tenants 3 of 3, …".
func (r *MigrateReport) progress() string {
	var b strings.Builder
	for i, c := range r.counts() {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d of %d", migrateKinds[i].many, c.Present+c.Copied, c.Source)
	}
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// migrateKinds name the buckets, in the order of MigrateReport.counts,
// and last the counters.
var migrateKinds = [5]struct{ bucket, one, many string }{
	{BucketTenants, "tenant", "tenants"},
	{BucketKeys, "key", "keys"},
	{BucketLimitRequests, "limit request", "limit requests"},
	{BucketLeases, "lease record", "lease records"},
	{"", "counter", "counters"},
}

const numBuckets = 4

func (s *Store) buckets() [numBuckets]jetstream.KeyValue {
	return [numBuckets]jetstream.KeyValue{s.Tenants, s.Keys, s.LimitRequests, s.leases}
}

// ErrMigrateSame says that the target of a migration is its source.
var ErrMigrateSame = errors.New("store: migrate: the target is the source (the same NATS server or cluster, and account)")

// MigrateError says why Migrate failed, and what it had copied.
type MigrateError struct {
	// Report counts what was on the target and what had been copied.
	Report MigrateReport
	// Written says whether anything was written to the target.
	Written bool
	// Rerun says whether running the same migration again is safe.
	Rerun bool
	// Advice, if any, says what to do.
	Advice string
	Err    error
}

func (e *MigrateError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "store: migrate: %v", e.Err)
	if !e.Written {
		b.WriteString(". Nothing was written to the target")
	} else {
		fmt.Fprintf(&b, ". On the target now: %s", e.Report.progress())
	}
	if e.Rerun {
		b.WriteString(". Running the same command again is safe: it keeps what the target holds of the source's, " +
			"copies the rest, and refuses anything else")
	}
	if e.Advice != "" {
		b.WriteString(". " + e.Advice)
	}
	return b.String()
}

func (e *MigrateError) Unwrap() error { return e.Err }

// Migrate copies the tenants, keys, limit requests, lease records and
// ledger counters of src to the store o.Target describes, which it opens
// (creating the buckets and ledger streams) and closes. Every tollgate
// using src must be stopped. It refuses, before writing anything, a
// target that is src, a target that holds records or counters that are
// not src's, and a src that holds nothing. It ends by reading the target
// back and comparing it with src. A failure is a *MigrateError, which
// says what was copied and whether running it again is safe, or
// ErrMigrateSame.
func Migrate(ctx context.Context, src *Store, o MigrateOptions) (*MigrateReport, error) {
	start := time.Now()
	if o.Target.URL == "" {
		return nil, errors.New("store: migrate: the target needs a URL (an embedded server cannot be one)")
	}
	shards := len(src.Ledger.streams)
	if o.Target.LedgerShards == 0 {
		o.Target.LedgerShards = shards
	}
	if o.Target.LedgerShards != shards {
		return nil, fmt.Errorf("store: migrate: the source has %d ledger shards and the target would have %d; "+
			"a counter's subject names its shard, so they must be equal", shards, o.Target.LedgerShards)
	}
	if o.Workers <= 0 {
		o.Workers = 32
	}
	if o.Target.Timeout == 0 {
		o.Target.Timeout = 2 * time.Second
	}
	m := &migration{workers: o.Workers, out: o.Progress}
	if err := checkTarget(ctx, src, o.Target); err != nil {
		return nil, err
	}

	m.say("reading the source")
	if err := checkLedgerStreams(ctx, src, shards); err != nil {
		return nil, &MigrateError{Err: err}
	}
	from, err := m.read(ctx, src)
	if err != nil {
		return nil, &MigrateError{Err: fmt.Errorf("reading the source: %w", err)}
	}
	rep := &MigrateReport{}
	for i, c := range rep.counts() {
		c.Source = from.count(i)
	}
	for _, c := range from.counters {
		rep.Tokens += c.total
	}
	if from.empty() {
		return nil, &MigrateError{Err: errors.New("the source holds no tenant, key, limit request, lease record or counter"),
			Advice: "Check that the configuration is the one tollgate runs with (data_dir, nats.url)"}
	}
	seeds, err := m.appliedReturns(ctx, src, from)
	if err != nil {
		return nil, &MigrateError{Err: fmt.Errorf("reading the source: %w", err)}
	}
	rep.Returns = len(seeds)

	m.say("opening the target")
	dst, err := Open(ctx, o.Target)
	if err != nil {
		return nil, &MigrateError{Err: fmt.Errorf("target: %w", err)}
	}
	defer dst.Close()
	m.say("reading the target")
	to, err := m.read(ctx, dst)
	if err != nil {
		return nil, &MigrateError{Err: fmt.Errorf("reading the target: %w", err)}
	}
	if conflicts := compare(from, to, false); len(conflicts) > 0 {
		return nil, &MigrateError{Err: fmt.Errorf("the target already holds data that is not the source's: %s", listDiffs(conflicts)),
			Advice: "Migrate to a NATS account that holds no tollgate data, or remove the target's streams (" +
				strings.Join(assetNames(o.Target), ", ") + ") with `nats stream rm NAME` if they hold nothing you need"}
	}
	for i, c := range rep.counts() {
		c.Present = to.count(i)
	}

	if err := m.copy(ctx, dst, from, to, seeds, rep); err != nil {
		return nil, &MigrateError{Report: *rep, Written: true, Rerun: true, Err: fmt.Errorf("copying: %w", err)}
	}

	m.say("checking the source and the target")
	if changed, err := m.changed(ctx, src, from); err != nil || changed != "" {
		if err == nil {
			err = fmt.Errorf("the source changed while it was copied (%s): a tollgate still uses it", changed)
		}
		return nil, &MigrateError{Report: *rep, Written: true, Err: err,
			Advice: "Stop every tollgate and run the same command again; if it then refuses records or counters that " +
				"changed meanwhile, remove the target's streams (nats stream rm) and migrate again"}
	}
	if err := m.verify(ctx, dst, from); err != nil {
		return nil, &MigrateError{Report: *rep, Written: true, Err: err,
			Advice: "Do not start tollgate on the target"}
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

type migration struct {
	workers int
	out     io.Writer
}

func (m *migration) say(format string, args ...any) {
	if m.out != nil {
		fmt.Fprintf(m.out, format+"\n", args...)
	}
}

// snapshot is what a store holds.
type snapshot struct {
	// records are the values of each bucket's keys.
	records [numBuckets]map[string][]byte
	// counters are the ledger's, by subject.
	counters map[string]counter
	// marks are the streams' states as they were read.
	marks map[string]mark
}

type counter struct {
	shard int
	total int64
	// seq is the stream sequence of the counter's last message.
	seq uint64
}

type mark struct{ lastSeq, msgs uint64 }

// count is how many records of kind i (or counters, i = numBuckets) s holds.
func (s *snapshot) count(i int) int {
	if i == numBuckets {
		return len(s.counters)
	}
	return len(s.records[i])
}

func (s *snapshot) empty() bool {
	for i := range numBuckets + 1 {
		if s.count(i) > 0 {
			return false
		}
	}
	return true
}

// read reads every record and counter of s.
func (m *migration) read(ctx context.Context, s *Store) (*snapshot, error) {
	snap := &snapshot{counters: map[string]counter{}, marks: map[string]mark{}}
	var mu sync.Mutex // guards snap's maps while a stream is read
	for i, kv := range s.buckets() {
		snap.records[i] = map[string][]byte{}
		prefix := "$KV." + kv.Bucket() + "."
		name := "KV_" + kv.Bucket()
		mk, err := m.readStream(ctx, s, name, prefix+">", func(msg *jetstream.RawStreamMsg) error {
			op := msg.Header.Get(hdrKVOperation)
			if op == "DEL" || op == "PURGE" || msg.Header.Get(jetstream.MarkerReasonHeader) != "" {
				return nil
			}
			mu.Lock()
			snap.records[i][strings.TrimPrefix(msg.Subject, prefix)] = msg.Data
			mu.Unlock()
			return nil
		})
		if err != nil {
			return nil, err
		}
		snap.marks[name] = mk
	}
	for i := range s.Ledger.streams {
		name := ledgerStream(i)
		mk, err := m.readStream(ctx, s, name, ledgerSubject(i)+".>", func(msg *jetstream.RawStreamMsg) error {
			total, err := counterValue(msg.Data)
			if err != nil {
				return fmt.Errorf("counter %s: %w", msg.Subject, err)
			}
			mu.Lock()
			snap.counters[msg.Subject] = counter{shard: i, total: total, seq: msg.Sequence}
			mu.Unlock()
			return nil
		})
		if err != nil {
			return nil, err
		}
		snap.marks[name] = mk
	}
	return snap, nil
}

// readStream calls f, from several goroutines, with the last message of
// each subject of stream name under filter.
func (m *migration) readStream(ctx context.Context, s *Store, name, filter string,
	f func(*jetstream.RawStreamMsg) error) (mark, error) {
	var st jetstream.Stream
	var info *jetstream.StreamInfo
	// Listing many subjects takes a while: a million keys come in pages.
	err := try(ctx, max(10*s.timeout, 30*time.Second), func(ctx context.Context) (err error) {
		if st, err = s.JS.Stream(ctx, name); err != nil {
			return err
		}
		info, err = st.Info(ctx, jetstream.WithSubjectFilter(filter))
		return err
	})
	if err != nil {
		return mark{}, fmt.Errorf("stream %s: %w", name, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(m.workers)
	for subj := range info.State.Subjects {
		g.Go(func() error {
			var msg *jetstream.RawStreamMsg
			err := try(gctx, s.timeout, func(ctx context.Context) (err error) {
				msg, err = st.GetLastMsgForSubject(ctx, subj)
				return err
			})
			switch {
			case errors.Is(err, jetstream.ErrMsgNotFound):
				return nil // gone since the listing
			case err != nil:
				return fmt.Errorf("stream %s: %s: %w", name, subj, err)
			}
			return f(msg)
		})
	}
	if err := g.Wait(); err != nil {
		return mark{}, err
	}
	return mark{lastSeq: info.State.LastSeq, msgs: info.State.Msgs}, nil
}

// try runs f under a context bounded by timeout, again after a transient
// error, up to five times.
func try(ctx context.Context, timeout time.Duration, f func(context.Context) error) error {
	wait := 100 * time.Millisecond
	for n := 1; ; n++ {
		actx, cancel := context.WithTimeout(ctx, timeout)
		err := f(actx)
		cancel()
		if err == nil || n == 5 || !transient(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return err
		}
		wait *= 2
	}
}

// checkLedgerStreams refuses a source with counters in ledger streams
// beyond its shards (left by an earlier nats.ledger_shards): tollgate
// does not read them, and Migrate would not copy them.
func checkLedgerStreams(ctx context.Context, s *Store, shards int) error {
	var names []string
	err := try(ctx, s.timeout, func(ctx context.Context) error {
		names = nil
		l := s.JS.StreamNames(ctx, jetstream.WithStreamListSubject(subjectLedger+".>"))
		for name := range l.Name() {
			names = append(names, name)
		}
		return l.Err()
	})
	if err != nil {
		return fmt.Errorf("listing the source's ledger streams: %w", err)
	}
	var extra []string
	for _, name := range names {
		n, err := strconv.Atoi(strings.TrimPrefix(name, streamLedger+"_"))
		if err != nil || n < shards {
			continue
		}
		var msgs uint64
		err = try(ctx, s.timeout, func(ctx context.Context) error {
			st, err := s.JS.Stream(ctx, name)
			if err == nil {
				msgs = st.CachedInfo().State.Msgs
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("source stream %s: %w", name, err)
		}
		if msgs > 0 {
			extra = append(extra, fmt.Sprintf("%s (%d messages)", name, msgs))
		}
	}
	if len(extra) > 0 {
		slices.Sort(extra)
		return fmt.Errorf("the source holds counters in %s, beyond its %d ledger shards (nats.ledger_shards); "+
			"tollgate does not read them and migrate would not copy them: set nats.ledger_shards to cover them to copy them too",
			strings.Join(extra, ", "), shards)
	}
	return nil
}

// checkTarget refuses a target that is the source, and a single server
// asked for more than one replica.
func checkTarget(ctx context.Context, src *Store, o Options) error {
	copts := []nats.Option{nats.Name(o.Name), nats.Timeout(o.Timeout), nats.NoReconnect()}
	if o.Credentials != "" {
		copts = append(copts, nats.UserCredentials(o.Credentials))
	}
	nc, err := nats.Connect(o.URL, copts...)
	if err != nil {
		return fmt.Errorf("store: migrate: target %s: %w", o.URL, err)
	}
	defer nc.Close()
	if sameSystem(ctx, src.NC, nc, o.Timeout) {
		return ErrMigrateSame
	}
	same, err := sameStreams(ctx, src, nc, o.Timeout)
	if err != nil {
		return fmt.Errorf("store: migrate: target %s: %w", o.URL, err)
	}
	if same {
		return ErrMigrateSame
	}
	if o.Replicas > 1 && nc.ConnectedClusterName() == "" {
		return fmt.Errorf("store: migrate: the target %s is a single server, not a cluster: "+
			"%d replicas need a cluster of at least %d nodes (use 1 replica for a single server)", o.URL, o.Replicas, o.Replicas)
	}
	return nil
}

// sameSystem reports whether a message published on b reaches a
// subscriber on a: the two connections are to the same NATS system and
// account. An answer of no responders (tried a few times, as interest
// takes a moment to cross a cluster's routes) says they are not; a
// timeout (a permission, say) says nothing, and sameStreams decides.
func sameSystem(ctx context.Context, a, b *nats.Conn, timeout time.Duration) bool {
	subj := nats.NewInbox()
	sub, err := a.Subscribe(subj, func(m *nats.Msg) { _ = m.Respond(nil) })
	if err != nil {
		return false
	}
	defer func() { _ = sub.Unsubscribe() }()
	if a.FlushTimeout(timeout) != nil {
		return false
	}
	for range 5 {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		_, err := b.RequestWithContext(rctx, subj, nil)
		cancel()
		if err == nil {
			return true
		}
		if !errors.Is(err, nats.ErrNoResponders) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// sameStreams reports whether the target (nc) has one of the source's
// streams with the same creation time: the same stream.
func sameStreams(ctx context.Context, src *Store, nc *nats.Conn, timeout time.Duration) (bool, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return false, err
	}
	names := []string{}
	for _, kv := range src.buckets() {
		names = append(names, "KV_"+kv.Bucket())
	}
	for i := range src.Ledger.streams {
		names = append(names, ledgerStream(i))
	}
	for _, name := range names {
		var created time.Time
		err := try(ctx, timeout, func(ctx context.Context) error {
			st, err := src.JS.Stream(ctx, name)
			if err == nil {
				created = st.CachedInfo().Created
			}
			return err
		})
		if err != nil {
			return false, fmt.Errorf("source stream %s: %w", name, err)
		}
		var theirs time.Time
		err = try(ctx, timeout, func(ctx context.Context) error {
			st, err := js.Stream(ctx, name)
			if err == nil {
				theirs = st.CachedInfo().Created
			}
			return err
		})
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
		case err != nil:
			return false, fmt.Errorf("stream %s: %w", name, err)
		case theirs.Equal(created):
			return true, nil
		}
	}
	return false, nil
}

// seed is a ledger message id the target must recognise.
type seed struct{ subj, id string }

// appliedReturns finds the lease records that name a return of tokens
// (limiter.LeaseRecord.ReturnID: their replica was giving them back when
// it stopped) which the source's ledger has applied: a message with that
// id is among the counter's stored messages. A sweeper on the target
// sends such a return again under the same id, counting on the ledger to
// recognise it; the target's ledger must therefore be told the id (an
// increment of 0 under it), or the tokens would be returned twice. A
// return the source did not apply is the sweeper's to send.
func (m *migration) appliedReturns(ctx context.Context, src *Store, snap *snapshot) ([]seed, error) {
	var seeds []seed
	for key, v := range snap.records[3] {
		var r limiter.LeaseRecord
		parts := strings.Split(key, ".")
		if len(parts) != 3 || json.Unmarshal(v, &r) != nil || r.ReturnID == "" {
			continue
		}
		i, subj := src.Ledger.subject(parts[0], parts[1])
		c, ok := snap.counters[subj]
		if !ok {
			continue
		}
		st := src.Ledger.streams[i]
		found := false
		for seq := uint64(1); seq <= c.seq && !found; {
			var msg *jetstream.RawStreamMsg
			err := try(ctx, src.timeout, func(ctx context.Context) (err error) {
				msg, err = st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
				return err
			})
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("lease record %s: ledger %s: %w", key, subj, err)
			}
			found = msg.Header.Get(nats.MsgIdHdr) == r.ReturnID
			seq = msg.Sequence + 1
		}
		if found {
			seeds = append(seeds, seed{subj: subj, id: r.ReturnID})
		}
	}
	return seeds, nil
}

// A diff is an item on which two snapshots differ.
type diff struct{ kind, name, what string }

// compare lists what to holds that from does not hold the same (and,
// with missing, also what from holds that to lacks).
func compare(from, to *snapshot, missing bool) []diff {
	var out []diff
	for i := range numBuckets {
		k := migrateKinds[i]
		for key, v := range to.records[i] {
			switch fv, ok := from.records[i][key]; {
			case !ok:
				out = append(out, diff{k.one, key, "on the target, not on the source"})
			case !bytes.Equal(fv, v):
				out = append(out, diff{k.one, key, "differs"})
			}
		}
		if missing {
			for key := range from.records[i] {
				if _, ok := to.records[i][key]; !ok {
					out = append(out, diff{k.one, key, "missing on the target"})
				}
			}
		}
	}
	for subj, c := range to.counters {
		switch fc, ok := from.counters[subj]; {
		case !ok:
			out = append(out, diff{"counter", subj, fmt.Sprintf("%d on the target, none on the source", c.total)})
		case fc.total != c.total:
			out = append(out, diff{"counter", subj, fmt.Sprintf("%d on the target, %d on the source", c.total, fc.total)})
		}
	}
	if missing {
		for subj, c := range from.counters {
			if _, ok := to.counters[subj]; !ok {
				out = append(out, diff{"counter", subj, fmt.Sprintf("missing on the target (%d on the source)", c.total)})
			}
		}
	}
	slices.SortFunc(out, func(a, b diff) int { return strings.Compare(a.kind+" "+a.name, b.kind+" "+b.name) })
	return out
}

// listDiffs names the first few differences and counts the rest.
func listDiffs(ds []diff) string {
	const show = 5
	var parts []string
	for _, d := range ds[:min(show, len(ds))] {
		parts = append(parts, fmt.Sprintf("%s %q %s", d.kind, d.name, d.what))
	}
	s := strings.Join(parts, "; ")
	if len(ds) > show {
		s += fmt.Sprintf("; and %d more", len(ds)-show)
	}
	return s
}

// copy writes what from holds and to lacks, kind by kind, then the
// seeds, counting into rep as it goes.
func (m *migration) copy(ctx context.Context, dst *Store, from, to *snapshot, seeds []seed, rep *MigrateReport) error {
	counts := rep.counts()
	for i, kv := range dst.buckets() {
		var todo []string
		for key := range from.records[i] {
			if _, ok := to.records[i][key]; !ok {
				todo = append(todo, key)
			}
		}
		if len(todo) == 0 {
			continue
		}
		slices.Sort(todo)
		m.say("copying %s", plural(len(todo), migrateKinds[i].one, migrateKinds[i].many))
		err := m.each(ctx, todo, &counts[i].Copied, func(ctx context.Context, key string) error {
			return putRecord(ctx, dst.timeout, kv, key, from.records[i][key])
		})
		if err != nil {
			return err
		}
	}
	var todo []string
	for subj := range from.counters {
		if _, ok := to.counters[subj]; !ok {
			todo = append(todo, subj)
		}
	}
	if len(todo) > 0 {
		slices.Sort(todo)
		m.say("copying %s", plural(len(todo), "counter", "counters"))
		err := m.each(ctx, todo, &counts[numBuckets].Copied, func(ctx context.Context, subj string) error {
			return putCounter(ctx, dst, subj, from.counters[subj].total)
		})
		if err != nil {
			return err
		}
	}
	for _, s := range seeds {
		err := try(ctx, dst.timeout, func(ctx context.Context) error {
			_, err := dst.JS.PublishMsg(ctx, incrMsg(s.subj, 0, s.id))
			return err
		})
		if err != nil {
			return fmt.Errorf("ledger %s: message id %s of an applied return: %w", s.subj, s.id, err)
		}
	}
	return nil
}

// each runs f for every item, m.workers at a time, adding one to *done
// for each that succeeded, and returns the first error.
func (m *migration) each(ctx context.Context, items []string, done *int, f func(context.Context, string) error) error {
	var n atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(m.workers)
	for _, it := range items {
		g.Go(func() error {
			if err := f(gctx, it); err != nil {
				return err
			}
			n.Add(1)
			return nil
		})
	}
	err := g.Wait()
	*done += int(n.Load())
	return err
}

// errBehind: a read did not show what a write just reported (reads may
// be served by a replica behind the stream's leader). Read again.
var errBehind = fmt.Errorf("a read is behind a write: %w", errNoLeader)

// putRecord creates key with value v. A key that exists with v (an
// earlier attempt whose answer was lost) is fine; with another value it
// is an error.
func putRecord(ctx context.Context, timeout time.Duration, kv jetstream.KeyValue, key string, v []byte) error {
	err := try(ctx, timeout, func(ctx context.Context) error {
		_, err := kv.Create(ctx, key, v)
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return errBehind // a replica behind the leader answered the read
		}
		if err != nil {
			return err
		}
		if !bytes.Equal(e.Value(), v) {
			return errors.New("written meanwhile on the target with another value")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s %q: %w", kv.Bucket(), key, err)
	}
	return nil
}

// putCounter adds total to the target's counter subj, which the target
// did not hold when it was read: one increment under a message id that
// names the subject and the total, which the ledger applies once
// however often it is sent within its duplicate window.
func putCounter(ctx context.Context, dst *Store, subj string, total int64) error {
	id := "migrate-" + subj + "-" + strconv.FormatInt(total, 10)
	err := try(ctx, dst.timeout, func(ctx context.Context) error {
		ack, err := dst.JS.PublishMsg(ctx, incrMsg(subj, total, id))
		switch {
		case err != nil:
			return err
		case ack.Duplicate || ack.Value == "":
			return nil // an earlier send was applied; verify reads the total
		case ack.Value != strconv.FormatInt(total, 10):
			return fmt.Errorf("is %s after adding %d: written meanwhile on the target", ack.Value, total)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("counter %s: %w", subj, err)
	}
	return nil
}

// changed says which of the source's streams changed since snap was
// read ("" for none): a tollgate still running on the source.
func (m *migration) changed(ctx context.Context, src *Store, snap *snapshot) (string, error) {
	var names []string
	for name := range snap.marks {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		var now mark
		err := try(ctx, src.timeout, func(ctx context.Context) error {
			st, err := src.JS.Stream(ctx, name)
			if err == nil {
				s := st.CachedInfo().State
				now = mark{lastSeq: s.LastSeq, msgs: s.Msgs}
			}
			return err
		})
		if err != nil {
			return "", fmt.Errorf("reading the source again: stream %s: %w", name, err)
		}
		if was := snap.marks[name]; now != was {
			return fmt.Sprintf("stream %s had %d messages up to sequence %d, now %d up to %d",
				name, was.msgs, was.lastSeq, now.msgs, now.lastSeq), nil
		}
	}
	return "", nil
}

// verify reads the whole target back and compares it with the source.
// A get may be answered by a replica a moment behind its leader: a
// difference is read again for a few seconds before it counts.
func (m *migration) verify(ctx context.Context, dst *Store, from *snapshot) error {
	deadline := time.Now().Add(max(5*dst.timeout, 10*time.Second))
	for {
		to, err := m.read(ctx, dst)
		if err != nil {
			return fmt.Errorf("reading the target back: %w", err)
		}
		ds := compare(from, to, true)
		if len(ds) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the target does not hold what the source does: %s", listDiffs(ds))
		}
		select {
		case <-time.After(250 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
