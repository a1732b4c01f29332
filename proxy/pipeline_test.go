package proxy_test

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/proxy"
	"github.com/valyala/fasthttp"
)

func TestPipelinedUpstream(t *testing.T) {
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/huge" {
			ctx.SetBody(make([]byte, 2<<20))
			return
		}
		ctx.SetBodyString("echo " + string(ctx.RequestURI()))
	})
	h := start(t, func(c *config.Config) {
		pipedRoute(c, config.Upstream{URL: "http://" + be.addr, Pipeline: &config.Pipeline{Conns: 2}})
	}, proxy.Options{})
	// Many concurrent requests over two pipelined connections: each
	// answer belongs to its own request.
	var wg sync.WaitGroup
	hc := &fasthttp.HostClient{Addr: h.addr, MaxConns: 32}
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			for i := 0; i < 50; i++ {
				uri := fmt.Sprintf("/p/w%d/r%d", w, i)
				req.SetRequestURI("http://" + h.addr + uri)
				req.Header.Set("X-API-Key", goodKey)
				if err := hc.Do(req, resp); err != nil || resp.StatusCode() != 200 {
					t.Errorf("%s: %v %d", uri, err, resp.StatusCode())
					return
				}
				if want := "echo " + strings.TrimPrefix(uri, "/p"); string(resp.Body()) != want {
					t.Errorf("%s answered %q, want %q", uri, resp.Body(), want)
					return
				}
			}
		}()
	}
	wg.Wait()
	// An answer over pipeline.max_body (1 MiB by default) is refused.
	resp := h.do(t, "GET", "/p/huge", map[string]string{"X-API-Key": goodKey})
	checkProblem(t, resp, 502, problems.CodeUpstreamError)
	// A request with a body goes through the pool and is not limited so.
	r := h.raw(t, "POST /p/body HTTP/1.1\r\nHost: x\r\nX-API-Key: "+goodKey+"\r\nContent-Length: 3\r\n\r\nabc")
	if r.StatusCode() != 200 || string(r.Body()) != "echo /body" {
		t.Errorf("POST through a pipelined upstream: %d %q", r.StatusCode(), r.Body())
	}
}

// A pipelined upstream that stops answering fails with 504 after its
// read_timeout (the deadline is renewed lazily, not per request), and the
// requests queued behind it are not left waiting.
func TestPipelinedUpstreamTimeout(t *testing.T) {
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			time.Sleep(time.Second) // an upstream that stops answering: what is tested
		}
		ctx.SetBodyString("ok")
	})
	h := start(t, func(c *config.Config) {
		pipedRoute(c, config.Upstream{URL: "http://" + be.addr, ReadTimeout: config.Duration(200 * time.Millisecond),
			Pipeline: &config.Pipeline{Conns: 1}})
	}, proxy.Options{})
	if resp := h.do(t, "GET", "/p/fast", map[string]string{"X-API-Key": goodKey}); resp.StatusCode() != 200 {
		t.Fatalf("fast request: %d", resp.StatusCode())
	}
	start := time.Now()
	resp := h.do(t, "GET", "/p/slow", map[string]string{"X-API-Key": goodKey})
	checkProblem(t, resp, 504, problems.CodeUpstreamTimeout)
	if el := time.Since(start); el > 900*time.Millisecond {
		t.Errorf("504 after %v, want about the 200ms read_timeout", el)
	}
	// The connection was replaced: the next request is served at once,
	// while the upstream still holds the slow one on the old connection.
	if resp := h.do(t, "GET", "/p/fast", map[string]string{"X-API-Key": goodKey}); resp.StatusCode() != 200 {
		t.Errorf("after the timeout: %d", resp.StatusCode())
	}
}

// Upstreams close idle keep-alive connections on their own schedule (Node
// after 5 s, for instance). A GET sent on a connection the upstream has
// closed is retried on a new one; answers with "Connection: close" end the
// connection without failing the requests queued behind them.
func TestPipelinedUpstreamClosesConnections(t *testing.T) {
	var n atomic.Int64
	be := &fasthttp.Server{IdleTimeout: 100 * time.Millisecond, Handler: func(ctx *fasthttp.RequestCtx) {
		if n.Add(1)%7 == 0 {
			ctx.SetConnectionClose()
		}
		ctx.SetBodyString("echo " + string(ctx.RequestURI()))
	}}
	addr := serve(t, be)
	h := start(t, func(c *config.Config) {
		pipedRoute(c, config.Upstream{URL: "http://" + addr, Pipeline: &config.Pipeline{Conns: 2}})
	}, proxy.Options{})
	get := func(uri string) {
		t.Helper()
		resp := h.do(t, "GET", "/p"+uri, map[string]string{"X-API-Key": goodKey})
		if resp.StatusCode() != 200 || string(resp.Body()) != "echo "+uri {
			t.Errorf("GET %s: %d %q", uri, resp.StatusCode(), resp.Body())
		}
	}
	for round := 0; round < 3; round++ {
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 20; i++ {
					get(fmt.Sprintf("/r%d/w%d/%d", round, w, i))
				}
			}()
		}
		wg.Wait()
		// The upstream closes both idle connections.
		idleClosed(t, be)
	}
}

