package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tollgate/tollgate/limiter"
)

// LeaseBook keeps the limiter's lease records in a key-value bucket, one
// key per tenant, period and replica.
type LeaseBook struct {
	kv jetstream.KeyValue
	js jetstream.JetStream
	// atomic says the bucket's stream takes atomic batches; then w sends
	// concurrent updates together.
	atomic bool
	w      *grouper[recordPut]
}

// Leases returns the lease book of s.
func (s *Store) Leases() *LeaseBook {
	return &LeaseBook{kv: s.leases, js: s.JS, atomic: s.leasesAtomic, w: s.recordWriter}
}

func leaseKey(tenant, period, replica string) string { return tenant + "." + period + "." + replica }

// Put implements limiter.LeaseBook. Updates made at the same time as
// others are sent together (see recordWriter).
//
// A record's key names its replica, and only that replica writes it;
// others only delete it (a sweep). So when the revision we hold is not
// the record's, a read tells what happened, and nothing is assumed: if
// the record is still there, a write of ours whose answer was lost (a
// timeout at a disconnect, applied all the same) moved it on, and this
// write goes over it; only a record that is gone was swept. (Taking every
// failed compare-and-set for a sweep dropped a replica's lease again and
// again after its node restarted, burning the tenant's month.)
func (b *LeaseBook) Put(ctx context.Context, tenant, period, replica string, r limiter.LeaseRecord, rev uint64) (uint64, bool, error) {
	v, err := json.Marshal(r)
	if err != nil {
		return 0, false, err
	}
	key := leaseKey(tenant, period, replica)
	for try := 0; ; try++ {
		var n uint64
		var gone bool
		if rev != 0 && b.w != nil {
			n, gone, err = updateRecord(ctx, b.w, key, v, rev)
		} else {
			n, gone, err = putOne(ctx, b.kv, key, v, rev)
		}
		if err != nil || !gone || try == 3 {
			return n, gone, err
		}
		cur, found, err := b.current(ctx, key)
		switch {
		case err != nil:
			return 0, false, err
		case !found && rev != 0:
			return 0, true, nil // swept
		}
		rev = cur // ours, moved on by a lost answer (or 0: create it)
	}
}

// current reads the revision of key's record; found is false when there
// is none (never written, deleted or purged).
func (b *LeaseBook) current(ctx context.Context, key string) (rev uint64, found bool, err error) {
	e, err := b.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("store: lease %s: %w", key, err)
	}
	return e.Revision(), true, nil
}

// putOne writes one record: creates it when rev is 0, else updates it if
// its revision is still rev. gone reports that it was not so.
func putOne(ctx context.Context, kv jetstream.KeyValue, key string, v []byte, rev uint64) (uint64, bool, error) {
	var n uint64
	var err error
	if rev == 0 {
		n, err = kv.Create(ctx, key, v)
	} else {
		n, err = kv.Update(ctx, key, v, rev)
	}
	switch {
	case err == nil:
		return n, false, nil
	case wrongRevision(err):
		return 0, true, nil
	}
	return 0, false, fmt.Errorf("store: lease %s: %w", key, err)
}

// Delete implements limiter.LeaseBook. As Put, it resolves a revision
// that is not the record's by reading: a record still there is ours,
// moved on by a write whose answer was lost, and is deleted at its
// revision; one already gone was swept.
func (b *LeaseBook) Delete(ctx context.Context, tenant, period, replica string, rev uint64) error {
	key := leaseKey(tenant, period, replica)
	for try := 0; ; try++ {
		err := b.kv.Delete(ctx, key, jetstream.LastRevision(rev))
		if err == nil || !wrongRevision(err) || try == 3 {
			return err
		}
		cur, found, rerr := b.current(ctx, key)
		if rerr != nil {
			return rerr
		}
		if !found {
			return err // swept meanwhile: not ours to delete
		}
		rev = cur
	}
}

// wrongRevision says err is a failed compare-and-set.
func wrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Expired implements limiter.LeaseBook. It reads the latest message of
// every key in one pass, through an ordered consumer, instead of listing
// the keys and fetching each (a round trip per record: 35 µs a record, so
// 3.5 s a sweep for 100,000 records, against 5 µs; see
// BenchmarkLeaseBookExpired). It reads until the stream's last message as
// the sweep began, keeping the last value of each key. (ListKeys, used
// before, ends at the KV watcher's "initial values done" marker, which can
// come before every key was delivered while records are being written:
// TestLeaseBookExpiredWhileWritten.)
func (b *LeaseBook) Expired(ctx context.Context, t time.Time) ([]limiter.ExpiredLease, error) {
	prefix := "$KV." + b.kv.Bucket() + "."
	stream, err := b.js.Stream(ctx, "KV_"+b.kv.Bucket())
	if err != nil {
		return nil, err
	}
	// The stream's last message is the last of its key, so the consumer
	// delivers it among the first values: reading up to it reads every key
	// as it was when the sweep began.
	// (Not NumPending: a last-per-subject consumer can report nothing
	// pending before it has delivered every key while the stream grows.)
	state := stream.CachedInfo().State
	last := state.LastSeq
	// The consumer lives for this sweep only: it is deleted when the sweep
	// is done, and the server drops it after sweepConsumerIdle should this
	// replica die first. (Left to the default five minutes, one consumer a
	// sweep piled up to nats-server's limit of 1,000 consumers a stream,
	// after which every sweep failed.)
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{prefix + ">"},
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		InactiveThreshold: sweepConsumerIdle,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sweepConsumerIdle)
		defer cancel()
		if info := cons.CachedInfo(); info != nil {
			_ = stream.DeleteConsumer(dctx, info.Name)
		}
	}()
	latest := map[string]limiter.ExpiredLease{}
	if state.Msgs > 0 {
		msgs, err := cons.Messages()
		if err != nil {
			return nil, err
		}
		defer msgs.Stop()
		for {
			m, err := msgs.Next(jetstream.NextContext(ctx))
			if err != nil {
				return nil, fmt.Errorf("store: reading lease records: %w", err)
			}
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			key := strings.TrimPrefix(m.Subject(), prefix)
			switch op := m.Headers().Get("KV-Operation"); {
			case op == "DEL" || op == "PURGE" || m.Headers().Get(jetstream.MarkerReasonHeader) != "":
				delete(latest, key)
			default:
				parts := strings.Split(key, ".")
				var r limiter.LeaseRecord
				if len(parts) != 3 || json.Unmarshal(m.Data(), &r) != nil {
					delete(latest, key)
					break
				}
				latest[key] = limiter.ExpiredLease{Tenant: parts[0], Period: parts[1], Replica: parts[2], Rev: md.Sequence.Stream, Record: r}
			}
			if md.Sequence.Stream >= last {
				break
			}
		}
	}
	var out []limiter.ExpiredLease
	for _, e := range latest {
		if e.Record.Expires.Before(t) {
			out = append(out, e)
		}
	}
	return out, nil
}

// sweepConsumerIdle is how long the server keeps a sweep's consumer that
// nobody reads.
const sweepConsumerIdle = 10 * time.Second

// Sweep implements limiter.LeaseBook.
func (b *LeaseBook) Sweep(ctx context.Context, e limiter.ExpiredLease) (bool, error) {
	err := b.kv.Delete(ctx, leaseKey(e.Tenant, e.Period, e.Replica), jetstream.LastRevision(e.Rev))
	if err == nil {
		return true, nil
	}
	if wrongRevision(err) {
		return false, nil
	}
	return false, err
}
