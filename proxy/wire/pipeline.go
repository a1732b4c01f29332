package wire

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// Pipeline sends bodiless requests to one upstream HTTP/1.1-pipelined over
// a few connections (upstreams.*.pipeline). It replaces fasthttp's
// PipelineClient, which flushes its writer whenever its queue is empty:
// the handler that queues a request wakes that writer at once (Go runs a
// goroutine readied by a channel send next), so there every request costs
// a write system call and a wake-up of the upstream of its own.
//
// Here a handler writes its request into the connection's buffer itself,
// and the request goes out at once only when no earlier request is
// awaiting its answer; otherwise it waits in the buffer until the
// connection's reader has read the answers in flight, and the reader sends
// everything buffered in one write before it waits again. Requests thus
// queue up exactly while earlier ones are in flight (Nagle's algorithm at
// the level of requests): under load one write carries many requests, and
// a request on an idle connection is not delayed.
//
// Answers are read whole, up to maxBody. When a connection fails, the
// requests that got no answer are retried on a new connection (up to
// maxAttempts tries) if their method is idempotent (RFC 9110 §9.2.2), and
// fail otherwise, since the upstream may have processed them.
type Pipeline struct {
	slots   []pipeSlot
	next    atomic.Uint32
	addr    string
	dial    func(string) (net.Conn, error)
	tls     *tls.Config
	maxBody int
	read    time.Duration
	write   time.Duration
	idle    time.Duration
	calls   chan *pipeCall // free list (not a sync.Pool, which drops items at random under the race detector)
	closed  atomic.Bool
}

// maxAttempts bounds the tries of an idempotent request that got no
// answer, as fasthttp's HostClient.MaxIdemponentCallAttempts does.
const maxAttempts = 5

// maxQueued bounds the requests queued on one connection; past it new
// ones are refused rather than queued without end.
const maxQueued = 1024

// pipeCall is one request waiting for its answer.
type pipeCall struct {
	req   *fasthttp.Request
	resp  *fasthttp.Response
	done  chan error
	retry bool // set with a failure that may be retried: no answer arrived
}

// pipeSlot holds one of the Pipeline's connections; a failed connection
// is replaced by a new pipeConn on the next request.
type pipeSlot struct {
	mu sync.Mutex // protects w and every field of the wires it held
	w  *pipeConn
	// queued counts the requests sent to this slot and not yet answered,
	// read without the mutex to choose the least busy slot.
	queued atomic.Int32
	_      [40]byte
}

// pipeConn is one pipelined connection. Its slot's mutex protects its fields;
// its reader goroutine alone reads from br, without the mutex.
type pipeConn struct {
	conn    net.Conn
	bw      *bufio.Writer
	br      *bufio.Reader
	q       []*pipeCall // ring of maxQueued: written to bw or sent, not yet answered
	head, n int
	sent    int  // how many queued calls, from the head, were sent
	reading bool // the reader is reading the head's answer
	dead    bool
	readSet time.Time // when the read deadline was last set
}

// Errors of a Pipeline; ErrPipelineFull and ErrNotPipelined are the
// caller's to tell apart.
var (
	ErrPipelineFull   = errors.New("wire: too many requests queued for a pipelined upstream")
	errPipelineClosed = errors.New("wire: pipelined upstream closed")
	errConnLost       = errors.New("wire: pipelined upstream connection lost before the answer")
	ErrNotPipelined   = errors.New("wire: request without a host or with a body cannot be pipelined")
)

// NewPipeline returns a pipelining client of addr over conns connections
// (dialed with dial, wrapped in TLS when tlsConf is set); maxBody bounds
// an answer, read and write the silence of each direction while answers
// are due, idle a connection with none.
func NewPipeline(addr string, conns, maxBody int, dial func(string) (net.Conn, error), tlsConf *tls.Config,
	read, write, idle time.Duration) *Pipeline {
	if idle <= 0 {
		idle = time.Minute
	}
	p := &Pipeline{slots: make([]pipeSlot, max(conns, 1)), addr: addr, dial: dial, tls: tlsConf, maxBody: maxBody,
		read: read, write: write, idle: idle}
	p.calls = make(chan *pipeCall, maxQueued)
	return p
}

