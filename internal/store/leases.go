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
func (b *LeaseBook) Put(ctx context.Context, tenant, period, replica string, r limiter.LeaseRecord, rev uint64) (uint64, bool, error) {
	v, err := json.Marshal(r)
	if err != nil {
		return 0, false, err
	}
	key := leaseKey(tenant, period, replica)
	if rev != 0 && b.w != nil {
		return updateRecord(ctx, b.w, key, v, rev)
	}
	return putOne(ctx, b.kv, key, v, rev)
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
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return n, false, nil
	case errors.Is(err, jetstream.ErrKeyExists), errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
		return 0, true, nil
	}
	return 0, false, fmt.Errorf("store: lease %s: %w", key, err)
}

// Delete implements limiter.LeaseBook.
func (b *LeaseBook) Delete(ctx context.Context, tenant, period, replica string, rev uint64) error {
	return b.kv.Delete(ctx, leaseKey(tenant, period, replica), jetstream.LastRevision(rev))
}

// Expired implements limiter.LeaseBook. It reads every record: lease
// records are few (active tenants × replicas) and swept every few seconds.
func (b *LeaseBook) Expired(ctx context.Context, t time.Time) ([]limiter.ExpiredLease, error) {
	lister, err := b.kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, err
	}
	defer lister.Stop()
	var out []limiter.ExpiredLease
	for key := range lister.Keys() {
		parts := strings.Split(key, ".")
		if len(parts) != 3 {
			continue
		}
		e, err := b.kv.Get(ctx, key)
		if err != nil {
			continue
		}
		var r limiter.LeaseRecord
		if json.Unmarshal(e.Value(), &r) != nil || !r.Expires.Before(t) {
			continue
		}
		out = append(out, limiter.ExpiredLease{Tenant: parts[0], Period: parts[1], Replica: parts[2], Rev: e.Revision(), Record: r})
	}
	return out, nil
}

// Sweep implements limiter.LeaseBook.
func (b *LeaseBook) Sweep(ctx context.Context, e limiter.ExpiredLease) (bool, error) {
	err := b.kv.Delete(ctx, leaseKey(e.Tenant, e.Period, e.Replica), jetstream.LastRevision(e.Rev))
	if err == nil {
		return true, nil
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return false, nil
	}
	return false, err
}
