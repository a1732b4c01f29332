// Package store owns everything tollgate keeps in NATS: the embedded
// nats-server, the connection, the key-value buckets of tenants and
// credentials, supervised watchers that mirror a bucket into memory, and the
// quota ledger on JetStream counter streams.
package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tollgate/tollgate/limiter"
	"go.uber.org/zap"
)

// Bucket and stream names.
const (
	BucketTenants = "tollgate_tenants"
	BucketKeys    = "tollgate_keys"
	// BucketTokens holds access tokens; an entry lives MaxTokenLifetime
	// at most (the bucket's TTL), a token its own lifetime.
	BucketTokens        = "tollgate_tokens"
	BucketLimitRequests = "tollgate_limit_requests"
	BucketLeases        = "tollgate_leases"
	// BucketNotifications holds webhook notifications (notifications.go).
	BucketNotifications = "tollgate_notifications"
	streamLedger        = "TOLLGATE_LEDGER"
	subjectLedger       = "tollgate.ledger"
)

// DefaultDuplicateWindow is the default of Options.DuplicateWindow: the
// limiter's, which re-sends a ledger operation under its message id until
// 30s before the window ends. A deployment that changes one must pass the
// same value to both (limiter.QuotaOptions.DuplicateWindow).
const DefaultDuplicateWindow = limiter.DuplicateWindow

// MaxTokenLifetime bounds an access token's lifetime: the tokens
// bucket's TTL, after which the store forgets a token whatever its own
// expiry says.
const MaxTokenLifetime = 24 * time.Hour

// defaultTimeout is the default of Options.Timeout.
const defaultTimeout = 2 * time.Second

// Sentinel errors.
var (
	ErrNotFound = errors.New("store: not found")
	ErrExists   = errors.New("store: already exists")
)

// Options configure Open. The zero value runs an in-process embedded
// server under ./data.
type Options struct {
	// URL of an external NATS server; empty embeds one.
	URL string
	// Credentials file for the external server.
	Credentials string
	// DataDir of the embedded server's JetStream store.
	DataDir string
	// Listen, for the embedded server, additionally serves TCP clients.
	Listen string
	// SyncAlways makes the embedded server fsync each write.
	SyncAlways bool
	// Replicas of streams and buckets. Default 1.
	Replicas int
	// Timeout of each operation. Default 2s.
	Timeout time.Duration
	// LedgerShards is the number of ledger streams. Default 1.
	LedgerShards int
	// DuplicateWindow is how long the ledger recognises a message id; the
	// limiter must be given the same (limiter.QuotaOptions.DuplicateWindow).
	// Default DefaultDuplicateWindow (5m).
	DuplicateWindow time.Duration
	// Name is the client connection name.
	Name string
	// Log receives connection events. Default: no logging.
	Log *zap.Logger
}

// Store is an open connection with its buckets and ledger.
type Store struct {
	NC *nats.Conn
	JS jetstream.JetStream
	// Tenants, Keys and LimitRequests are the record buckets: the record
	// helpers (Get, Create, Update, Delete) bound each attempt on them by
	// Options.Timeout.
	Tenants jetstream.KeyValue
	Keys    jetstream.KeyValue
	// LimitRequests holds limit increase requests.
	LimitRequests jetstream.KeyValue
	// Tokens holds access tokens (not migrated: they live minutes).
	Tokens jetstream.KeyValue
	// Notifications holds webhook notifications, each kept
	// NotificationRetention after its last change (not migrated).
	Notifications jetstream.KeyValue

	Ledger *Ledger
	leases jetstream.KeyValue
	// leasesAtomic says the leases bucket takes atomic batches;
	// recordWriter then groups concurrent lease record updates.
	leasesAtomic bool
	recordWriter *grouper[recordPut]

	server  *server.Server
	timeout time.Duration
	log     *zap.Logger
	// up mirrors the connection state for the request path, which must not
	// take the connection's lock (Connected is called per request).
	up atomic.Bool
	// reconnected is closed, and forgotten, at each reconnect (see
	// Reconnected); nil until someone asks for it.
	reconnectMu sync.Mutex
	reconnected chan struct{}
	// reconnects counts the connection's reconnects, and watches holds
	// each watched bucket's *watchStats by name (Watch): for metrics.
	reconnects atomic.Int64
	watches    sync.Map
}

