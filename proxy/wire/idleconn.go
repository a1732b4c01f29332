package wire

import (
	"bufio"
	"net"
	"syscall"
	"time"
)

// idleConn keeps a deadline ahead of every read and write, so its
// timeouts bound silence, not the length of a transfer. Setting a deadline
// costs a timer update: it is renewed only once an eighth of the timeout
// has passed, so the effective bound lies between 7/8 and all of it.
type idleConn struct {
	net.Conn
	read, write       time.Duration
	readSet, writeSet time.Time

	// For flushAndAwait; raw is nil when the connection is not a socket.
	raw      syscall.RawConn
	awaitFn  func(uintptr) bool // c.await, made once
	pending  *bufio.Writer
	flushed  bool
	flushErr error
	writes   int       // calls of Write, to tell whether a request went out in parts
	lastRead time.Time // when the last Read began
}

// NewIdleConn wraps an upstream connection: read and write bound the
// silence of each direction (0: no bound).
func NewIdleConn(c net.Conn, read, write time.Duration) *idleConn {
	ic := &idleConn{Conn: c, read: read, write: write}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			ic.raw = rc
			ic.awaitFn = ic.await
		}
	}
	return ic
}

// flushAndAwait sends the request held in bw (all of it: nothing of it
// was written before) and waits until the answer starts to arrive,
// without the read that Go's net package would make first and that finds
// nothing yet (EAGAIN) on every round trip: one system call per request
// less. Go's poller is edge-triggered and forgets readiness when a wait
// begins, so the wait is armed before the request is written, inside
// RawConn.Read: no byte of the answer can come before that. It is used
// only on a connection read from within the last second: after a longer
// idle time the upstream may have closed it, and a normal read notices at
// once.
func (c *idleConn) flushAndAwait(bw *bufio.Writer) (flushErr error) {
	now := time.Now()
	if c.raw == nil || now.Sub(c.lastRead) > time.Second {
		return bw.Flush()
	}
	c.renewRead(now)
	c.pending, c.flushed, c.flushErr = bw, false, nil
	_ = c.raw.Read(c.awaitFn) // a failed wait (deadline) is met again by the read that follows
	flushErr, c.pending, c.flushErr = c.flushErr, nil, nil
	return flushErr
}

func (c *idleConn) await(uintptr) bool {
	if !c.flushed {
		c.flushed = true
		c.flushErr = c.pending.Flush()
		return c.flushErr != nil
	}
	return true
}

func (c *idleConn) Read(b []byte) (int, error) {
	if c.read > 0 {
		now := time.Now()
		c.renewRead(now)
		c.lastRead = now // when this read began: never later than the truth
	}
	return c.Conn.Read(b)
}

// renewRead moves the read deadline to now+read once an eighth of the
// timeout has passed since it was last set.
func (c *idleConn) renewRead(now time.Time) {
	if c.read > 0 && now.Sub(c.readSet) > c.read/8 {
		c.readSet = now
		_ = c.Conn.SetReadDeadline(now.Add(c.read))
	}
}

func (c *idleConn) Write(b []byte) (int, error) {
	c.writes++
	if c.write > 0 {
		if now := time.Now(); now.Sub(c.writeSet) > c.write/8 {
			c.writeSet = now
			_ = c.Conn.SetWriteDeadline(now.Add(c.write))
		}
	}
	return c.Conn.Write(b)
}
