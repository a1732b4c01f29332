package proxy_test

import (
	"net"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/proxy"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// BenchmarkHandler runs the whole proxy handler over in-memory listeners:
// a fasthttp client, the proxy with a known key and a tenant far from its
// limit, and a fasthttp backend answering a fixed 200-byte JSON body.
// allocs/op counts all three. "pipelined" sends the upstream requests
// over two pipelined connections (upstreams.*.pipeline); "metrics"
// counts every request in the Prometheus series (proxy.NewMetrics), as
// tollgate does, with tenant labels.
func BenchmarkHandler(b *testing.B) {
	b.Run("pool", func(b *testing.B) { benchmarkHandler(b, false, false) })
	b.Run("pipelined", func(b *testing.B) { benchmarkHandler(b, true, false) })
	b.Run("pool-metrics", func(b *testing.B) { benchmarkHandler(b, false, true) })
	b.Run("pool-refund-shadow", func(b *testing.B) { benchmarkHandlerOutcomes(b) })
}

// benchmarkHandlerOutcomes is "pool" with metrics and the access log on,
// on a route in shadow mode (every answer says what would have refused it)
// that refunds 503s, and a backend answering every other request 503:
// each of those is refunded and its limit headers rewritten. Error
// bodies are passed through as they are (errors.normalize: false).
func benchmarkHandlerOutcomes(b *testing.B) {
	var n atomic.Int64
	backend := func(ctx *fasthttp.RequestCtx) {
		if n.Add(1)%2 == 0 {
			ctx.SetStatusCode(503)
		}
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"ok":true}`)
	}
	c := config.Default()
	refundOn := []string{"503"}
	c.Routes = []config.Route{{PathPrefix: "/", Upstream: "http://backend:80", Auth: []string{"api_key"}, Mode: "shadow", RefundOn: &refundOn,
		// Rewriting the backend's error bodies allocates (normalize.Body):
		// measured apart from refunds and shadow mode.
		Errors: config.RouteErrors{Normalize: new(bool)}}}
	c.Metrics.TenantLabels = true
	var refunds atomic.Int64
	o := proxy.Options{Authenticate: verify, Admit: admit, Access: proxy.NewAccessLog(discard{}),
		Metrics: proxy.NewMetrics(prometheus.NewRegistry()),
		Refund:  func(access.Principal, int64, access.Decision) { refunds.Add(1) }}
	runHandler(b, c, o, backend, func(resp *fasthttp.Response) bool { return len(resp.Header.Peek("Tollgate-Shadow")) > 0 })
	if refunds.Load() < int64(b.N)/3 {
		b.Errorf("%d refunds for %d requests", refunds.Load(), b.N)
	}
}

func benchmarkHandler(b *testing.B, pipelined, metrics bool) {
	body := []byte(`{"id":12345,"name":"tollgate benchmark","items":[1,2,3,4,5,6,7,8,9,10],"status":"ok","padding":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)
	backend := func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBody(body)
	}
	c := config.Default()
	c.Log.Access = new(bool)
	c.Routes = []config.Route{{PathPrefix: "/", Upstream: "http://backend:80", Auth: []string{"api_key"}}}
	if pipelined {
		c.Upstreams = map[string]config.Upstream{"be": {URL: "http://backend:80", Pipeline: &config.Pipeline{Conns: 2}}}
		c.Routes[0].Upstream = "be"
	}
	o := proxy.Options{Authenticate: verify, Admit: admit}
	if metrics {
		o.Metrics = proxy.NewMetrics(prometheus.NewRegistry())
		c.Metrics.TenantLabels = true
	}
	runHandler(b, c, o, backend, func(resp *fasthttp.Response) bool { return resp.StatusCode() == 200 })
}

// runHandler serves backend and the proxy made of c and o over in-memory
// listeners and sends b.N requests with the known key from parallel
// clients; ok checks each answer.
func runHandler(b *testing.B, c *config.Config, o proxy.Options, backend fasthttp.RequestHandler, ok func(*fasthttp.Response) bool) {
	beLn := fasthttputil.NewInmemoryListener()
	be := &fasthttp.Server{Handler: backend}
	go be.Serve(beLn)
	defer be.Shutdown()
	if err := config.Validate(c); err != nil {
		b.Fatal(err)
	}
	o.Dial = func(string) (net.Conn, error) { return beLn.Dial() }
	p, err := proxy.New(c, o)
	if err != nil {
		b.Fatal(err)
	}
	pLn := fasthttputil.NewInmemoryListener()
	srv := p.Server(c)
	go srv.Serve(proxy.Listener(pLn))
	defer srv.Shutdown()

	hc := &fasthttp.HostClient{Addr: "proxy", Dial: func(string) (net.Conn, error) { return pLn.Dial() }, MaxConns: 64}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://proxy/things/1")
		req.Header.Set("X-API-Key", goodKey)
		for pb.Next() {
			if err := hc.Do(req, resp); err != nil || !ok(resp) {
				b.Errorf("%v %d", err, resp.StatusCode())
				return
			}
		}
	})
}

func BenchmarkLimitHeaders(b *testing.B) {
	var h fasthttp.ResponseHeader
	d := access.Decision{Allowed: true, Limit: 16000, Remaining: 15997, Reset: 626302,
		HasRate: true, Rate: access.Rate{Limit: 20, Window: 1, Remaining: 19, Reset: 1}}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		proxy.SetLimitHeaders(&h, &d)
	}
}

func BenchmarkErrorBody(b *testing.B) {
	buf := make([]byte, 0, 512)
	ps := []problems.Problem{{Level: problems.Severe, Code: problems.CodeQuotaExceeded, Message: problems.CodeQuotaExceeded.Message()}}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = problems.Append(buf[:0], 429, ps)
	}
}