// Open starts the embedded server when o.URL is empty, connects, and
// creates the buckets and ledger streams that are missing, with
// o.Replicas replicas. It never changes the replica count of an existing
// one: when one differs from o.Replicas, Open fails with a *ReplicasError
// before it creates or changes anything. Replicas started together on a
// fresh cluster race to create the same assets, and a cluster needs time
// to elect leaders and place replicated streams: Open retries on such
// transient errors for max(5×o.Timeout, 30s).
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Timeout == 0 {
		o.Timeout = defaultTimeout
	}
	if o.DuplicateWindow == 0 {
		o.DuplicateWindow = DefaultDuplicateWindow
	}
	if o.LedgerShards == 0 {
		o.LedgerShards = 1
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.DataDir == "" {
		o.DataDir = "./data"
	}
	s := &Store{timeout: o.Timeout, log: o.Log}
	copts := []nats.Option{
		nats.Name(o.Name),
		// No reconnect buffer: a publish that timed out for the caller must
		// not be applied later behind its back (NATS-NOTES: phantom
		// increments). Ledger writes carry message ids and are retried.
		nats.ReconnectBufSize(-1),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// A node that dies silently (power, partition: no FIN or RST)
		// is noticed after two unanswered pings, 2-3 operation timeouts,
		// and the client moves to another node (TestSilentNodeNoticed:
		// with 5 s pings it took 10-15 s, longer than the failover
		// horizon).
		nats.PingInterval(max(o.Timeout, 500*time.Millisecond)),
		nats.MaxPingsOutstanding(2),
		nats.Timeout(o.Timeout),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			s.up.Store(false)
			o.Log.Warn("nats disconnected", zap.Error(err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			s.up.Store(true)
			o.Log.Info("nats reconnected", zap.String("url", nc.ConnectedUrlRedacted()))
			s.reconnects.Add(1)
			s.noteReconnect()
		}),
		nats.ClosedHandler(func(*nats.Conn) { s.up.Store(false) }),
	}
	if o.URL == "" {
		ns, err := startEmbedded(o)
		if err != nil {
			return nil, err
		}
		s.server = ns
		copts = append(copts, nats.InProcessServer(ns))
	} else if o.Credentials != "" {
		copts = append(copts, nats.UserCredentials(o.Credentials))
	}
	nc, err := nats.Connect(o.URL, copts...)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("store: connect: %w", err)
	}
	s.NC = nc
	s.up.Store(nc.IsConnected())
	if s.JS, err = jetstream.New(nc); err != nil {
		s.Close()
		return nil, fmt.Errorf("store: jetstream: %w", err)
	}
	su := newSetup(s.JS, o)
	ctx, cancel := context.WithDeadline(ctx, su.deadline)
	defer cancel()
	if err := su.checkReplicas(ctx, assetNames(o)); err != nil {
		s.Close()
		return nil, err
	}
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
		ttl  time.Duration
	}{{BucketTenants, &s.Tenants, 0}, {BucketKeys, &s.Keys, 0}, {BucketLimitRequests, &s.LimitRequests, 0}, {BucketLeases, &s.leases, 0},
		{BucketTokens, &s.Tokens, MaxTokenLifetime}, {BucketNotifications, &s.Notifications, NotificationRetention}} {
		kv, err := su.ensureKV(ctx, jetstream.KeyValueConfig{
			Bucket: b.name, History: 1, Storage: jetstream.FileStorage, Replicas: o.Replicas, TTL: b.ttl,
		})
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("store: bucket %s: %w", b.name, err)
		}
		*b.kv = kv
	}
	for _, kv := range []*jetstream.KeyValue{&s.Tenants, &s.Keys, &s.LimitRequests, &s.Tokens, &s.Notifications} {
		*kv = &bucket{KeyValue: *kv, timeout: o.Timeout, store: s}
	}
	// Lease records of many tenants are written at once on shutdown.
	s.leasesAtomic = batchSupport(nc.ConnectedServerVersion()) && su.enableAtomic(ctx, "KV_"+BucketLeases)
	if s.leasesAtomic {
		s.recordWriter = newRecordWriter(s.leases, s.JS, o.Timeout)
	}
	if s.Ledger, err = openLedger(ctx, su, o); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func startEmbedded(o Options) (*server.Server, error) {
	dir, err := filepath.Abs(filepath.Join(o.DataDir, "nats"))
	if err != nil {
		return nil, fmt.Errorf("store: data dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: data dir: %w", err)
	}
	sopts := &server.Options{
		ServerName: "tollgate", JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true,
		SyncAlways: o.SyncAlways, DontListen: o.Listen == "",
		// JetStream must not size itself from the whole machine.
		JetStreamMaxMemory: 256 << 20,
	}
	if o.Listen != "" {
		host, port, err := splitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("store: nats.listen: %w", err)
		}
		if port == 0 {
			port = server.RANDOM_PORT
		}
		sopts.Host, sopts.Port = host, port
	}
	ns, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("store: embedded server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("store: embedded server did not become ready in 30s")
	}
	return ns, nil
}

