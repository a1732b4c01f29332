package proxy_test

import (
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate/tollgate/internal/allocs"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/proxy"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// TestHotPathAllocatesNothingInTollgate serves requests with a known key
// and a tenant far from its limit and, with every allocation sampled,
// checks that no allocation made while handling them was made by
// tollgate's own code, through the upstream pool and through a pipelined
// upstream. Every metric is on, tenant labels included.
func TestHotPathAllocatesNothingInTollgate(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation sampling is slow")
	}
	t.Run("pool", func(t *testing.T) { testHotPathAllocs(t, false, false) })
	t.Run("pipelined", func(t *testing.T) { testHotPathAllocs(t, true, false) })
	// Over loopback TCP the pool waits for answers through RawConn.
	t.Run("pool-tcp", func(t *testing.T) { testHotPathAllocs(t, false, true) })
}

func testHotPathAllocs(t *testing.T, pipelined, tcp bool) {
	var beLn net.Listener = fasthttputil.NewInmemoryListener()
	dial := func(string) (net.Conn, error) { return beLn.(*fasthttputil.InmemoryListener).Dial() }
	if tcp {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		beLn, dial = ln, nil
	}
	be := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"ok":true}`) }}
	go be.Serve(beLn)
	defer be.Shutdown()
	c := config.Default()
	url := "http://backend:80"
	if tcp {
		url = "http://" + beLn.Addr().String()
	}
	c.Routes = []config.Route{{PathPrefix: "/", Upstream: url, Auth: []string{"api_key"}}}
	c.Metrics.TenantLabels = true
	if pipelined {
		c.Upstreams = map[string]config.Upstream{"be": {URL: url, Pipeline: &config.Pipeline{Conns: 2}}}
		c.Routes[0].Upstream = "be"
	}
	if err := config.Validate(c); err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(c, proxy.Options{Authenticate: verify, Admit: admit, Access: proxy.NewAccessLog(discard{}),
		Metrics: proxy.NewMetrics(prometheus.NewRegistry()), Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	pLn := fasthttputil.NewInmemoryListener()
	srv := p.Server(c)
	go srv.Serve(proxy.Listener(pLn))
	defer srv.Shutdown()
	hc := &fasthttp.HostClient{Addr: "proxy", Dial: func(string) (net.Conn, error) { return pLn.Dial() }}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI("http://proxy/things/1")
	req.Header.Set("X-API-Key", goodKey)
	run := func(n int) {
		for i := 0; i < n; i++ {
			if err := hc.Do(req, resp); err != nil || resp.StatusCode() != 200 {
				t.Fatalf("%v %d", err, resp.StatusCode())
			}
		}
	}
	run(1000) // warm up pools and buffers
	done := allocs.Sites()
	run(2000)
	for site, n := range done() {
		if n > 20 { // a few one-off allocations may land in the window
			t.Errorf("%d allocations in 2000 requests at %s", n, site)
		}
	}
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }
