// Package store owns everything tollgate keeps in NATS: the embedded
// nats-server, the connection, the key-value buckets of tenants and
// credentials, supervised watchers that mirror a bucket into memory, and the
// quota ledger on JetStream counter streams.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
	BucketTenants       = "tollgate_tenants"
	BucketKeys          = "tollgate_keys"
	BucketLimitRequests = "tollgate_limit_requests"
	BucketLeases        = "tollgate_leases"
	streamLedger        = "TOLLGATE_LEDGER"
	subjectLedger       = "tollgate.ledger"
)

// DefaultDuplicateWindow is the default of Options.DuplicateWindow: the
// limiter's, which re-sends a ledger operation under its message id until
// 30s before the window ends. A deployment that changes one must pass the
// same value to both (limiter.QuotaOptions.DuplicateWindow).
const DefaultDuplicateWindow = limiter.DuplicateWindow

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
	NC      *nats.Conn
	JS      jetstream.JetStream
	Tenants jetstream.KeyValue
	Keys    jetstream.KeyValue
	// LimitRequests holds limit increase requests.
	LimitRequests jetstream.KeyValue
	Ledger        *Ledger
	leases        jetstream.KeyValue
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
}

// Open starts the embedded server when o.URL is empty, connects, and
// creates or updates the buckets and ledger streams.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
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
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.Timeout(o.Timeout),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			s.up.Store(false)
			o.Log.Warn("nats disconnected", zap.Error(err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			s.up.Store(true)
			o.Log.Info("nats reconnected", zap.String("url", nc.ConnectedUrlRedacted()))
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
	ctx, cancel := context.WithTimeout(ctx, 5*o.Timeout)
	defer cancel()
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{BucketTenants, &s.Tenants}, {BucketKeys, &s.Keys}, {BucketLimitRequests, &s.LimitRequests}, {BucketLeases, &s.leases}} {
		kv, err := s.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: b.name, History: 1, Storage: jetstream.FileStorage, Replicas: o.Replicas,
		})
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("store: bucket %s: %w", b.name, err)
		}
		*b.kv = kv
	}
	// Lease records of many tenants are written at once on shutdown.
	s.leasesAtomic = batchSupport(nc.ConnectedServerVersion()) && enableAtomic(ctx, s.JS, "KV_"+BucketLeases)
	if s.leasesAtomic {
		s.recordWriter = newRecordWriter(s.leases, s.JS, o.Timeout)
	}
	if s.Ledger, err = openLedger(ctx, s.JS, o); err != nil {
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

// Get decodes the JSON value of key in kv into v.
func Get(ctx context.Context, kv jetstream.KeyValue, key string, v any) (revision uint64, err error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("store: get %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("store: decode %s: %w", key, err)
	}
	return e.Revision(), nil
}

// Create stores v under key, failing with ErrExists if key is present.
func Create(ctx context.Context, kv jetstream.KeyValue, key string, v any) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	rev, err := kv.Create(ctx, key, b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, ErrExists
	}
	if err != nil {
		return 0, fmt.Errorf("store: create %s: %w", key, err)
	}
	return rev, nil
}

// Update replaces key's value if its revision is still rev.
func Update(ctx context.Context, kv jetstream.KeyValue, key string, v any, rev uint64) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	n, err := kv.Update(ctx, key, b, rev)
	if err != nil {
		return 0, fmt.Errorf("store: update %s: %w", key, err)
	}
	return n, nil
}

// Delete removes key, failing with ErrNotFound if it is absent.
func Delete(ctx context.Context, kv jetstream.KeyValue, key string) error {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("store: delete %s: %w", key, err)
	}
	if err := kv.Delete(ctx, key, jetstream.LastRevision(e.Revision())); err != nil {
		return fmt.Errorf("store: delete %s: %w", key, err)
	}
	return nil
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