// ClientURL is the embedded server's TCP address for other replicas, or "".
func (s *Store) ClientURL() string {
	if s.server == nil || s.server.Addr() == nil {
		return ""
	}
	return s.server.ClientURL()
}

// Connected reports whether the connection to NATS is up. It is one
// atomic load, for the request path.
func (s *Store) Connected() bool { return s.up.Load() }

// Reconnected returns a channel that is closed when the connection to
// NATS is next re-established; ask again for the one after. A reconnect
// may be to a server that restarted, or to another node, and lost the
// ordered consumers of the watchers (Watch): they start over at once
// instead of waiting for their periodic check.
func (s *Store) Reconnected() <-chan struct{} {
	s.reconnectMu.Lock()
	defer s.reconnectMu.Unlock()
	if s.reconnected == nil {
		s.reconnected = make(chan struct{})
	}
	return s.reconnected
}

// noteReconnect wakes those waiting on Reconnected.
func (s *Store) noteReconnect() {
	s.reconnectMu.Lock()
	defer s.reconnectMu.Unlock()
	if s.reconnected != nil {
		close(s.reconnected)
		s.reconnected = nil
	}
}

// Close drains the connection and stops the embedded server, if any.
func (s *Store) Close() {
	if s.NC != nil {
		_ = s.NC.Drain()
		deadline := time.Now().Add(2 * time.Second)
		for !s.NC.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		s.NC.Close()
	}
	if s.server != nil {
		s.server.Shutdown()
		s.server.WaitForShutdown()
	}
}

// Ctx returns a context bounded by the store's operation timeout.
func (s *Store) Ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, s.timeout)
}

// WriteCtx returns a context for calls of the record helpers (Get, Create,
// Update, Delete) that must ride out the election of a new leader of a
// bucket's stream: bounded by writeTime, while each attempt the helpers
// make stays bounded by the operation timeout.
func (s *Store) WriteCtx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, writeTime(s.timeout))
}

// writeTime is how long the record helpers may keep retrying: long enough
// for a stream whose leader crashed to elect another, which Raft does only
// after its election timeout (4-9 s, issue 14).
func writeTime(timeout time.Duration) time.Duration { return max(5*timeout, 15*time.Second) }

// bucket is a Store's handle on one of its record buckets (Tenants, Keys,
// LimitRequests): the record helpers bound each attempt on it by the
// store's operation timeout.
type bucket struct {
	jetstream.KeyValue
	timeout time.Duration
	// store, for Watch: its reconnects.
	store *Store
}

// reconnected is the store's Reconnected, through which Watch learns of
// reconnects (a bucket of no store: never).
func (b *bucket) reconnected() <-chan struct{} {
	if b.store == nil {
		return nil
	}
	return b.store.Reconnected()
}

// errReread: a read did not yet show what a write that failed reported
// (the key exists, or its revision moved on); reads may be served by a
// replica that is behind the stream's leader. Read again.
var errReread = errors.New("store: a read is behind a write; reading again")

// records runs op until it succeeds or fails for good: each attempt under
// a context bounded by kv's operation timeout (a Store's bucket's, else
// the default 2s), transient errors retried with backoff until ctx ends
// or, when ctx has no deadline, writeTime has passed. unknown tells op
// that an earlier attempt failed without an answer, so a write it sent
// may have been applied: op must then find out by reading, never assume.
func records(ctx context.Context, kv jetstream.KeyValue, op func(ctx context.Context, unknown bool) error) error {
	timeout := defaultTimeout
	if b, ok := kv.(*bucket); ok {
		timeout = b.timeout
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(writeTime(timeout))
	}
	unknown := false
	wait := 20 * time.Millisecond
	for n := 1; ; n++ {
		actx, cancel := context.WithTimeout(ctx, timeout)
		err := op(actx, unknown)
		cancel()
		if err == nil || !transient(err) || ctx.Err() != nil {
			return err
		}
		unknown = unknown || unanswered(err)
		if time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("%w (still failing after %d attempts)", err, n)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return err
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// unanswered reports whether a request that failed with err may still
// have been applied: nothing says that it did not reach the stream's
// leader. No responders, a full reconnect buffer (the connection is down
// and has none) and an error answered by JetStream say that it did not.
func unanswered(err error) bool {
	var apiErr *jetstream.APIError
	return !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse) &&
		!errors.Is(err, nats.ErrReconnectBufExceeded) && !errors.Is(err, errReread) &&
		!errors.As(err, &apiErr)
}

func absent(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted)
}

