package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tollgate/tollgate/limiter"
)

// Group commit of ledger additions and lease record updates.
//
// A replica reserves a lease per tenant every few seconds of its traffic
// and raises the spending bound in the tenant's lease record a few times
// per lease. With nats.sync_always each of those writes is a fsync of its
// stream, one after the other, and with 1,000 tenants on a saturated core
// they were what made refills fall behind and requests wait (limiter's
// TestQuotaManyActiveTenants: with sync_always off nothing waited). Writes
// that arrive while one is under way are therefore queued and sent
// together as one atomic batch, one fsync for all of them; a lone write,
// or a few, go alone. Each write keeps its meaning: an addition its
// message id (a batch holding one the ledger has seen is refused whole),
// an update its compare-and-set (a batch in which one finds another
// revision is refused whole). A refused batch, of which nothing was
// stored, is sent again in halves, down to single writes, so each caller
// learns its own outcome and one odd write costs a few more batches, not a
// fsync for every write.

// minGroup is the fewest writes sent as an atomic batch: staging a batch
// costs the server about as much as ten single writes on an idle disk,
// and far less than its single writes once many wait.
const minGroup = 8

// grouper queues writes and sends them, one group at a time, on a
// goroutine that runs while there are any.
type grouper[T any] struct {
	timeout time.Duration
	// batch sends a group of at least minGroup as one atomic batch and
	// answers each write; it returns an error wrapping
	// limiter.ErrRejected, having answered none, when nothing was stored.
	batch func(ctx context.Context, group []*T) error
	// single sends one write and answers it.
	single func(ctx context.Context, w *T)

	mu      sync.Mutex // protects queue and running
	queue   []*T
	running bool

	// batches counts the atomic batches stored, batched the writes in them.
	batches, batched atomic.Int64
}

func (g *grouper[T]) submit(w *T) {
	g.mu.Lock()
	g.queue = append(g.queue, w)
	if !g.running {
		g.running = true
		go g.run()
	}
	g.mu.Unlock()
}

func (g *grouper[T]) run() {
	for {
		g.mu.Lock()
		n := min(len(g.queue), maxBatch)
		if n == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		group := g.queue[:n:n]
		g.queue = append([]*T(nil), g.queue[n:]...)
		g.mu.Unlock()
		g.send(group)
	}
}

