package proxy

import (
	"github.com/tollgate/tollgate/internal/access"
	"io"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/tollgate/tollgate/internal/problems"
	"github.com/valyala/fasthttp"
)

// AccessLog writes one JSON line per request in the same shape as the zap
// logs ({"level","ts","logger","msg",...}). Lines are encoded without
// allocation into one of several buffers, picked at random so that no
// lock is shared by all requests, and written out when a buffer fills or
// by Run every FlushInterval. A line never contains a secret: the key id is
// logged, never the key.
type AccessLog struct {
	w      io.Writer
	shards []logShard
	// FlushInterval is how often Run writes buffered lines. Default 200ms.
	FlushInterval time.Duration
}

type logShard struct {
	mu  sync.Mutex // protects buf and writes to w from this shard
	buf []byte
	_   [32]byte
}

const logBufSize = 32 << 10

// NewAccessLog returns an access log writing to w.
func NewAccessLog(w io.Writer) *AccessLog {
	n := runtime.GOMAXPROCS(0) * 2
	l := &AccessLog{w: w, shards: make([]logShard, n), FlushInterval: 200 * time.Millisecond}
	for i := range l.shards {
		l.shards[i].buf = make([]byte, 0, logBufSize+1024)
	}
	return l
}

func (l *AccessLog) log(ctx *fasthttp.RequestCtx, rs *reqState, status int) {
	sh := &l.shards[rand.Uint32()%uint32(len(l.shards))]
	now := time.Now()
	sh.mu.Lock()
	b := sh.buf
	b = append(b, `{"level":"info","ts":"`...)
	b = now.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","logger":"access","msg":"request"`...)
	if !rs.unparsed {
		// The canonical path (the client's, before any prefix rewrite);
		// the raw target when the request was refused before it had one.
		path := rs.path
		switch {
		case rs.pathN > 0:
			path = rs.pathBuf[:rs.pathN]
		case path == nil:
			path = ctx.Request.Header.RequestURI()
		}
		if len(path) > 512 {
			path = path[:512]
		}
		b = append(b, `,"method":`...)
		b = problems.AppendString(b, b2s(ctx.Request.Header.Method()))
		b = append(b, `,"path":`...)
		b = problems.AppendString(b, b2s(path))
	}
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	if rs.route != nil {
		b = append(b, `,"route":`...)
		b = problems.AppendString(b, rs.route.name)
	}
	if rs.id.Tenant != "" {
		b = append(b, `,"tenant":`...)
		b = problems.AppendString(b, rs.id.Tenant)
		b = append(b, `,"key_id":`...)
		b = problems.AppendString(b, rs.id.Credential)
	}
	if rs.code != "" {
		b = append(b, `,"code":`...)
		b = problems.AppendString(b, string(rs.code))
	}
	if rs.incomplete {
		b = append(b, `,"complete":false`...)
	}
	if rs.refunded {
		b = append(b, `,"refunded":true`...)
	}
	if rs.dec.Shadow != access.ReasonNone {
		b = append(b, `,"shadow":"`...)
		b = append(b, rs.dec.Shadow.String()...)
		b = append(b, '"')
	}
	if rs.dec.Overage > 0 && rs.dec.Allowed && rs.dec.Remaining == 0 {
		b = append(b, `,"overage":true`...)
	}
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, float64(now.Sub(rs.start).Microseconds())/1000, 'f', 3, 64)
	b = append(b, `,"remote":"`...)
	b = remoteAddr(ctx).AppendTo(b)
	b = append(b, `","request_id":`...)
	b = problems.AppendString(b, b2s(rs.reqID[:rs.reqIDn]))
	b = append(b, "}\n"...)
	if len(b) >= logBufSize {
		_, _ = l.w.Write(b)
		b = b[:0]
	}
	sh.buf = b
	sh.mu.Unlock()
}

// Flush writes every buffered line.
func (l *AccessLog) Flush() {
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		if len(sh.buf) > 0 {
			_, _ = l.w.Write(sh.buf)
			sh.buf = sh.buf[:0]
		}
		sh.mu.Unlock()
	}
}

// Run flushes every FlushInterval until done is closed, then once more.
func (l *AccessLog) Run(done <-chan struct{}) {
	t := time.NewTicker(l.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			l.Flush()
			return
		case <-t.C:
			l.Flush()
		}
	}
}
