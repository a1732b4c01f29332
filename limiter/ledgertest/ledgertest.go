// Package ledgertest owns what tests need of the limiter's storage
// interfaces: Ledger and Book, hand-written fakes whose methods are
// function fields (wrap a real implementation and override one method to
// count calls or inject a fault); Memory, an in-memory limiter.Ledger that
// keeps the contract, so that the limiter's logic is tested without NATS;
// and Run, the one conformance suite of the limiter.Ledger contract, which
// every implementation passes (Memory here, the NATS ledger in
// internal/store).
package ledgertest

import (
	"context"
	"sync"
	"time"

	"github.com/tollgate/tollgate/limiter"
)

// Ledger is a limiter.Ledger whose methods call its function fields. A
// test sets the ones it needs, or starts from Wrap and overrides one,
// calling the wrapped ledger from the new function. Calling a method whose
// field is nil panics.
type Ledger struct {
	AddFunc   func(ctx context.Context, tenant, period string, delta int64, msgID string) (total int64, dup bool, err error)
	TotalFunc func(ctx context.Context, tenant, period string) (int64, error)
}

var _ limiter.Ledger = (*Ledger)(nil)

// Wrap returns a Ledger whose functions call l. It hides any other
// method of l (limiter.BatchLedger's AddAll): the limiter then sends one
// addition at a time.
func Wrap(l limiter.Ledger) *Ledger {
	return &Ledger{AddFunc: l.Add, TotalFunc: l.Total}
}

// Add calls AddFunc.
func (f *Ledger) Add(ctx context.Context, tenant, period string, delta int64, msgID string) (int64, bool, error) {
	return f.AddFunc(ctx, tenant, period, delta, msgID)
}

// Total calls TotalFunc.
func (f *Ledger) Total(ctx context.Context, tenant, period string) (int64, error) {
	return f.TotalFunc(ctx, tenant, period)
}

// Book is a limiter.LeaseBook whose methods call its function fields, as
// Ledger is for the ledger.
type Book struct {
	PutFunc     func(ctx context.Context, tenant, period, replica string, r limiter.LeaseRecord, rev uint64) (newRev uint64, gone bool, err error)
	DeleteFunc  func(ctx context.Context, tenant, period, replica string, rev uint64) error
	ExpiredFunc func(ctx context.Context, t time.Time) ([]limiter.ExpiredLease, error)
	SweepFunc   func(ctx context.Context, e limiter.ExpiredLease) (won bool, err error)
}

var _ limiter.LeaseBook = (*Book)(nil)

// WrapBook returns a Book whose functions call b. It hides b's batch
// methods (limiter.BatchLeaseBook): Close then returns leases one tenant
// at a time.
func WrapBook(b limiter.LeaseBook) *Book {
	return &Book{PutFunc: b.Put, DeleteFunc: b.Delete, ExpiredFunc: b.Expired, SweepFunc: b.Sweep}
}

// Put calls PutFunc.
func (f *Book) Put(ctx context.Context, tenant, period, replica string, r limiter.LeaseRecord, rev uint64) (uint64, bool, error) {
	return f.PutFunc(ctx, tenant, period, replica, r, rev)
}

// Delete calls DeleteFunc.
func (f *Book) Delete(ctx context.Context, tenant, period, replica string, rev uint64) error {
	return f.DeleteFunc(ctx, tenant, period, replica, rev)
}

// Expired calls ExpiredFunc.
func (f *Book) Expired(ctx context.Context, t time.Time) ([]limiter.ExpiredLease, error) {
	return f.ExpiredFunc(ctx, t)
}

// Sweep calls SweepFunc.
func (f *Book) Sweep(ctx context.Context, e limiter.ExpiredLease) (bool, error) {
	return f.SweepFunc(ctx, e)
}

// Memory is an in-memory limiter.BatchLedger that keeps the contract Run
// checks: one counter per tenant and period, additions applied exactly
// once per message id while the id is remembered (Window), and a duplicate
// answered with the current total. Its zero value is ready to use. It is
// safe for concurrent use; one mutex serialises everything, as the one
// stream of a ledger shard does.
type Memory struct {
	// Now is the clock that ages message ids. Default time.Now.
	Now func() time.Time
	// Window is how long a message id is remembered. Default
	// limiter.DuplicateWindow.
	Window time.Duration

	mu     sync.Mutex // protects the fields below
	counts map[memKey]int64
	seen   map[string]time.Time // message id → when it was first applied
	adds   int64                // additions applied (duplicates not counted)
}

type memKey struct{ tenant, period string }

var _ limiter.BatchLedger = (*Memory)(nil)

func (m *Memory) now() time.Time {
	if m.Now == nil {
		return time.Now()
	}
	return m.Now()
}

func (m *Memory) window() time.Duration {
	if m.Window <= 0 {
		return limiter.DuplicateWindow
	}
	return m.Window
}

// Add implements limiter.Ledger.
func (m *Memory) Add(ctx context.Context, tenant, period string, delta int64, msgID string) (int64, bool, error) {
	if err := ctx.Err(); err != nil {
		return 0, false, err
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	total, dup := m.addLocked(now, tenant, period, delta, msgID)
	return total, dup, nil
}

func (m *Memory) addLocked(now time.Time, tenant, period string, delta int64, msgID string) (int64, bool) {
	if m.counts == nil {
		m.counts, m.seen = map[memKey]int64{}, map[string]time.Time{}
	}
	k := memKey{tenant, period}
	if at, ok := m.seen[msgID]; ok && now.Sub(at) < m.window() {
		return m.counts[k], true
	}
	m.seen[msgID] = now
	m.counts[k] += delta
	m.adds++
	return m.counts[k], false
}

// AddAll implements limiter.BatchLedger: it applies every addition whose
// message id it does not remember, all at once.
func (m *Memory) AddAll(ctx context.Context, adds []limiter.Addition) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range adds {
		m.addLocked(now, a.Tenant, a.Period, a.Delta, a.MsgID)
	}
	return nil
}

// Total implements limiter.Ledger.
func (m *Memory) Total(ctx context.Context, tenant, period string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counts[memKey{tenant, period}], nil
}

// Adds returns the number of additions applied so far, duplicates not
// counted.
func (m *Memory) Adds() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.adds
}