// send sends the group, each attempt within the store's timeout.
func (g *grouper[T]) send(group []*T) {
	if len(group) >= minGroup {
		ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
		err := g.batch(ctx, group)
		cancel()
		if err == nil {
			g.batches.Add(1)
			g.batched.Add(int64(len(group)))
		}
		if !errors.Is(err, limiter.ErrRejected) {
			return
		}
		if len(group) >= 2*minGroup {
			g.send(group[:len(group)/2])
			g.send(group[len(group)/2:])
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, w := range group {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.single(ctx, w)
		}()
	}
	wg.Wait()
}

// ---- lease record updates

type recordPut struct {
	key  string
	val  []byte
	rev  uint64
	done chan recordPutResult // buffered: answering never blocks
}

type recordPutResult struct {
	rev  uint64
	gone bool
	err  error
}

func newRecordWriter(kv jetstream.KeyValue, js jetstream.JetStream, timeout time.Duration) *grouper[recordPut] {
	g := &grouper[recordPut]{timeout: timeout}
	g.single = func(ctx context.Context, p *recordPut) {
		rev, gone, err := putOne(ctx, kv, p.key, p.val, p.rev)
		p.done <- recordPutResult{rev, gone, err}
	}
	g.batch = func(ctx context.Context, group []*recordPut) error {
		revs, err := putBatch(ctx, js, group)
		if errors.Is(err, limiter.ErrRejected) {
			return err
		}
		for i, p := range group {
			if err != nil {
				p.done <- recordPutResult{err: err}
			} else {
				p.done <- recordPutResult{rev: revs[i]}
			}
		}
		return err
	}
	return g
}

// updateRecord writes val under key if its revision is still rev (> 0),
// along with whatever other updates are waiting.
func updateRecord(ctx context.Context, g *grouper[recordPut], key string, val []byte, rev uint64) (uint64, bool, error) {
	p := &recordPut{key: key, val: val, rev: rev, done: make(chan recordPutResult, 1)}
	g.submit(p)
	select {
	case r := <-p.done:
		return r.rev, r.gone, r.err
	case <-ctx.Done():
		// As with a single write that timed out: it may yet be stored.
		return 0, false, fmt.Errorf("store: lease %s: %w", key, ctx.Err())
	}
}

// putBatch writes the group as one atomic batch and returns the new
// revision of each record.
func putBatch(ctx context.Context, js jetstream.JetStream, group []*recordPut) ([]uint64, error) {
	msgs := make([]*nats.Msg, len(group))
	for i, p := range group {
		m := nats.NewMsg("$KV." + BucketLeases + "." + p.key)
		m.Data = p.val
		m.Header.Set(hdrExpectedSeq, strconv.FormatUint(p.rev, 10))
		msgs[i] = m
	}
	ack, err := publishAtomic(ctx, js, msgs)
	if err != nil {
		return nil, fmt.Errorf("store: lease batch: %w", err)
	}
	// A batch is stored in one piece (the server holds the stream's
	// isolation lock while it stores it, or applies it as one run of its
	// Raft log), so its messages have consecutive sequences ending at the
	// acknowledged one. Were that ever not so, the next update of a record
	// would fail its compare-and-set and the limiter would drop the
	// record's tokens as swept: under-admission, never over-admission.
	revs := make([]uint64, len(group))
	first := ack.Sequence - uint64(len(group)) + 1
	for i := range revs {
		revs[i] = first + uint64(i)
	}
	return revs, nil
}

// ---- ledger additions

type ledgerAdd struct {
	subj, id string
	delta    int64
	done     chan ledgerAddResult
}

type ledgerAddResult struct {
	total int64
	dup   bool
	err   error
}

func newLedgerWriter(l *Ledger, shard int, timeout time.Duration) *grouper[ledgerAdd] {
	g := &grouper[ledgerAdd]{timeout: timeout}
	st := l.streams[shard]
	g.single = func(ctx context.Context, a *ledgerAdd) {
		total, dup, err := l.addOne(ctx, shard, a.subj, a.delta, a.id)
		a.done <- ledgerAddResult{total, dup, err}
	}
	g.batch = func(ctx context.Context, group []*ledgerAdd) error {
		totals, err := addBatch(ctx, l.js, st, group)
		if errors.Is(err, limiter.ErrRejected) {
			return err
		}
		for i, a := range group {
			if err != nil {
				a.done <- ledgerAddResult{err: err}
			} else {
				a.done <- ledgerAddResult{total: totals[i]}
			}
		}
		return err
	}
	return g
}

// addBatch applies the group's additions as one atomic batch and returns
// the counter's total just after each, read back from the stored messages
// (a counter stream stores each increment with the total it made).
func addBatch(ctx context.Context, js jetstream.JetStream, st jetstream.Stream, group []*ledgerAdd) ([]int64, error) {
	msgs := make([]*nats.Msg, len(group))
	for i, a := range group {
		msgs[i] = incrMsg(a.subj, a.delta, a.id)
	}
	ack, err := publishAtomic(ctx, js, msgs)
	if err != nil {
		return nil, fmt.Errorf("store: ledger batch: %w", err)
	}
	first := ack.Sequence - uint64(len(group)) + 1
	totals := make([]int64, len(group))
	errs := make([]error, len(group))
	var wg sync.WaitGroup
	for i, a := range group {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := st.GetMsg(ctx, first+uint64(i))
			switch {
			case err != nil:
				errs[i] = err
			case m.Subject != a.subj || m.Header.Get(nats.MsgIdHdr) != a.id:
				// Not stored in one piece after all: the caller retries
				// under the same id, which the ledger applies once.
				errs[i] = fmt.Errorf("message %d is not %s", m.Sequence, a.id)
			default:
				totals[i], errs[i] = counterValue(m.Data)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("store: ledger batch: totals unknown: %w", err)
	}
	return totals, nil
}

// counterValue decodes the total a counter stream stores in a message.
func counterValue(data []byte) (int64, error) {
	var v struct {
		Val string `json:"val"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return 0, err
	}
	if v.Val == "" {
		return 0, nil
	}
	return strconv.ParseInt(v.Val, 10, 64)
}

// Batches returns how many atomic batches of ledger additions and of lease
// record updates the store sent (not counting Close's), and how many
// writes they held.
func (s *Store) Batches() (ledgerBatches, additions, recordBatches, updates int64) {
	if s.Ledger != nil {
		for _, g := range s.Ledger.writers {
			if g != nil {
				ledgerBatches += g.batches.Load()
				additions += g.batched.Load()
			}
		}
	}
	if s.recordWriter != nil {
		recordBatches, updates = s.recordWriter.batches.Load(), s.recordWriter.batched.Load()
	}
	return
}
