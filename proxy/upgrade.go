package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"

	"github.com/tollgate/tollgate/proxy/wire"
	"github.com/valyala/fasthttp"
)

// upgrade proxies a protocol upgrade (RFC 9110 §7.8; WebSocket, RFC 6455)
// on a route that allows it. Authentication and quota have been applied to
// the handshake. The handshake goes to the upstream on a connection of its
// own; on 101 Switching Protocols both connections are spliced until either
// side closes, and any other answer is relayed as an ordinary response.
func (p *Proxy) upgrade(ctx *fasthttp.RequestCtx, t *table, rs *reqState) {
	req := &ctx.Request
	up := rs.route.upstream
	proto := rs.upgradeBuf[:rs.upgradeN]
	p.prepare(ctx, t, rs)
	// Upgrade and Connection are hop-by-hop: set them again for this hop,
	// as httputil's ReverseProxy does for upgrades.
	req.Header.SetCanonical(hConnection, hUpgrade)
	req.Header.SetCanonical(hUpgrade, proto)

	conn, err := fasthttp.DialTimeout(up.addr, up.connect)
	if err != nil {
		p.upstreamFailed(ctx, rs, err)
		return
	}
	if up.https {
		tc := tls.Client(conn, up.tls)
		_ = tc.SetDeadline(time.Now().Add(up.connect))
		if err := tc.Handshake(); err != nil {
			conn.Close()
			p.upstreamFailed(ctx, rs, err)
			return
		}
		conn = tc
	}
	if up.readTimeout > 0 {
		_ = conn.SetDeadline(time.Now().Add(up.readTimeout))
	}
	bw := bufio.NewWriter(conn)
	if err := req.Header.Write(bw); err != nil || bw.Flush() != nil {
		conn.Close()
		p.upstreamFailed(ctx, rs, err)
		return
	}
	br := bufio.NewReader(conn)
	resp := &ctx.Response
	if err := resp.Header.Read(br); err != nil {
		conn.Close()
		p.upstreamFailed(ctx, rs, err)
		return
	}
	if resp.StatusCode() != fasthttp.StatusSwitchingProtocols {
		// Refused: relay the answer (bounded) and close the connection.
		defer conn.Close()
		if err := resp.ReadBody(br, 1<<20); err != nil {
			p.upstreamFailed(ctx, rs, err)
			return
		}
		removeHopHeaders(&resp.Header)
		if resp.StatusCode() >= 400 && rs.route.normalize {
			p.normalize(ctx, rs)
		}
		return
	}
	_ = conn.SetDeadline(time.Time{})
	// We write the 101 ourselves: fasthttp would add a Content-Length.
	head := append([]byte("HTTP/1.1 101 Switching Protocols\r\n"), upgradeHeaders(resp, t, rs)...)
	wire.Hijacked(ctx.Conn())
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		defer conn.Close()
		if _, err := c.Write(head); err != nil {
			return
		}
		splice(c, conn, br)
	})
	rs.code = ""
	resp.SetStatusCode(fasthttp.StatusSwitchingProtocols)
}

// upgradeHeaders renders the upstream's 101 headers with ours added.
func upgradeHeaders(resp *fasthttp.Response, t *table, rs *reqState) []byte {
	var h fasthttp.ResponseHeader
	for k, v := range resp.Header.All() {
		h.AddBytesKV(k, v)
	}
	h.SetCanonical(t.hReqID, rs.reqID[:rs.reqIDn])
	if rs.hasDec {
		setLimitHeaders(&h, &rs.dec)
	}
	var out []byte
	for k, v := range h.All() {
		out = append(append(append(append(out, k...), ": "...), v...), "\r\n"...)
	}
	return append(out, "\r\n"...)
}

// splice copies both ways until either side is done, then closes both.
func splice(client net.Conn, upstream net.Conn, upr io.Reader) {
	var once sync.Once
	done := func() { once.Do(func() { client.Close(); upstream.Close() }) }
	go func() {
		_, _ = io.Copy(upstream, client)
		done()
	}()
	_, _ = io.Copy(client, upr)
	done()
}
