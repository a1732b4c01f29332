package store

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Ledger keeps one counter per tenant and period on JetStream counter
// streams (ADR-49): an increment is one publish with a Nats-Incr header and
// its ack carries the new total. Tenants are spread over LedgerShards
// streams by a hash of their id, so sharding is configuration.
//
// Why counters and not KV compare-and-set: a lease reservation is one
// publish whatever the contention (CAS retries grow with the number of
// replicas racing for the same tenant), and dedup by Nats-Msg-Id makes a
// retried increment exactly-once. The cost is that an increment cannot be
// conditional: the caller reserves, reads the total, and refunds what went
// over (see limiter).
type Ledger struct {
	js      jetstream.JetStream
	streams []jetstream.Stream
	// atomic says every ledger stream takes atomic batches (AddAll); then
	// writers, one per stream, send concurrent additions together.
	atomic  bool
	writers []*grouper[ledgerAdd]
	// daily is the daily usage history (daily.go).
	daily *Daily
}

// ledgerHistory bounds the messages kept per tenant and period: enough to
// cover the duplicate window at hundreds of ledger operations a minute per
// tenant, about 200 KB per tenant and period at most.
const ledgerHistory = 2000

func ledgerStream(i int) string  { return fmt.Sprintf("%s_%d", streamLedger, i) }
func ledgerSubject(i int) string { return fmt.Sprintf("%s.%d", subjectLedger, i) }

func openLedger(ctx context.Context, su *setup, o Options) (*Ledger, error) {
	js := su.js
	atomic := batchSupport(js.Conn().ConnectedServerVersion())
	l := &Ledger{js: js, atomic: atomic}
	for i := 0; i < o.LedgerShards; i++ {
		want := jetstream.StreamConfig{
			Name:     ledgerStream(i),
			Subjects: []string{ledgerSubject(i) + ".>"},
			Storage:  jetstream.FileStorage,
			Replicas: o.Replicas,
			// The last message of a subject holds the counter. Earlier
			// ones are kept (up to a bound) because the server rebuilds
			// its duplicate window from stored messages when it restarts:
			// with one message per subject, a retried increment whose
			// first send was applied just before a restart would be
			// applied again. No global MaxMsgs/MaxBytes, which would
			// silently reset counters of other subjects (NATS-NOTES).
			MaxMsgsPerSubject: ledgerHistory,
			AllowMsgCounter:   true,
			AllowDirect:       true,
			// Retried increments are recognised by message id for this
			// long; the limiter stops retrying before it ends.
			Duplicates: o.DuplicateWindow,
			// Many leases are returned at once on shutdown (AddAll).
			AllowAtomicPublish: atomic,
		}
		st, err := su.ensure(ctx, want.Name, func(ctx context.Context) error {
			_, err := js.CreateStream(ctx, want)
			return err
		}, func(have *jetstream.StreamConfig) bool {
			// An existing stream gets the settings above (but keeps its
			// replicas, which ensure has checked, and whatever else an
			// operator set); it is updated only if one differs.
			changed := !slices.Equal(have.Subjects, want.Subjects) ||
				have.MaxMsgsPerSubject != want.MaxMsgsPerSubject ||
				have.AllowMsgCounter != want.AllowMsgCounter ||
				have.AllowDirect != want.AllowDirect ||
				have.Duplicates != want.Duplicates ||
				have.AllowAtomicPublish != want.AllowAtomicPublish
			have.Subjects = want.Subjects
			have.MaxMsgsPerSubject = want.MaxMsgsPerSubject
			have.AllowMsgCounter = want.AllowMsgCounter
			have.AllowDirect = want.AllowDirect
			have.Duplicates = want.Duplicates
			have.AllowAtomicPublish = want.AllowAtomicPublish
			return changed
		})
		if err != nil {
			return nil, fmt.Errorf("store: ledger stream %s: %w", ledgerStream(i), err)
		}
		l.atomic = l.atomic && st.CachedInfo().Config.AllowAtomicPublish
		l.streams = append(l.streams, st)
	}
	daily, err := openDaily(ctx, su, o)
	if err != nil {
		return nil, err
	}
	l.daily = daily
	if l.atomic {
		for i := range l.streams {
			l.writers = append(l.writers, newLedgerWriter(l, i, o.Timeout))
		}
	}
	return l, nil
}

func (l *Ledger) shard(tenant string) int {
	if len(l.streams) == 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(tenant))
	return int(h.Sum32() % uint32(len(l.streams)))
}

func (l *Ledger) subject(tenant, period string) (int, string) {
	i := l.shard(tenant)
	return i, ledgerSubject(i) + "." + tenant + "." + period
}

// Add adds delta (which may be negative) to the counter of tenant and
// period and returns the new total. msgID makes the increment idempotent
// within the stream's duplicate window: retry a failed Add with the same
// id. When the server recognises a duplicate its ack carries no total;
// Add then reads the current total instead and reports dup, and the
// current total may include later increments of others. Additions made at
// the same time as others are sent together (see grouper).
func (l *Ledger) Add(ctx context.Context, tenant, period string, delta int64, msgID string) (total int64, dup bool, err error) {
	i, subj := l.subject(tenant, period)
	if l.writers == nil {
		return l.addOne(ctx, i, subj, delta, msgID)
	}
	a := &ledgerAdd{subj: subj, id: msgID, delta: delta, done: make(chan ledgerAddResult, 1)}
	l.writers[i].submit(a)
	select {
	case r := <-a.done:
		return r.total, r.dup, r.err
	case <-ctx.Done():
		// As with a single write that timed out: it may yet be applied.
		return 0, false, fmt.Errorf("store: ledger add %s: %w", subj, ctx.Err())
	}
}

func incrMsg(subj string, delta int64, msgID string) *nats.Msg {
	m := nats.NewMsg(subj)
	incr := strconv.FormatInt(delta, 10)
	if delta >= 0 {
		incr = "+" + incr
	}
	m.Header.Set("Nats-Incr", incr)
	m.Header.Set(nats.MsgIdHdr, msgID)
	return m
}

// addOne sends one addition on its own.
func (l *Ledger) addOne(ctx context.Context, i int, subj string, delta int64, msgID string) (total int64, dup bool, err error) {
	ack, err := l.js.PublishMsg(ctx, incrMsg(subj, delta, msgID))
	if err != nil {
		return 0, false, fmt.Errorf("store: ledger add %s: %w", subj, err)
	}
	if ack.Duplicate || ack.Value == "" {
		total, err := l.totalOf(ctx, i, subj)
		return total, true, err
	}
	total, err = strconv.ParseInt(ack.Value, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("store: ledger add %s: bad total %q", subj, ack.Value)
	}
	return total, false, nil
}

// Total returns the counter of tenant and period (0 when it has none).
func (l *Ledger) Total(ctx context.Context, tenant, period string) (int64, error) {
	i, subj := l.subject(tenant, period)
	return l.totalOf(ctx, i, subj)
}

func (l *Ledger) totalOf(ctx context.Context, i int, subj string) (int64, error) {
	msg, err := l.streams[i].GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: ledger total %s: %w", subj, err)
	}
	total, err := counterValue(msg.Data)
	if err != nil {
		return 0, fmt.Errorf("store: ledger total %s: %w", subj, err)
	}
	return total, nil
}
