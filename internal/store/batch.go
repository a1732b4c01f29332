package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/tollgate/tollgate/limiter"
)

// Atomic batch publishing (ADR-50, nats-server 2.12+): the messages of a
// batch are staged by the server and stored together or not at all, and
// with sync_always the whole batch costs one fsync instead of one per
// message. Returning the leases of thousands of tenants on shutdown thus
// takes a few batches instead of thousands of fsync'd writes (measured on
// the 2-core machine with sync_always: ~1–3k single writes/s on one stream
// whatever the concurrency, 20–35k messages/s in batches of 500–1000).

// maxBatch is the most messages per atomic batch (the server's default
// limit is 1000).
const maxBatch = 500

// Headers of atomic batches.
const (
	hdrBatchID     = "Nats-Batch-Id"
	hdrBatchSeq    = "Nats-Batch-Sequence"
	hdrBatchCommit = "Nats-Batch-Commit"
	hdrExpectedSeq = "Nats-Expected-Last-Subject-Sequence"
	hdrKVOperation = "KV-Operation"
)

// Error codes of the server that reject a batch as a whole before any of
// it is stored.
var rejectCodes = map[jetstream.ErrorCode]bool{
	jetstream.JSErrCodeStreamWrongLastSequence:         true,
	jetstream.JSErrCodeStreamWrongLastSequenceConstant: true,
	10174: true, // atomic publish is disabled
	10175: true, // sequence missing
	10176: true, // batch incomplete
	10177: true, // unsupported header
	10179: true, // invalid batch id
	10199: true, // batch too large
	10200: true, // invalid commit
	10201: true, // contains a duplicate message id: rejected whole
	10210: true, // too many batches in flight
}

// batchSupport reports whether the server can be trusted with atomic
// batches on counter streams: 2.12.0–2.12.11 corrupt a counter's running
// total under atomic-batch staging (nats-server PR #8311).
func batchSupport(version string) bool {
	var v [3]int
	for i, part := 0, version; i < 3; i++ {
		j := 0
		for j < len(part) && part[j] >= '0' && part[j] <= '9' {
			j++
		}
		v[i], _ = strconv.Atoi(part[:j])
		if j < len(part) && part[j] == '.' {
			part = part[j+1:]
		} else {
			part = ""
		}
	}
	switch {
	case v[0] != 2:
		return v[0] > 2
	case v[1] != 12:
		return v[1] > 12
	default:
		return v[2] >= 12
	}
}

// publishAtomic publishes msgs, all on one stream, as one atomic batch,
// and returns the acknowledgement of its last message. It returns an error
// wrapping limiter.ErrRejected when nothing of the batch can have been
// stored.
func publishAtomic(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg) (*jetstream.PubAck, error) {
	if len(msgs) == 0 {
		return &jetstream.PubAck{}, nil
	}
	id := nuid.Next()
	nc := js.Conn()
	for i, m := range msgs {
		m.Header.Set(hdrBatchID, id)
		m.Header.Set(hdrBatchSeq, strconv.Itoa(i+1))
		if i == len(msgs)-1 {
			break
		}
		// Staged without an acknowledgement: the commit's answer says
		// whether the whole batch was stored.
		if err := nc.PublishMsg(m); err != nil {
			// Without its commit a batch is never stored.
			return nil, fmt.Errorf("%w: %v", limiter.ErrRejected, err)
		}
	}
	last := msgs[len(msgs)-1]
	last.Header.Set(hdrBatchCommit, "1")
	ack, err := js.PublishMsg(ctx, last)
	if err == nil {
		return ack, nil
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && rejectCodes[apiErr.ErrorCode] {
		return nil, fmt.Errorf("%w: %v", limiter.ErrRejected, err)
	}
	return nil, err
}

// AddAll implements limiter.BatchLedger: one atomic batch per ledger
// stream and up to maxBatch additions.
func (l *Ledger) AddAll(ctx context.Context, adds []limiter.Addition) error {
	if !l.atomic {
		return fmt.Errorf("%w: the server does not take atomic batches", limiter.ErrRejected)
	}
	byShard := make([][]*nats.Msg, len(l.streams))
	for _, a := range adds {
		i, subj := l.subject(a.Tenant, a.Period)
		byShard[i] = append(byShard[i], incrMsg(subj, a.Delta, a.MsgID))
	}
	var firstErr error
	for _, msgs := range byShard {
		for len(msgs) > 0 {
			n := min(len(msgs), maxBatch)
			if _, err := publishAtomic(ctx, l.js, msgs[:n]); err != nil && firstErr == nil {
				firstErr = fmt.Errorf("store: ledger batch: %w", err)
			}
			msgs = msgs[n:]
		}
	}
	return firstErr
}

// PutAll implements limiter.BatchLeaseBook. More than maxBatch records
// cannot be written atomically and are refused.
func (b *LeaseBook) PutAll(ctx context.Context, w []limiter.LeaseWrite) error {
	if !b.atomic || len(w) > maxBatch {
		return fmt.Errorf("%w: no atomic batch of %d lease records", limiter.ErrRejected, len(w))
	}
	msgs := make([]*nats.Msg, 0, len(w))
	for _, lw := range w {
		v, err := json.Marshal(lw.Record)
		if err != nil {
			return fmt.Errorf("%w: %v", limiter.ErrRejected, err)
		}
		m := nats.NewMsg(b.subject(leaseKey(lw.Tenant, lw.Period, lw.Replica)))
		m.Data = v
		m.Header.Set(hdrExpectedSeq, strconv.FormatUint(lw.Rev, 10))
		msgs = append(msgs, m)
	}
	if _, err := publishAtomic(ctx, b.js, msgs); err != nil {
		return fmt.Errorf("store: lease batch: %w", err)
	}
	return nil
}

// DeleteAll implements limiter.BatchLeaseBook.
func (b *LeaseBook) DeleteAll(ctx context.Context, w []limiter.LeaseWrite) error {
	if !b.atomic {
		return fmt.Errorf("%w: the server does not take atomic batches", limiter.ErrRejected)
	}
	var firstErr error
	for len(w) > 0 {
		n := min(len(w), maxBatch)
		msgs := make([]*nats.Msg, 0, n)
		for _, lw := range w[:n] {
			m := nats.NewMsg(b.subject(leaseKey(lw.Tenant, lw.Period, lw.Replica)))
			m.Header.Set(hdrKVOperation, "DEL")
			msgs = append(msgs, m)
		}
		if _, err := publishAtomic(ctx, b.js, msgs); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("store: lease batch: %w", err)
		}
		w = w[n:]
	}
	return firstErr
}

func (b *LeaseBook) subject(key string) string { return "$KV." + BucketLeases + "." + key }

// enableAtomic turns on atomic batch publishing on a stream and reports
// whether the server took it.
func enableAtomic(ctx context.Context, js jetstream.JetStream, stream string) bool {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return false
	}
	cfg := st.CachedInfo().Config
	if cfg.AllowAtomicPublish {
		return true
	}
	cfg.AllowAtomicPublish = true
	st, err = js.UpdateStream(ctx, cfg)
	return err == nil && st.CachedInfo().Config.AllowAtomicPublish
}
