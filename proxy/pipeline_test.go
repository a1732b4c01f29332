package proxy_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

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
		c.Upstreams["piped"] = config.Upstream{URL: "http://" + be.addr, Pipeline: &config.Pipeline{Conns: 2}}
		c.Routes = append(c.Routes, config.Route{PathPrefix: "/p", Upstream: "piped", StripPrefix: true, Auth: []string{"api_key"}})
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
