// Command backend is the benchmark's upstream: a fasthttp server that
// answers every request with the same ~200-byte JSON body over keep-alive
// HTTP/1.1, doing as little work as possible so that whatever sits in front
// of it is what gets measured.
//
// A request whose query has slow_ms=N (say /v1/items?slow_ms=20) is answered
// after N milliseconds (at most -max-slow), the same body otherwise: the
// slow-response mix of bench/run.sh sends a few of those among the fast
// ones. A request without a query does not pay for the check beyond one
// byte search of its URI.
package main

import (
	"bytes"
	"flag"
	"log"
	"time"

	"github.com/valyala/fasthttp"
)

// body is fixed: 200 bytes of JSON.
var body = []byte(`{"ok":true,"service":"bench-backend","items":[{"id":1,"name":"alpha","price":12.5},{"id":2,"name":"beta","price":7.25},{"id":3,"name":"gamma","price":3.0}],"note":"fixed body for load tests","p":"xx"}`)

func main() {
	addr := flag.String("addr", "127.0.0.1:3000", "listen address")
	maxSlow := flag.Duration("max-slow", 10*time.Second, "upper bound of a slow_ms=N delay")
	flag.Parse()
	if len(body) != 200 {
		log.Fatalf("backend: body is %d bytes, want 200", len(body))
	}
	s := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if bytes.IndexByte(ctx.RequestURI(), '?') >= 0 {
				if ms := ctx.QueryArgs().GetUintOrZero("slow_ms"); ms > 0 {
					d := time.Duration(ms) * time.Millisecond
					if d > *maxSlow {
						d = *maxSlow
					}
					time.Sleep(d)
				}
			}
			ctx.Response.Header.SetContentTypeBytes(contentType)
			ctx.Response.SetBodyRaw(body)
		},
		Name:                  "bench-backend",
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
		Concurrency:           1 << 16,
	}
	log.Printf("backend: listening on %s", *addr)
	if err := s.ListenAndServe(*addr); err != nil {
		log.Fatal(err)
	}
}

var contentType = []byte("application/json")
