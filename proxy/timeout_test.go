package proxy_test

import (
	"io"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/proxy"
	"github.com/valyala/fasthttp"
)

func TestSlowClientGets408(t *testing.T) {
	h := start(t, func(c *config.Config) { c.Server.ReadTimeout = config.Duration(200 * time.Millisecond) }, proxy.Options{})
	conn := h.dial(t)
	io.WriteString(conn, "GET /api/x HTTP/1.1\r\nHost: x\r\n") // and then nothing
	resp := fasthttp.AcquireResponse()
	if err := resp.Read(bufioReader(conn)); err != nil {
		t.Fatalf("no answer to a slow client: %v", err)
	}
	checkProblem(t, resp, 408, problems.CodeRequestTimeout)
}

func TestExpectContinue(t *testing.T) {
	h := start(t, nil, proxy.Options{})
	conn := h.dial(t)
	io.WriteString(conn, "POST /api/x HTTP/1.1\r\nHost: x\r\nX-API-Key: "+goodKey+"\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	br := bufioReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("interim answer %q, %v; want 100 Continue", line, err)
	}
	if blank, _ := br.ReadString('\n'); blank != "\r\n" {
		t.Fatalf("after 100 Continue: %q", blank)
	}
	io.WriteString(conn, "hello")
	resp := fasthttp.AcquireResponse()
	if err := resp.Read(br); err != nil || resp.StatusCode() != 200 {
		t.Fatalf("answer: %v %d %s", err, resp.StatusCode(), resp.Body())
	}
	h.be.mu.Lock()
	n, expect := h.be.body, h.be.last.Peek("Expect")
	h.be.mu.Unlock()
	if n != 5 || expect != nil {
		t.Errorf("backend got %d body bytes and Expect %q; want 5 and none", n, expect)
	}
}