// Do sends req and reads its answer into resp. req must not have a body.
func (p *Pipeline) Do(req *fasthttp.Request, resp *fasthttp.Response) error {
	// What cannot be written must fail alone, before it is queued on a
	// shared connection: a failed write kills the connection and every
	// request queued on it.
	if len(req.Header.Host()) == 0 || req.IsBodyStream() || len(req.Body()) > 0 {
		return ErrNotPipelined
	}
	// The target goes as it is, as HostClient.DisablePathNormalizing
	// sends it on the pool.
	req.URI().DisablePathNormalizing = true
	// A client's "Connection: close" is for tollgate, not for the shared
	// upstream connection.
	req.Header.ResetConnectionClose()
	// A retry goes to the same slot: its failed connection is replaced.
	s := p.pick()
	for attempt := 0; ; attempt++ {
		var call *pipeCall
		select {
		case call = <-p.calls:
		default:
			call = &pipeCall{done: make(chan error, 1)}
		}
		call.req, call.resp, call.retry = req, resp, false
		s.queued.Add(1)
		err := p.send(s, call)
		if err == nil {
			err = <-call.done
		}
		s.queued.Add(-1)
		retry := call.retry
		call.req, call.resp = nil, nil
		select {
		case p.calls <- call:
		default:
		}
		if err == nil || !retry || attempt == maxAttempts-1 || !idempotent(req.Header.Method()) {
			return err
		}
		resp.Reset()
	}
}

// pick returns the slot with the fewest requests awaiting answers, so
// that a connection held up by a slow answer gets no more requests queued
// behind it while others are free (head-of-line blocking then delays only
// those already queued). Ties go round-robin.
func (p *Pipeline) pick() *pipeSlot {
	n := uint32(len(p.slots))
	i := p.next.Add(1) % n
	best := &p.slots[i]
	bq := best.queued.Load()
	for k := uint32(1); k < n && bq > 0; k++ {
		s := &p.slots[(i+k)%n]
		if q := s.queued.Load(); q < bq {
			best, bq = s, q
		}
	}
	return best
}

