package store

// daily.go keeps the daily usage history: one counter per tenant and day
// on a counter stream of its own. The limiter writes it beside each ledger
// operation (limiter.DayLedger): a lease's reservation, its return, a
// refund, a sweep, and the move of a lease's unused tokens from one day to
// the next at midnight. Nothing is written per request.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tollgate/tollgate/limiter"
)

// DailyRetention is how long a day's count is kept: a day disappears
// once its last change is older than this.
const DailyRetention = 400 * 24 * time.Hour

// The daily stream and its subjects, tollgate.daily.<tenant>.<day>.
const (
	streamDaily  = "TOLLGATE_DAILY"
	subjectDaily = "tollgate.daily"
)

// dayLayout is how days are named, in the tenant's time zone.
const dayLayout = "2006-01-02"

// Daily is the daily usage history.
type Daily struct {
	js     jetstream.JetStream
	st     jetstream.Stream
	atomic bool
}

func dailySubject(tenant, day string) string { return subjectDaily + "." + tenant + "." + day }

func openDaily(ctx context.Context, su *setup, o Options) (*Daily, error) {
	js := su.js
	want := jetstream.StreamConfig{
		Name:     streamDaily,
		Subjects: []string{subjectDaily + ".>"},
		Storage:  jetstream.FileStorage,
		Replicas: o.Replicas,
		// As the ledger: the last message of a subject holds the day's
		// count, and earlier ones are kept so that the server still
		// recognises a retried addition after it restarts. CompactDays
		// drops the history of days that can no longer change.
		MaxMsgsPerSubject: ledgerHistory,
		AllowMsgCounter:   true,
		AllowDirect:       true,
		Duplicates:        o.DuplicateWindow,
		// The bound of the history. A day's last change comes at most
		// a few minutes after it ends (a sweep of a crashed replica's
		// lease), so a day is kept DailyRetention at least.
		MaxAge:             DailyRetention,
		AllowAtomicPublish: batchSupport(js.Conn().ConnectedServerVersion()),
	}
	st, err := su.ensure(ctx, want.Name, func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, want)
		return err
	}, func(have *jetstream.StreamConfig) bool {
		changed := have.MaxAge != want.MaxAge || have.Duplicates != want.Duplicates ||
			have.AllowAtomicPublish != want.AllowAtomicPublish || have.MaxMsgsPerSubject != want.MaxMsgsPerSubject
		have.MaxAge, have.Duplicates = want.MaxAge, want.Duplicates
		have.AllowAtomicPublish, have.MaxMsgsPerSubject = want.AllowAtomicPublish, want.MaxMsgsPerSubject
		return changed
	})
	if err != nil {
		return nil, fmt.Errorf("store: daily stream: %w", err)
	}
	return &Daily{js: js, st: st, atomic: st.CachedInfo().Config.AllowAtomicPublish}, nil
}

// AddDay implements limiter.DayLedger: it adds delta to tenant's count of
// day, once per msgID while the stream remembers it.
func (l *Ledger) AddDay(ctx context.Context, tenant, day string, delta int64, msgID string) error {
	if l.daily == nil {
		return nil
	}
	if _, err := l.daily.js.PublishMsg(ctx, incrMsg(dailySubject(tenant, day), delta, msgID)); err != nil {
		return fmt.Errorf("store: daily add %s %s: %w", tenant, day, err)
	}
	return nil
}

// AddDays implements limiter.DayLedger: atomic batches where the server
// takes them, else one publish each, all in flight together.
func (l *Ledger) AddDays(ctx context.Context, adds []limiter.Addition) error {
	d := l.daily
	if d == nil || len(adds) == 0 {
		return nil
	}
	msgs := make([]*nats.Msg, 0, len(adds))
	for _, a := range adds {
		if a.Day != "" {
			msgs = append(msgs, incrMsg(dailySubject(a.Tenant, a.Day), a.Delta, a.MsgID))
		}
	}
	if d.atomic {
		var rest []*nats.Msg
		for len(msgs) > 0 {
			n := min(len(msgs), maxBatch)
			_, err := publishAtomic(ctx, d.js, msgs[:n])
			switch {
			case errors.Is(err, limiter.ErrRejected):
				// Nothing of it was stored (a batch holding an id the
				// stream has seen is refused whole): one by one.
				for _, m := range msgs[:n] {
					m.Header.Del(hdrBatchID)
					m.Header.Del(hdrBatchSeq)
					m.Header.Del(hdrBatchCommit)
				}
				rest = append(rest, msgs[:n]...)
			case err != nil:
				return fmt.Errorf("store: daily batch: %w", err)
			}
			msgs = msgs[n:]
		}
		if msgs = rest; len(msgs) == 0 {
			return nil
		}
	}
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	var errs []error
	for _, m := range msgs {
		f, err := d.js.PublishMsgAsync(m)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs = append(errs, err)
		case <-ctx.Done():
			return fmt.Errorf("store: daily adds: %w", ctx.Err())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("store: daily adds: %w", err)
	}
	return nil
}

// Days returns tenant's count of each day from from to to (inclusive,
// days named YYYY-MM-DD); days without a count are absent.
func (l *Ledger) Days(ctx context.Context, tenant, from, to string) (map[string]int64, error) {
	d := l.daily
	out := map[string]int64{}
	if d == nil {
		return out, nil
	}
	f, err := time.Parse(dayLayout, from)
	if err != nil {
		return nil, fmt.Errorf("store: daily: from: %w", err)
	}
	t, err := time.Parse(dayLayout, to)
	if err != nil {
		return nil, fmt.Errorf("store: daily: to: %w", err)
	}
	for day := f; !day.After(t); day = day.AddDate(0, 0, 1) {
		key := day.Format(dayLayout)
		msg, err := d.st.GetLastMsgForSubject(ctx, dailySubject(tenant, key))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("store: daily %s %s: %w", tenant, key, err)
		}
		n, err := counterValue(msg.Data)
		if err != nil {
			return nil, fmt.Errorf("store: daily %s %s: %w", tenant, key, err)
		}
		out[key] = n
	}
	return out, nil
}

// CompactDays drops the history of the days that ended more than two
// days before now (UTC, which covers every time zone and the duplicate
// window), keeping each day's last message, which holds its count. It
// looks at the three days before that, so that an hourly call compacts
// every day once. It returns how many messages it removed.
func (l *Ledger) CompactDays(ctx context.Context, now time.Time) (int, error) {
	d := l.daily
	if d == nil {
		return 0, nil
	}
	removed := 0
	for back := 3; back <= 5; back++ {
		day := now.UTC().AddDate(0, 0, -back).Format(dayLayout)
		info, err := d.st.Info(ctx, jetstream.WithSubjectFilter(subjectDaily+".*."+day))
		if err != nil {
			return removed, fmt.Errorf("store: daily compact %s: %w", day, err)
		}
		for subj, n := range info.State.Subjects {
			if n <= 1 || !strings.HasSuffix(subj, "."+day) {
				continue
			}
			if err := d.st.Purge(ctx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeKeep(1)); err != nil {
				return removed, fmt.Errorf("store: daily compact %s: %w", subj, err)
			}
			removed += int(n - 1)
		}
	}
	return removed, nil
}

// RunCompaction calls CompactDays every hour until ctx ends.
func (l *Ledger) RunCompaction(ctx context.Context, now func() time.Time) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, _ = l.CompactDays(cctx, now())
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