// Get decodes the JSON value of key in kv into v. Like every record
// helper it retries transient errors (see records): give it a ctx from
// Store.WriteCtx to ride out a leader election.
func Get(ctx context.Context, kv jetstream.KeyValue, key string, v any) (revision uint64, err error) {
	err = records(ctx, kv, func(ctx context.Context, _ bool) error {
		e, err := kv.Get(ctx, key)
		if absent(err) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("store: get %s: %w", key, err)
		}
		if err := json.Unmarshal(e.Value(), v); err != nil {
			return fmt.Errorf("store: decode %s: %w", key, err)
		}
		revision = e.Revision()
		return nil
	})
	return revision, err
}

// Create stores v under key, failing with ErrExists if key is present.
// When an attempt got no answer and a later one finds the key present,
// the value stored decides: the bytes of v are ours (success, at their
// revision), other bytes are ErrExists.
func Create(ctx context.Context, kv jetstream.KeyValue, key string, v any) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	var rev uint64
	err = records(ctx, kv, func(ctx context.Context, unknown bool) error {
		n, err := kv.Create(ctx, key, b)
		if err == nil {
			rev = n
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("store: create %s: %w", key, err)
		}
		if !unknown {
			return ErrExists
		}
		e, err := kv.Get(ctx, key)
		switch {
		case absent(err):
			// The leader has the key; this read came from a replica
			// behind it (or the key was deleted meanwhile: create again).
			return errReread
		case err != nil:
			return fmt.Errorf("store: create %s: %w", key, err)
		case !bytes.Equal(e.Value(), b):
			return ErrExists
		}
		rev = e.Revision() // an earlier attempt's
		return nil
	})
	return rev, err
}

// Update replaces key's value if its revision is still rev; otherwise it
// fails with an error that is jetstream.ErrKeyRevisionMismatch. When an
// attempt got no answer and a later one meets another revision, the value
// stored decides: the bytes of v are ours (success, at their revision),
// anything else is the conflict.
func Update(ctx context.Context, kv jetstream.KeyValue, key string, v any, rev uint64) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	var next uint64
	err = records(ctx, kv, func(ctx context.Context, unknown bool) error {
		n, err := kv.Update(ctx, key, b, rev)
		if err == nil {
			next = n
			return nil
		}
		err = fmt.Errorf("store: update %s: %w", key, err)
		if !unknown || !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return err
		}
		e, gerr := kv.Get(ctx, key)
		switch {
		case absent(gerr):
			return err // deleted meanwhile
		case gerr != nil:
			return fmt.Errorf("store: update %s: %w", key, gerr)
		case e.Revision() <= rev:
			return errReread // the leader has a later revision
		case !bytes.Equal(e.Value(), b):
			return err
		}
		next = e.Revision() // an earlier attempt's
		return nil
	})
	return next, err
}

// Delete removes key, failing with ErrNotFound if it is absent. It deletes
// the revision it reads, and reads again when that is no longer the
// latest: so a key that is absent on a later read than the first, after
// an attempt that got no answer (or another deleter), is deleted, not
// ErrNotFound.
func Delete(ctx context.Context, kv jetstream.KeyValue, key string) error {
	seen := false // a read found key
	return records(ctx, kv, func(ctx context.Context, _ bool) error {
		e, err := kv.Get(ctx, key)
		if absent(err) {
			if seen {
				return nil
			}
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("store: delete %s: %w", key, err)
		}
		seen = true
		err = kv.Delete(ctx, key, jetstream.LastRevision(e.Revision()))
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return errReread
		}
		if err != nil {
			return fmt.Errorf("store: delete %s: %w", key, err)
		}
		return nil
	})
}

