package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/proxy"
	"github.com/valyala/fasthttp"
)

// upgradeBackend accepts "Upgrade: echo" with 101 and then echoes bytes
// in upper case; other upgrades get 400.
func upgradeBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Request.Header.Peek("Upgrade")) != "echo" || string(ctx.Request.Header.Peek("X-Tollgate-Tenant")) != "acme" {
			ctx.SetStatusCode(400)
			ctx.SetBodyString("upgrade to echo only, for acme")
			return
		}
		ctx.Response.SetStatusCode(101)
		ctx.Response.Header.Set("Upgrade", "echo")
		ctx.Response.Header.Set("Connection", "Upgrade")
		ctx.Hijack(func(c net.Conn) {
			buf := make([]byte, 1024)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if _, err := c.Write([]byte(strings.ToUpper(string(buf[:n])))); err != nil {
					return
				}
			}
		})
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return "http://" + ln.Addr().String()
}

func TestUpgradeProxied(t *testing.T) {
	up := upgradeBackend(t)
	h := start(t, func(c *config.Config) {
		c.Routes = append(c.Routes, config.Route{PathPrefix: "/ws", Upstream: up, Auth: []string{"api_key"}, AllowUpgrade: true})
	}, proxy.Options{})
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-API-Key: %s\r\n\r\n", goodKey)
	br := bufio.NewReader(conn)
	var head fasthttp.ResponseHeader
	if err := head.Read(br); err != nil {
		t.Fatal(err)
	}
	if head.StatusCode() != 101 || string(head.Peek("Upgrade")) != "echo" || string(head.Peek("X-RateLimit-Limit")) != "16000" {
		t.Fatalf("handshake answer:\n%s", head.Header())
	}
	if v := head.Peek("Content-Length"); v != nil {
		t.Errorf("101 carries Content-Length %q", v)
	}
	for _, msg := range []string{"hello", "again"} {
		io.WriteString(conn, msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != strings.ToUpper(msg) {
			t.Fatalf("echo of %q = %q, %v", msg, got, err)
		}
	}
}

func TestUpgradeRefusals(t *testing.T) {
	up := upgradeBackend(t)
	h := start(t, func(c *config.Config) {
		c.Routes = append(c.Routes, config.Route{PathPrefix: "/ws", Upstream: up, Auth: []string{"api_key"}, AllowUpgrade: true})
	}, proxy.Options{})
	// No key: the handshake is authenticated like any request.
	resp := h.raw(t, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	checkProblem(t, resp, 401, problems.CodeCredentialMissing)
	// The upstream refuses the protocol: its answer is normalized.
	resp = h.raw(t, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: other\r\nX-API-Key: "+goodKey+"\r\n\r\n")
	body := checkProblemStatus(t, resp, 400)
	if body.Problems[0].Message != "upgrade to echo only, for acme" {
		t.Errorf("refusal message %q", body.Problems[0].Message)
	}
	// A route without allow_upgrade refuses.
	resp = h.raw(t, "GET /api/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-API-Key: "+goodKey+"\r\n\r\n")
	checkProblem(t, resp, 501, problems.CodeUpgradeRefused)
}
