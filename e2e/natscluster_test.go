package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsServerBinary builds nats-server from the module tollgate depends on
// (the same version it embeds), once, beside the tollgate binary.
var natsServer struct {
	once sync.Once
	path string
	err  error
}

func natsServerBinary(t *testing.T) string {
	t.Helper()
	natsServer.once.Do(func() {
		natsServer.path = filepath.Join(filepath.Dir(binary), "nats-server")
		build := exec.Command("go", "build", "-o", natsServer.path, "github.com/nats-io/nats-server/v2")
		out, err := build.CombinedOutput()
		if err != nil {
			natsServer.err = fmt.Errorf("building nats-server: %v\n%s", err, out)
		}
	})
	if natsServer.err != nil {
		t.Fatal(natsServer.err)
	}
	return natsServer.path
}

// natsNode is one nats-server process of a cluster: it can be killed with
// -9 or stopped with SIGTERM, and started again on the same ports and
// store, as an operator's node would be.
type natsNode struct {
	t      *testing.T
	name   string
	conf   string
	port   int
	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
	out    bytes.Buffer
}

// natsCluster is three (or more) nats-server processes with JetStream,
// each with its own configuration file, as README "Running at scale"
// describes them.
type natsCluster struct {
	t     *testing.T
	nodes []*natsNode
}

func freePort(t *testing.T) int {
	t.Helper()
	_, p, _ := net.SplitHostPort(freeAddr(t))
	var n int
	fmt.Sscan(p, &n)
	return n
}

func startNATSCluster(t *testing.T, n int) *natsCluster {
	t.Helper()
	bin := natsServerBinary(t)
	c := &natsCluster{t: t}
	routes := make([]int, n)
	for i := range routes {
		routes[i] = freePort(t)
	}
	for i := 0; i < n; i++ {
		dir := t.TempDir()
		var peers []string
		for j, p := range routes {
			if j != i {
				peers = append(peers, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
			}
		}
		nd := &natsNode{t: t, name: fmt.Sprintf("n%d", i), port: freePort(t), conf: filepath.Join(dir, "nats.conf")}
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
jetstream { store_dir: %q, sync_interval: always, max_memory_store: 64MB, max_file_store: 1GB }
cluster { name: tollgate-e2e, listen: 127.0.0.1:%d, routes: [%s] }
`, nd.name, nd.port, filepath.Join(dir, "js"), routes[i], strings.Join(peers, ", "))
		if err := os.WriteFile(nd.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		nd.start(bin)
		c.nodes = append(c.nodes, nd)
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			nd.stop(syscall.SIGKILL)
		}
	})
	c.waitCurrent(60 * time.Second)
	return c
}

func (nd *natsNode) start(bin string) {
	nd.t.Helper()
	cmd := exec.Command(bin, "-c", nd.conf)
	nd.mu.Lock()
	nd.out.Reset()
	nd.mu.Unlock()
	cmd.Stdout, cmd.Stderr = &lockedWriter{&nd.mu, &nd.out}, &lockedWriter{&nd.mu, &nd.out}
	if err := cmd.Start(); err != nil {
		nd.t.Fatal(err)
	}
	nd.cmd, nd.exited = cmd, make(chan struct{})
	go func(ch chan struct{}) { _ = cmd.Wait(); close(ch) }(nd.exited)
	checkFor(nd.t, 20*time.Second, 20*time.Millisecond, func() error {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", nd.port), time.Second)
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

func (nd *natsNode) stop(sig syscall.Signal) {
	if nd.cmd == nil {
		return
	}
	_ = nd.cmd.Process.Signal(sig)
	select {
	case <-nd.exited:
	case <-time.After(30 * time.Second):
		nd.t.Errorf("nats node %s did not stop on %v", nd.name, sig)
		_ = nd.cmd.Process.Kill()
		<-nd.exited
	}
	nd.cmd = nil
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// URL lists every node, for nats.url.
func (c *natsCluster) URL() string {
	var urls []string
	for _, nd := range c.nodes {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", nd.port))
	}
	return strings.Join(urls, ",")
}

func (c *natsCluster) node(name string) *natsNode {
	for _, nd := range c.nodes {
		if nd.name == name {
			return nd
		}
	}
	c.t.Fatalf("no node %q", name)
	return nil
}

// restart stops node with sig, waits down, starts it again and waits
// until every stream has a leader and all its replicas are current.
func (c *natsCluster) restart(nd *natsNode, sig syscall.Signal, down time.Duration) {
	c.t.Helper()
	nd.stop(sig)
	time.Sleep(down) // the node stays down: the fault, not a synchronization
	nd.start(natsServerBinary(c.t))
	c.waitCurrent(60 * time.Second)
}

// client connects a plain NATS client to the running nodes.
func (c *natsCluster) client() (*nats.Conn, jetstream.JetStream) {
	c.t.Helper()
	nc, err := nats.Connect(c.URL(), nats.Timeout(time.Second), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		c.t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	return nc, js
}

// waitCurrent waits until JetStream answers and every stream has a leader
// whose replicas are all current (so that the next fault cannot take the
// quorum of a stream that is still catching up).
func (c *natsCluster) waitCurrent(timeout time.Duration) {
	c.t.Helper()
	nc, js := c.client()
	defer nc.Close()
	checkFor(c.t, timeout, 100*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := js.AccountInfo(ctx); err != nil {
			return err
		}
		names := js.StreamNames(ctx)
		var all []string
		for n := range names.Name() {
			all = append(all, n)
		}
		if err := names.Err(); err != nil {
			return err
		}
		for _, n := range all {
			s, err := js.Stream(ctx, n)
			if err != nil {
				return fmt.Errorf("stream %s: %w", n, err)
			}
			ci := s.CachedInfo().Cluster
			if ci == nil || ci.Leader == "" {
				return fmt.Errorf("stream %s has no leader", n)
			}
			for _, r := range ci.Replicas {
				if !r.Current || r.Offline {
					return fmt.Errorf("stream %s: replica %s is not current", n, r.Name)
				}
			}
		}
		return nil
	})
}

// leaderOf is the name of the node leading stream.
func (c *natsCluster) leaderOf(stream string) string {
	c.t.Helper()
	nc, js := c.client()
	defer nc.Close()
	var leader string
	checkFor(c.t, 20*time.Second, 100*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		if ci := s.CachedInfo().Cluster; ci != nil && ci.Leader != "" {
			leader = ci.Leader
			return nil
		}
		return fmt.Errorf("stream %s has no leader", stream)
	})
	return leader
}

// consumers counts the consumers of every stream.
func (c *natsCluster) consumers() (total int, per map[string]int) {
	c.t.Helper()
	nc, js := c.client()
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	per = map[string]int{}
	for info := range js.ListStreams(ctx).Info() {
		per[info.Config.Name] = info.State.Consumers
		total += info.State.Consumers
	}
	return total, per
}
