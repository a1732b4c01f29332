package proxy

import (
	"errors"
	"io"

	"github.com/tollgate/tollgate/internal/normalize"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/valyala/fasthttp"
)

// Headers that describe an upstream body and are wrong once it is
// rewritten.
var bodyHeaders = [][]byte{
	[]byte("Content-Encoding"), []byte("Content-Length"), []byte("ETag"), []byte("Last-Modified"),
	[]byte("Content-MD5"), []byte("Digest"), []byte("Content-Range"), []byte("Content-Language"),
}

// normalize rewrites an upstream error response (status ≥ 400) into the
// problems shape, keeping its messages. At most the route's errors.max_body
// bytes of the body are read; the rest is discarded with the connection.
func (p *Proxy) normalize(ctx *fasthttp.RequestCtx, rs *reqState) {
	resp := &ctx.Response
	status := resp.StatusCode()
	limit := rs.route.errMaxBody
	var body []byte
	truncated := false
	if s := resp.BodyStream(); s != nil {
		buf := make([]byte, limit+1)
		n, err := io.ReadFull(s, buf)
		switch {
		case err == nil: // more than limit bytes
			truncated = true
			n = limit
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		default:
			// The upstream broke off: use what arrived.
			truncated = true
		}
		body = buf[:n]
		if truncated {
			if rc, ok := s.(fasthttp.ReadCloserWithError); ok {
				_ = rc.CloseWithError(errors.New("proxy: error body beyond the normalization bound"))
			}
		}
		_ = resp.CloseBodyStream()
	} else {
		body = resp.Body()
		if len(body) > limit {
			body, truncated = body[:limit], true
		}
		body = append([]byte(nil), body...)
	}
	res := normalize.Body(status, string(resp.Header.ContentType()), string(resp.Header.ContentEncoding()),
		body, truncated, normalize.Options{MaxBody: limit})
	if res.Already && !wantsRFC9457(ctx, rs) {
		resp.SetBodyRaw(body)
		return
	}
	for _, h := range bodyHeaders {
		resp.Header.DelBytes(h)
	}
	resp.ResetBody()
	if wantsRFC9457(ctx, rs) {
		resp.Header.SetContentTypeBytes(ctProblemJSON)
		resp.SetBodyRaw(normalize.AppendRFC9457(nil, status, res.Problems))
	} else {
		resp.Header.SetContentTypeBytes(ctJSON)
		resp.SetBodyRaw(problems.Append(nil, status, res.Problems))
	}
	rs.code = problems.CodeUpstreamError
}
