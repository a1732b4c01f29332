package wire

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"time"
)

// Listener wraps the proxy's client listener. Its connections
//
//   - let the other goroutines run before reading the next request after a
//     response has been written;
//   - refuse a request head that ends in bare line feeds ("\n\n"), which
//     fasthttp's parser would otherwise wait on until the read timeout;
//   - linger on close after an error answer, as nginx's lingering_close
//     does, so that a client still sending its request reads the answer
//     instead of a connection reset.
//
// Go's net package reads before it waits for readiness, and right after
// a response is written the client has not yet sent its next request, so
// that read finds nothing: a system call that returns EAGAIN, then a
// park and a wake-up through the netpoller. Under load other connections
// have work ready; serving them first usually gives this client the time
// to send, and the read then finds its request (bench/RESULTS.md,
// "Connection-level measurements", has the count of empty reads before
// and after). When nothing else is
// runnable the yield returns at once, so an idle replica pays only the
// call. Nothing is skipped: every read still happens, so a pipelining
// client or bytes already buffered are served as before.
func Listener(ln net.Listener) net.Listener { return yieldListener{ln} }

type yieldListener struct{ net.Listener }

func (l yieldListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	yc := &yieldConn{Conn: c, inHead: true}
	if _, ok := c.(tlsConn); ok {
		// fasthttp's RequestCtx.IsTLS and TLSConnectionState look for
		// these methods on the connection it serves.
		return yieldTLSConn{yc}, nil
	}
	return yc, nil
}

// tlsConn is what fasthttp recognises as a TLS connection.
type tlsConn interface {
	Handshake() error
	ConnectionState() tls.ConnectionState
}

// yieldTLSConn is a yieldConn over a TLS connection: it shows the TLS
// methods through.
type yieldTLSConn struct{ *yieldConn }

// Handshake runs the TLS handshake if it has not run yet.
func (c yieldTLSConn) Handshake() error { return c.Conn.(tlsConn).Handshake() }

// ConnectionState describes the TLS connection.
func (c yieldTLSConn) ConnectionState() tls.ConnectionState {
	return c.Conn.(tlsConn).ConnectionState()
}

// asYield returns the yieldConn of a connection of Listener, or nil.
func asYield(conn net.Conn) *yieldConn {
	switch c := conn.(type) {
	case *yieldConn:
		return c
	case yieldTLSConn:
		return c.yieldConn
	}
	return nil
}

// yieldConn yields once before the first read after a write. The flags
// are atomic because a hijacked (upgraded) connection is read and written
// by two goroutines; the head scan is done by the serving goroutine only.
type yieldConn struct {
	net.Conn
	wrote  atomic.Bool
	linger atomic.Bool
	bareLF atomic.Bool
	raw    atomic.Bool // hijacked: no more HTTP heads to scan

	// The head scan: inHead while the bytes read since the last response
	// belong to a request head; p1..p3 are the last three bytes read.
	inHead     bool
	p1, p2, p3 byte
}

// Lingering close: after an error answer the connection is half-closed
// and what the client still sends is read and dropped, for at most
// lingerTime or lingerBytes, before it is closed.
const (
	lingerTime  = 3 * time.Second
	lingerBytes = 8 << 20
)

// LingerOnClose marks a client connection of Listener to linger when it
// closes; other connections are left as they are.
func LingerOnClose(conn net.Conn) {
	if c := asYield(conn); c != nil {
		c.linger.Store(true)
	}
}

// Hijacked marks a client connection of Listener as no longer carrying
// HTTP requests (an upgraded protocol runs on it): its reads are no longer
// scanned for request heads.
func Hijacked(conn net.Conn) {
	if c := asYield(conn); c != nil {
		c.raw.Store(true)
	}
}

// BareLineFeeds reports whether a client connection of Listener was
// refused for a head ending in bare line feeds.
func BareLineFeeds(conn net.Conn) bool {
	c := asYield(conn)
	return c != nil && c.bareLF.Load()
}

func (c *yieldConn) Write(b []byte) (int, error) {
	if !c.wrote.Load() {
		c.wrote.Store(true)
	}
	return c.Conn.Write(b)
}

// badHead replaces a head that ends in bare line feeds: a line fasthttp
// refuses at once, whatever it has read before it.
var badHead = []byte("\x00\r\n\r\n")

func (c *yieldConn) Read(b []byte) (int, error) {
	if c.wrote.Load() {
		c.wrote.Store(false)
		runtime.Gosched()
		c.inHead, c.p1, c.p2, c.p3 = !c.raw.Load(), 0, 0, 0
	}
	if c.bareLF.Load() {
		return 0, io.EOF
	}
	n, err := c.Conn.Read(b)
	if n > 0 && c.inHead && c.scanHead(b[:n]) && len(b) >= len(badHead) {
		c.bareLF.Store(true)
		c.linger.Store(true)
		return copy(b, badHead), nil
	}
	return n, err
}

// scanHead follows a request head across reads. It reports a head that
// ends in "\n\n" (or "\r\n\n") before any "\r\n\r\n", and stops scanning
// at the end of a well-formed head: the body is not scanned.
func (c *yieldConn) scanHead(b []byte) bool {
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			break
		}
		k := i + j
		prev := c.before(b, k, 1)
		if prev == '\n' {
			return true
		}
		if prev == '\r' && c.before(b, k, 2) == '\n' && c.before(b, k, 3) == '\r' {
			c.inHead = false
			return false
		}
		i = k + 1
	}
	c.p3, c.p2, c.p1 = c.before(b, len(b), 3), c.before(b, len(b), 2), c.before(b, len(b), 1)
	return false
}

// before returns the byte d places before index k of b, reaching back
// into the bytes of earlier reads.
func (c *yieldConn) before(b []byte, k, d int) byte {
	if i := k - d; i >= 0 {
		return b[i]
	}
	switch k - d {
	case -1:
		return c.p1
	case -2:
		return c.p2
	case -3:
		return c.p3
	}
	return 0
}

// Close lingers when an error answer asked for it: the write side is shut
// (the client sees the end of the answer), and what the client still
// sends is read and dropped until it closes, for at most lingerTime or
// lingerBytes. Closing with unread data would send a reset, and a client
// still sending its request would often lose the answer to it.
func (c *yieldConn) Close() error {
	if c.linger.Load() {
		conn := c.Conn
		if tc, ok := conn.(*tls.Conn); ok {
			// close_notify ends the answer for the client; what it still
			// sends is dropped undecrypted, below TLS.
			_ = tc.CloseWrite()
			conn = tc.NetConn()
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
			_ = tc.SetReadDeadline(time.Now().Add(lingerTime))
			_, _ = io.CopyN(io.Discard, tc, lingerBytes)
		}
	}
	return c.Conn.Close()
}
