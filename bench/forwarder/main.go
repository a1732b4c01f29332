// Command forwarder is the benchmark's "bare proxy": the naive fasthttp
// reverse proxy (the request handed to a HostClient as it came, the answer
// copied back), with no authentication, quota or headers. It is the
// reference PERF-NOTES.md measures at about 0.8× plain nginx; tollgate's
// proxy path is meant to be cheaper than this while doing its whole job.
package main

import (
	"flag"
	"log"

	"github.com/valyala/fasthttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:3001", "listen address")
	upstream := flag.String("upstream", "127.0.0.1:3000", "backend address")
	pipeline := flag.Int("pipeline", 0, "N > 0: pipeline requests over N upstream connections (fasthttp.PipelineClient)")
	flag.Parse()
	var hc interface {
		Do(*fasthttp.Request, *fasthttp.Response) error
	} = &fasthttp.HostClient{Addr: *upstream, MaxConns: 1 << 12}
	if *pipeline > 0 {
		hc = &fasthttp.PipelineClient{Addr: *upstream, MaxConns: *pipeline, MaxPendingRequests: 4096}
	}
	s := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if err := hc.Do(&ctx.Request, &ctx.Response); err != nil {
				ctx.Error(err.Error(), fasthttp.StatusBadGateway)
			}
		},
		Name:                  "bench-forwarder",
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
		Concurrency:           1 << 16,
	}
	log.Printf("forwarder: listening on %s, upstream %s", *addr, *upstream)
	if err := s.ListenAndServe(*addr); err != nil {
		log.Fatal(err)
	}
}