func splitHostPort(addr string) (string, int, error) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", 0, fmt.Errorf("%q: want host:port", addr)
	}
	var port int
	if _, err := fmt.Sscanf(addr[i+1:], "%d", &port); err != nil {
		return "", 0, fmt.Errorf("%q: bad port", addr)
	}
	return strings.Trim(addr[:i], "[]"), port, nil
}

// ReplicasError says that streams or buckets tollgate would use already
// exist with another replica count than the configured one (nats.replicas).
// Open does not change the replica count of an existing asset: doing so
// silently, e.g. from the default 1 against a cluster whose assets have 3,
// would throw away their redundancy.
type ReplicasError struct {
	// Configured is the replica count Open was given.
	Configured int
	// Assets are those with another count.
	Assets []AssetReplicas
}

// AssetReplicas is an existing stream and its replica count.
type AssetReplicas struct {
	Stream   string // the JetStream stream, KV_<bucket> for a bucket
	Replicas int
}

func (e *ReplicasError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "store: nats.replicas is %d, but ", e.Configured)
	var counts []string
	for i, a := range e.Assets {
		if i > 0 {
			b.WriteString(", ")
		}
		if bucket, ok := strings.CutPrefix(a.Stream, "KV_"); ok {
			fmt.Fprintf(&b, "bucket %s (stream %s)", bucket, a.Stream)
		} else {
			fmt.Fprintf(&b, "stream %s", a.Stream)
		}
		fmt.Fprintf(&b, " has %d replicas", a.Replicas)
		if c := strconv.Itoa(a.Replicas); !slices.Contains(counts, c) {
			counts = append(counts, c)
		}
	}
	fmt.Fprintf(&b, "; tollgate does not change the replicas of existing streams and buckets. "+
		"Set nats.replicas to %s to use them as they are, or change their replicas with the nats CLI first:",
		strings.Join(counts, " or "))
	for i, a := range e.Assets {
		if i > 0 {
			b.WriteByte(';')
		}
		fmt.Fprintf(&b, " nats stream edit %s --replicas %d", a.Stream, e.Configured)
	}
	return b.String()
}

// assetNames are the streams Open creates or uses.
func assetNames(o Options) []string {
	names := []string{"KV_" + BucketTenants, "KV_" + BucketKeys, "KV_" + BucketLimitRequests, "KV_" + BucketLeases, "KV_" + BucketTokens, "KV_" + BucketNotifications, streamDaily}
	for i := 0; i < o.LedgerShards; i++ {
		names = append(names, ledgerStream(i))
	}
	return names
}

// setup creates or finds Open's streams and buckets, retrying transient
// errors until its deadline.
type setup struct {
	js       jetstream.JetStream
	replicas int
	// attempt bounds each request.
	attempt  time.Duration
	deadline time.Time
	log      *zap.Logger
}

// setupTime is how long Open keeps trying: long enough for a cluster that
// was just started to elect its leaders and place replicated streams.
func setupTime(timeout time.Duration) time.Duration { return max(5*timeout, 30*time.Second) }

func newSetup(js jetstream.JetStream, o Options) *setup {
	return &setup{js: js, replicas: o.Replicas, attempt: o.Timeout,
		deadline: time.Now().Add(setupTime(o.Timeout)), log: o.Log}
}

// errNoLeader: a stream exists but has no leader yet.
var errNoLeader = errors.New("no stream leader elected yet")

// errNotVisible: a stream that was just created or found is not yet known
// to the server that answered (concurrent first starts on a cluster).
var errNotVisible = fmt.Errorf("stream not yet visible: %w", errNoLeader)

// transient reports whether err may go away by itself: the cluster is
// still electing leaders or placing replicas (a request got no answer, or
// JetStream answered that it cannot serve it now), the connection is
// reconnecting, a read is behind a write, or another replica created the
// same asset at the same time.
func transient(err error) bool {
	var re *ReplicasError
	if errors.As(err, &re) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrReconnectBufExceeded) || errors.Is(err, errNoLeader) || errors.Is(err, errReread) ||
		errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) || errors.Is(err, jetstream.ErrBucketExists) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case 10005, // no suitable peers for placement
			10008, // JetStream system temporarily unavailable
			10009, // JetStream cluster can not handle request (no leader)
			10023, // insufficient resources
			10058, // stream name already in use
			10075, // peer remap failed
			10118, // stream is offline
			10194, // stream is offline: reason
			10226: // stream reconfiguration already in progress
			return true
		}
		return apiErr.Code == 503
	}
	return false
}

// retry runs f, each time under a context bounded by the operation
// timeout, until it succeeds, fails for good, or the deadline passes.
func (su *setup) retry(ctx context.Context, what string, f func(context.Context) error) error {
	wait := 50 * time.Millisecond
	for n := 1; ; n++ {
		actx, cancel := context.WithTimeout(ctx, su.attempt)
		err := f(actx)
		cancel()
		if err == nil {
			return nil
		}
		if !transient(err) || ctx.Err() != nil {
			return err
		}
		if time.Now().Add(wait).After(su.deadline) {
			return fmt.Errorf("%w (still failing after %d attempts)", err, n)
		}
		su.log.Debug("nats: retrying", zap.String("what", what), zap.Int("attempt", n), zap.Error(err))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return err
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// checkReplicas fails with a *ReplicasError, before anything is created
// or changed, if any of the streams exists with another replica count.
func (su *setup) checkReplicas(ctx context.Context, streams []string) error {
	rerr := &ReplicasError{Configured: su.replicas}
	for _, name := range streams {
		err := su.retry(ctx, name, func(ctx context.Context) error {
			st, err := su.js.Stream(ctx, name)
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			if r := st.CachedInfo().Config.Replicas; r != su.replicas {
				rerr.Assets = append(rerr.Assets, AssetReplicas{Stream: name, Replicas: r})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: stream %s: %w", name, err)
		}
	}
	if len(rerr.Assets) > 0 {
		return rerr
	}
	return nil
}

// ensure finds the stream name or, when it is missing, creates it. An
// existing stream must have the configured replica count; fix, if given,
// adjusts its configuration and says whether it needs an update (which
// keeps its replicas). It returns once the stream has a leader.
func (su *setup) ensure(ctx context.Context, name string, create func(context.Context) error,
	fix func(*jetstream.StreamConfig) bool) (jetstream.Stream, error) {
	var st jetstream.Stream
	err := su.retry(ctx, name, func(ctx context.Context) error {
		s, err := su.js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			// Racing replicas may all get here; the losers see "already
			// in use" (or success if their configs are equal) and look
			// again.
			if err := create(ctx); err != nil {
				return err
			}
			su.log.Info("nats: created", zap.String("stream", name), zap.Int("replicas", su.replicas))
			s, err = su.js.Stream(ctx, name)
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return errNotVisible
			}
		}
		if err != nil {
			return err
		}
		cfg := s.CachedInfo().Config
		if cfg.Replicas != su.replicas {
			return &ReplicasError{Configured: su.replicas,
				Assets: []AssetReplicas{{Stream: name, Replicas: cfg.Replicas}}}
		}
		if fix != nil && fix(&cfg) {
			if s, err = su.js.UpdateStream(ctx, cfg); err != nil {
				return err
			}
			su.log.Info("nats: updated", zap.String("stream", name))
		}
		if c := s.CachedInfo().Cluster; c != nil && c.Leader == "" {
			return errNoLeader
		}
		st = s
		return nil
	})
	return st, err
}

// ensureKV finds or creates a bucket; an existing one is left as it is.
func (su *setup) ensureKV(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if _, err := su.ensure(ctx, "KV_"+cfg.Bucket, func(ctx context.Context) error {
		_, err := su.js.CreateKeyValue(ctx, cfg)
		return err
	}, nil); err != nil {
		return nil, err
	}
	var kv jetstream.KeyValue
	err := su.retry(ctx, cfg.Bucket, func(ctx context.Context) (err error) {
		kv, err = su.js.KeyValue(ctx, cfg.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			return errNotVisible // ensure has just seen it
		}
		return err
	})
	return kv, err
}

// enableAtomic turns on atomic batch publishing on stream (see
// enableAtomic), retrying while the cluster settles.
func (su *setup) enableAtomic(ctx context.Context, stream string) bool {
	errNotYet := fmt.Errorf("atomic publish not enabled on %s: %w", stream, errNoLeader)
	err := su.retry(ctx, stream, func(ctx context.Context) error {
		if enableAtomic(ctx, su.js, stream) {
			return nil
		}
		return errNotYet
	})
	if err != nil {
		su.log.Warn("nats: lease records are written one by one", zap.Error(err))
	}
	return err == nil
}
