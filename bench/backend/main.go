// Command backend is the benchmark's upstream: a fasthttp server that
// answers every request with the same ~200-byte JSON body over keep-alive
// HTTP/1.1, doing as little work as possible so that whatever sits in front
// of it is what gets measured.
package main

import (
	"flag"
	"log"

	"github.com/valyala/fasthttp"
)

// body is fixed: 200 bytes of JSON.
var body = []byte(`{"ok":true,"service":"bench-backend","items":[{"id":1,"name":"alpha","price":12.5},{"id":2,"name":"beta","price":7.25},{"id":3,"name":"gamma","price":3.0}],"note":"fixed body for load tests","p":"xx"}`)

func main() {
	addr := flag.String("addr", "127.0.0.1:3000", "listen address")
	flag.Parse()
	if len(body) != 200 {
		log.Fatalf("backend: body is %d bytes, want 200", len(body))
	}
	s := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
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