func idempotent(m []byte) bool {
	switch string(m) {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// send writes call's request into the connection's buffer and queues the
// call. The request is sent at once when nothing before it awaits an
// answer; otherwise the reader sends it with the others queued meanwhile.
// When send returns nil, the answer comes on call.done.
func (p *Pipeline) send(s *pipeSlot, call *pipeCall) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.closed.Load() {
		return errPipelineClosed
	}
	w := s.w
	if w == nil {
		var err error
		if w, err = p.connect(s); err != nil {
			return err
		}
	}
	if w.n == len(w.q) {
		return ErrPipelineFull
	}
	if err := call.req.Write(w.bw); err != nil {
		// Part of it may have been sent: the connection is unusable.
		p.kill(s, w)
		call.retry = true
		return errConnLost
	}
	w.q[(w.head+w.n)%len(w.q)] = call
	w.n++
	if w.n == 1 {
		// Nothing in flight: the answer is due within the read timeout
		// (the reader was waiting under the idle timeout); send it now.
		w.armRead(p.read)
		_ = p.flush(s, w) // on failure kill answered the call
	}
	return nil
}

// armRead sets w's read deadline d from now. s.mu is held.
func (w *pipeConn) armRead(d time.Duration) {
	if d <= 0 {
		return
	}
	w.readSet = time.Now()
	_ = w.conn.SetReadDeadline(w.readSet.Add(d))
}

// connect dials a new pipeConn for s and starts its reader; s.mu is held.
func (p *Pipeline) connect(s *pipeSlot) (*pipeConn, error) {
	conn, err := p.dial(p.addr)
	if err != nil {
		return nil, err
	}
	if p.tls != nil {
		conn = tls.Client(conn, p.tls)
	}
	// Writes renew their deadline lazily (they all happen under s.mu);
	// the pipeConn sets read deadlines itself: the read timeout while answers
	// are due, the idle timeout while none is.
	ic := &idleConn{Conn: conn, write: p.write}
	w := &pipeConn{conn: ic, bw: bufio.NewWriterSize(ic, 32<<10), br: bufio.NewReaderSize(ic, 16<<10),
		q: make([]*pipeCall, maxQueued)}
	s.w = w
	go p.reader(s, w)
	return w, nil
}

// flush sends what w has buffered: every queued call is then sent. On
// failure it kills w, which answers the calls. s.mu is held.
func (p *Pipeline) flush(s *pipeSlot, w *pipeConn) error {
	if err := w.bw.Flush(); err != nil {
		p.kill(s, w)
		return err
	}
	w.sent = w.n
	return nil
}

// answer pops the head call and answers it. s.mu is held.
func (w *pipeConn) answer(err error, retry bool) {
	call := w.q[w.head]
	w.q[w.head] = nil
	w.head = (w.head + 1) % len(w.q)
	w.n--
	if w.sent > 0 {
		w.sent--
	}
	call.retry = retry
	call.done <- err
}

// kill closes w and answers its queued calls but the one whose answer the
// reader is reading (the reader answers that one): they got no answer, so
// they may be retried. s.mu is held.
func (p *Pipeline) kill(s *pipeSlot, w *pipeConn) {
	if w.dead {
		return
	}
	w.dead = true
	if s.w == w {
		s.w = nil
	}
	_ = w.conn.Close()
	keep := 0
	if w.reading {
		keep = 1
	}
	for w.n > keep {
		// Answer from the tail so the head stays in place for the reader.
		i := (w.head + w.n - 1) % len(w.q)
		call := w.q[i]
		w.q[i] = nil
		w.n--
		call.retry = true
		call.done <- errConnLost
	}
	w.sent = min(w.sent, w.n)
}

// reader reads w's answers in order until w fails or is closed. While no
// answer is due it waits in a read as well, under the idle timeout, so it
// notices at once when the upstream closes the connection (as upstreams
// do with idle keep-alive connections) and the next request gets a new
// one instead of a failure.
func (p *Pipeline) reader(s *pipeSlot, w *pipeConn) {
	s.mu.Lock()
	for {
		for w.n == 0 && !w.dead {
			if p.closed.Load() {
				p.kill(s, w)
				break
			}
			s.mu.Unlock()
			_, err := w.br.Peek(1)
			s.mu.Lock()
			if err != nil && w.n == 0 && !w.dead {
				// Closed by the upstream, idle for the idle timeout, or
				// broken: a new connection serves the next request.
				p.kill(s, w)
			}
			// With a request queued meanwhile the read below meets the
			// error again (bufio hands it out once) and answers it.
		}
		if w.dead {
			s.mu.Unlock()
			return
		}
		if w.sent == 0 {
			// The answers before the head are read: send it, with every
			// request queued since.
			if p.flush(s, w) != nil {
				s.mu.Unlock()
				return
			}
		}
		call := w.q[w.head]
		w.reading = true
		s.mu.Unlock()

		resp := call.resp
		if call.req.Header.IsHead() {
			resp.SkipBody = true
		}
		err := resp.ReadLimitBody(w.br, p.maxBody)

		s.mu.Lock()
		w.reading = false
		switch {
		case err == nil:
			closing := resp.ConnectionClose()
			w.answer(nil, false)
			switch {
			case closing:
				p.kill(s, w)
			case w.n == 0:
				w.armRead(p.idle)
			case p.read > 0 && time.Since(w.readSet) > p.read/8:
				// The next answer gets the read timeout from now (renewed
				// lazily, like idleConn).
				w.armRead(p.read)
			}
		case w.dead:
			// Killed while reading (a failed write or Close): the rest
			// were answered.
			w.answer(errConnLost, true)
		case errors.Is(err, fasthttp.ErrBodyTooLarge):
			// The connection is out of step with its answers.
			w.answer(err, false)
			p.kill(s, w)
		default:
			w.answer(err, noAnswer(err))
			p.kill(s, w)
		}
	}
}

// noAnswer says a read error means no byte of the answer arrived: the
// upstream closed or reset the connection (for instance an idle one it
// had timed out) before answering.
func noAnswer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// Close makes the Pipeline refuse new requests and closes its idle
// connections; busy ones close once their answers are read.
func (p *Pipeline) Close() {
	p.closed.Store(true)
	for i := range p.slots {
		s := &p.slots[i]
		s.mu.Lock()
		if w := s.w; w != nil && w.n == 0 {
			p.kill(s, w)
		}
		s.mu.Unlock()
	}
}
