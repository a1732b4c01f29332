// Command echo is the backend of the docker compose example in
// deploy/compose: the echo server of `tollgate demo`, which answers each
// request with what it received (method, path, headers, body size), so
// that what tollgate forwards, its identity headers among it, can be seen.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"os/signal"
	"syscall"

	"github.com/tollgate/tollgate/internal/echo"
)

func main() {
	addr := flag.String("addr", "0.0.0.0:3000", "listen address")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	log.Printf("echo backend on %s", ln.Addr())
	if err := echo.Serve(ln); err != nil && ctx.Err() == nil {
		log.Fatal(err)
	}
}