// HEAD answers carry no body whatever their Content-Length says: the
// answer after one on the same connection is read as its own.
func TestPipelinedUpstreamHead(t *testing.T) {
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyString("echo " + string(ctx.RequestURI()))
	})
	h := start(t, func(c *config.Config) {
		pipedRoute(c, config.Upstream{URL: "http://" + be.addr, Pipeline: &config.Pipeline{Conns: 1}})
	}, proxy.Options{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				uri := fmt.Sprintf("/w%d/%d", w, i)
				method := "GET"
				if i%2 == 0 {
					method = "HEAD"
				}
				resp := h.do(t, method, "/p"+uri, map[string]string{"X-API-Key": goodKey})
				want := "echo " + uri
				if method == "HEAD" {
					want = ""
				}
				if resp.StatusCode() != 200 || string(resp.Body()) != want {
					t.Errorf("%s %s: %d %q, want %q", method, uri, resp.StatusCode(), resp.Body(), want)
				}
			}
		}()
	}
	wg.Wait()
}

// A client's "Connection: close" closes the client's connection, not the
// pipelined upstream connection other clients share.
func TestPipelinedClientConnectionClose(t *testing.T) {
	var conns atomic.Int64
	be := &fasthttp.Server{
		ConnState: func(_ net.Conn, s fasthttp.ConnState) {
			if s == fasthttp.StateNew {
				conns.Add(1)
			}
		},
		Handler: func(ctx *fasthttp.RequestCtx) {
			if ctx.Request.Header.ConnectionClose() {
				ctx.SetStatusCode(500)
			}
			ctx.SetBodyString("ok")
		},
	}
	addr := serve(t, be)
	h := start(t, func(c *config.Config) {
		pipedRoute(c, config.Upstream{URL: "http://" + addr, Pipeline: &config.Pipeline{Conns: 1}})
	}, proxy.Options{})
	for i := 0; i < 5; i++ {
		r := h.raw(t, "GET /p/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-API-Key: "+goodKey+"\r\n\r\n")
		if r.StatusCode() != 200 || !r.ConnectionClose() {
			t.Errorf("request %d: %d, connection close %v", i, r.StatusCode(), r.ConnectionClose())
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the upstream saw %d connections, want the one pipelined connection", n)
	}
}

// A pooled upstream connection the upstream closed while idle (here after
// 300ms, within the second in which the transport skips the first read)
// is noticed when the request is written to it, and the request is
// retried on a new connection at once rather than waiting for the read
// timeout.
func TestPooledUpstreamClosedWhileIdle(t *testing.T) {
	be := &fasthttp.Server{IdleTimeout: 300 * time.Millisecond, Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyString("echo " + string(ctx.RequestURI()))
	}}
	addr := serve(t, be)
	h := start(t, func(c *config.Config) {
		c.Upstreams["pooled"] = config.Upstream{URL: "http://" + addr, ReadTimeout: config.Duration(10 * time.Second)}
		c.Routes = append(c.Routes, config.Route{PathPrefix: "/q", Upstream: "pooled", StripPrefix: true, Auth: []string{"api_key"}})
	}, proxy.Options{})
	for i := 0; i < 4; i++ {
		start := time.Now()
		resp := h.do(t, "GET", fmt.Sprintf("/q/%d", i), map[string]string{"X-API-Key": goodKey})
		if resp.StatusCode() != 200 || string(resp.Body()) != fmt.Sprintf("echo /%d", i) {
			t.Errorf("request %d: %d %q", i, resp.StatusCode(), resp.Body())
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("request %d took %v", i, el)
		}
		idleClosed(t, be)
	}
}

// idleClosed waits until be has closed every connection, as an upstream
// does with idle ones after its idle timeout.
func idleClosed(t *testing.T, be *fasthttp.Server) {
	t.Helper()
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := be.GetOpenConnectionsCount(); n > 0 {
			return fmt.Errorf("upstream holds %d connections", n)
		}
		return nil
	})
}

// serve runs a backend server on a loopback port for the test's duration.
func serve(t *testing.T, be *fasthttp.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go be.Serve(ln)
	t.Cleanup(func() { _ = be.Shutdown() })
	return ln.Addr().String()
}

// pipedRoute adds upstream "piped" and a keyed route /p (prefix stripped)
// to it.
func pipedRoute(c *config.Config, u config.Upstream) {
	c.Upstreams["piped"] = u
	c.Routes = append(c.Routes, config.Route{PathPrefix: "/p", Upstream: "piped", StripPrefix: true, Auth: []string{"api_key"}})
}
