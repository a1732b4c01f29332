package wire

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// transport is the upstream round trip. Small answers (a known length up
// to smallBody) are read whole, so the server writes head and body in one
// write and nothing is allocated; larger, chunked or close-delimited ones
// are streamed to the client through a pooled reader that hands the
// connection back to the pool once the body is read. fasthttp's own
// StreamResponseBody streams every answer, which costs a few allocations
// and an extra write per response.
//
// fasthttp's pooled connection type is unexported; the transport is
// generic over it so it can keep one without naming it.
type transport[C pooledConn] struct {
	acquire        func(time.Duration, bool) (C, error)
	release, close func(C)
	pool           sync.Pool // of *upstreamBody[C]
}

type pooledConn interface{ Conn() net.Conn }

const smallBody = 64 << 10

// NewTransport returns a transport over hc's connection pool, e.g.
// NewTransport(hc.AcquireConn, hc.ReleaseConn, hc.CloseConn).
func NewTransport[C pooledConn](acquire func(time.Duration, bool) (C, error), release, close func(C)) *transport[C] {
	t := &transport[C]{acquire: acquire, release: release, close: close}
	t.pool.New = func() any { return new(upstreamBody[C]) }
	return t
}

// RoundTrip implements fasthttp.RoundTripper.
func (t *transport[C]) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (retry bool, err error) {
	cc, err := t.acquire(0, req.ConnectionClose())
	if err != nil {
		return false, err
	}
	// A streamed body cannot be sent twice: no retry once it was tried.
	replayable := !req.IsBodyStream()
	conn := cc.Conn()
	bw := hc.AcquireWriter(conn)
	ic, _ := conn.(*idleConn)
	writes := 0
	if ic != nil {
		writes = ic.writes
	}
	err = req.Write(bw)
	if err == nil {
		if ic != nil && ic.writes == writes {
			// The whole request is still in bw: send it and wait for
			// the answer without a read that would find nothing yet.
			err = ic.flushAndAwait(bw)
		} else {
			err = bw.Flush()
		}
	}
	hc.ReleaseWriter(bw)
	if err != nil {
		t.close(cc)
		// A pooled connection the upstream closed meanwhile fails here:
		// fasthttp retries idempotent requests.
		return replayable, err
	}
	br := hc.AcquireReader(conn)
	if err = readHead(br, &resp.Header); err != nil {
		hc.ReleaseReader(br)
		t.close(cc)
		return errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed), err
	}
	closeConn := req.ConnectionClose() || resp.ConnectionClose()
	status := resp.StatusCode()
	noBody := req.Header.IsHead() || status < 200 || status == 204 || status == 304
	cl := resp.Header.ContentLength()
	if noBody || (cl >= 0 && cl <= smallBody) {
		if !noBody {
			err = resp.ReadBody(br, smallBody)
		}
		hc.ReleaseReader(br)
		if err != nil || closeConn {
			t.close(cc)
		} else {
			t.release(cc)
		}
		return false, err
	}
	s := t.pool.Get().(*upstreamBody[C])
	s.t, s.hc, s.cc, s.br, s.closeConn, s.done = t, hc, cc, br, closeConn, false
	switch {
	case cl >= 0:
		s.lr.R, s.lr.N = br, int64(cl)
		s.r = &s.lr
	case cl == -1:
		s.r = httputil.NewChunkedReader(br)
	default: // -2: the body ends when the connection does
		s.r, s.closeConn = br, true
	}
	if cl < 0 {
		cl = -1 // stream it on chunked
	}
	resp.SetBodyStream(s, cl)
	return false, nil
}

// readHead reads a response head, skipping interim 1xx answers other
// than 101 (RFC 9110 §15.2).
func readHead(br *bufio.Reader, h *fasthttp.ResponseHeader) error {
	for i := 0; ; i++ {
		if err := h.Read(br); err != nil {
			return err
		}
		if s := h.StatusCode(); s < 100 || s > 199 || s == 101 || i == 4 {
			return nil
		}
	}
}

// upstreamBody streams a large upstream body and returns the connection
// to its pool when the body was read to the end.
type upstreamBody[C pooledConn] struct {
	r         io.Reader
	lr        io.LimitedReader
	t         *transport[C]
	hc        *fasthttp.HostClient
	cc        C
	br        *bufio.Reader
	closeConn bool
	done      bool
	onClose   func(complete bool)
}

// StreamedBody is a response body the transport streams to the client: the
// access log waits for its end to log the request.
type StreamedBody interface {
	// NotifyClose has f called once the body is done with, with whether
	// it was read whole (fasthttp stops reading it when a write to the
	// client fails).
	NotifyClose(f func(complete bool))
}

// NotifyClose implements StreamedBody.
func (s *upstreamBody[C]) NotifyClose(f func(bool)) { s.onClose = f }

func (s *upstreamBody[C]) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	if err == io.EOF {
		s.done = true
	}
	return n, err
}

// Close hands the connection back (or closes it when the body was not
// read to the end) and returns s to its pool.
func (s *upstreamBody[C]) Close() error {
	t := s.t
	if f := s.onClose; f != nil {
		// fasthttp stops reading when a write to the client fails (its
		// write timeout included): the body was then not read to the end.
		defer f(s.done)
	}
	s.hc.ReleaseReader(s.br)
	if s.done && !s.closeConn {
		t.release(s.cc)
	} else {
		t.close(s.cc)
	}
	*s = upstreamBody[C]{}
	t.pool.Put(s)
	return nil
}
