package store_test

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// blackhole forwards TCP between a client and target until Silence is
// called; then it keeps every connection open and forwards nothing, as a
// node that lost power or a network partition does (no FIN, no RST).
type blackhole struct {
	ln     net.Listener
	target string
	silent atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newBlackhole(t *testing.T, target string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, target: target}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if b.silent.Load() {
				b.keep(c) // accepted, never answered
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			b.keep(c, u)
			go b.pipe(u, c)
			go b.pipe(c, u)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
	})
	return b
}

func (b *blackhole) keep(cs ...net.Conn) {
	b.mu.Lock()
	b.conns = append(b.conns, cs...)
	b.mu.Unlock()
}

func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if b.silent.Load() {
			continue // swallowed
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// TestSilentNodeNoticed: when the node a replica is connected to goes
// silent (power loss, partition: no FIN or RST reaches the replica), the
// replica notices within a few operation timeouts through its pings and
// reconnects to another node, instead of after nats.go's default two
// minutes (or the 10-15 s of the 5 s pings used before).
func TestSilentNodeNoticed(t *testing.T) {
	srv := storetest.StartServer(t)
	bh := newBlackhole(t, srv.URL()[len("nats://"):])
	const timeout = time.Second
	s, err := store.Open(context.Background(), store.Options{URL: "nats://" + bh.ln.Addr().String(), Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Connected() {
		t.Fatal("not connected")
	}
	bh.silent.Store(true)
	start := time.Now()
	storetest.CheckFor(t, 10*timeout, 20*time.Millisecond, func() error {
		if s.Connected() {
			return io.ErrNoProgress
		}
		return nil
	})
	noticed := time.Since(start)
	t.Logf("a silent node noticed after %v (nats.timeout %v)", noticed.Round(10*time.Millisecond), timeout)
	// Two pings unanswered, one ping interval (nats.timeout) apart, after
	// at most one interval: 2-3 timeouts, and some slack for a busy
	// machine's timers.
	if noticed > 6*timeout {
		t.Errorf("noticed after %v, want within 6 x nats.timeout", noticed)
	}
}
