package storetest

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tollgate/tollgate/internal/store"
)

// Cluster is a JetStream cluster of real nats-servers in this process,
// on loopback ports that stay the same when a node is stopped and started
// again (with its store), to play the external cluster tollgate replicas
// share.
type Cluster struct {
	t       testing.TB
	name    string
	dirs    []string
	ports   []int // client ports
	routes  []int // cluster (route) ports
	servers []*server.Server
}

// StartCluster starts an n-node JetStream cluster and waits until it has
// a meta leader and answers JetStream requests. It is shut down when the
// test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t, name: "tollgate-test",
		servers: make([]*server.Server, n)}
	base := t.TempDir()
	for i := 0; i < n; i++ {
		c.dirs = append(c.dirs, filepath.Join(base, fmt.Sprintf("n%d", i)))
		c.ports = append(c.ports, freePort(t))
		c.routes = append(c.routes, freePort(t))
	}
	t.Cleanup(c.Cleanup)
	for i := range n {
		c.start(i)
	}
	c.WaitReady(30 * time.Second)
	return c
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("storetest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// URL is the comma-separated client URLs of all nodes.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.ports))
	for i := range c.ports {
		urls[i] = c.NodeURL(i)
	}
	return strings.Join(urls, ",")
}

// NodeURL is node i's client URL.
func (c *Cluster) NodeURL(i int) string { return fmt.Sprintf("nats://127.0.0.1:%d", c.ports[i]) }

// Open opens a store named name on url (the cluster's URL, or one
// node's) with three replicas, as a replica of tollgate would; it is
// closed when the test ends.
func (c *Cluster) Open(url, name string) *store.Store {
	c.t.Helper()
	s, err := store.Open(context.Background(), store.Options{URL: url, Replicas: 3, Timeout: 2 * time.Second, Name: name})
	if err != nil {
		c.t.Fatalf("storetest: open %s: %v", name, err)
	}
	c.t.Cleanup(s.Close)
	return s
}

// Server is node i's server, nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server { return c.servers[i] }

func (c *Cluster) options(i int) *server.Options {
	var routes []string
	for j, p := range c.routes {
		if j != i {
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
		}
	}
	return &server.Options{
		ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: c.ports[i],
		JetStream: true, StoreDir: c.dirs[i], NoSigs: true, NoLog: true,
		JetStreamMaxMemory: 64 << 20, JetStreamMaxStore: 1 << 30,
		Cluster: server.ClusterOpts{Name: c.name, Host: "127.0.0.1", Port: c.routes[i]},
		Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
	}
}

func (c *Cluster) start(i int) {
	c.t.Helper()
	ns, err := server.NewServer(c.options(i))
	if err != nil {
		c.t.Fatalf("storetest: node %d: %v", i, err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		ns.WaitForShutdown()
		c.t.Fatalf("storetest: node %d not ready", i)
	}
	c.servers[i] = ns
}

// Start starts node i again, with its store, and waits until the cluster
// answers JetStream requests.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	if c.servers[i] != nil {
		return
	}
	c.start(i)
	c.WaitReady(30 * time.Second)
}

// Stop shuts node i down.
func (c *Cluster) Stop(i int) {
	if ns := c.servers[i]; ns != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		c.servers[i] = nil
	}
}

// Cleanup shuts all nodes down.
func (c *Cluster) Cleanup() {
	for i := range c.servers {
		c.Stop(i)
	}
}

// WaitReady waits until the running nodes have a JetStream meta leader,
// all of them are current with it, and a client's account info request
// succeeds.
func (c *Cluster) WaitReady(timeout time.Duration) {
	c.t.Helper()
	var urls []string
	for i, ns := range c.servers {
		if ns != nil {
			urls = append(urls, c.NodeURL(i))
		}
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.Timeout(time.Second))
	if err != nil {
		c.t.Fatalf("storetest: cluster: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatalf("storetest: cluster: %v", err)
	}
	CheckFor(c.t, timeout, 50*time.Millisecond, func() error {
		leader := false
		for i, ns := range c.servers {
			if ns == nil {
				continue
			}
			if !ns.JetStreamIsCurrent() {
				return fmt.Errorf("node %d is not current with the meta leader", i)
			}
			leader = leader || ns.JetStreamIsLeader()
		}
		if !leader {
			return fmt.Errorf("no meta leader")
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err
	})
}
