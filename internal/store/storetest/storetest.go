// Package storetest starts real, embedded NATS servers for tests: no
// mocks of NATS anywhere in tollgate's tests.
package storetest

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/tollgate/tollgate/internal/poll"
	"github.com/tollgate/tollgate/internal/store"
)

// Open starts an embedded server with its store under a temporary
// directory, serving TCP clients on a random loopback port so that other
// "replicas" can Connect to it. It is closed when the test ends.
func Open(t testing.TB) *store.Store {
	t.Helper()
	return open(t, false)
}

// OpenSync is Open with the embedded server fsyncing every write, as
// tollgate runs by default (nats.sync_always): for measurements of what
// the ledger and lease records cost.
func OpenSync(t testing.TB) *store.Store {
	t.Helper()
	return open(t, true)
}

func open(t testing.TB, sync bool) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), store.Options{
		DataDir: t.TempDir(), Listen: "127.0.0.1:0", SyncAlways: sync, Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Connect opens another client of the server behind s, as a second
// replica would.
func Connect(t testing.TB, s *store.Store) *store.Store {
	t.Helper()
	c, err := store.Open(context.Background(), store.Options{URL: s.ClientURL(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("storetest: connect: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// CheckFor is poll.CheckFor, kept here for the store's and limiter's
// tests that already import storetest.
var CheckFor = poll.CheckFor

// Server is a standalone nats-server with JetStream on a fixed loopback
// port, which a test can stop and start again (same port, same store) to
// play an outage.
type Server struct {
	t    testing.TB
	dir  string
	port int
	ns   *server.Server
}

// StartServer starts a server on a random loopback port.
func StartServer(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, dir: t.TempDir(), port: server.RANDOM_PORT}
	s.Start()
	s.port = s.ns.Addr().(*net.TCPAddr).Port
	t.Cleanup(s.Stop)
	return s
}

// URL is the server's client URL.
func (s *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

// Start (re)starts the server.
func (s *Server) Start() {
	s.t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: s.port, JetStream: true,
		StoreDir: s.dir, NoSigs: true, NoLog: true, ServerName: "test"})
	if err != nil {
		s.t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		s.t.Fatal("nats-server not ready")
	}
	s.ns = ns
}

// Stop shuts the server down.
func (s *Server) Stop() {
	if s.ns != nil {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		s.ns = nil
	}
}

// ConnectURL opens a store on an external server, as a replica would.
func ConnectURL(t testing.TB, url string) *store.Store {
	t.Helper()
	c, err := store.Open(context.Background(), store.Options{URL: url, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("storetest: connect: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}
