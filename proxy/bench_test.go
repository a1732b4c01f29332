package proxy_test

import (
	"net"
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
}

func benchmarkHandler(b *testing.B, pipelined, metrics bool) {
	beLn := fasthttputil.NewInmemoryListener()
	body := []byte(`{"id":12345,"name":"tollgate benchmark","items":[1,2,3,4,5,6,7,8,9,10],"status":"ok","padding":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)
	be := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBody(body)
	}}
	go be.Serve(beLn)
	defer be.Shutdown()

	c := config.Default()
	c.Log.Access = new(bool)
	c.Routes = []config.Route{{PathPrefix: "/", Upstream: "http://backend:80", Auth: []string{"api_key"}}}
	if pipelined {
		c.Upstreams = map[string]config.Upstream{"be": {URL: "http://backend:80", Pipeline: &config.Pipeline{Conns: 2}}}
		c.Routes[0].Upstream = "be"
	}
	if err := config.Validate(c); err != nil {
		b.Fatal(err)
	}
	o := proxy.Options{Authenticate: verify, Admit: admit,
		Dial: func(string) (net.Conn, error) { return beLn.Dial() }}
	if metrics {
		o.Metrics = proxy.NewMetrics(prometheus.NewRegistry())
		c.Metrics.TenantLabels = true
	}
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
			if err := hc.Do(req, resp); err != nil || resp.StatusCode() != 200 {
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
