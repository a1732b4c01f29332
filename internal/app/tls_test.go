package app

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/tlsreload/tlstest"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/proxy"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// writePair issues a leaf for 127.0.0.1 with serial number serial and
// writes it and its key (PEM) to dir/tls.crt and dir/tls.key.
func writePair(t *testing.T, ca *tlstest.CA, dir string, serial int64) *config.TLS {
	t.Helper()
	c := &config.TLS{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
	ca.WriteLeaf(t, c.CertFile, c.KeyFile, serial)
	return c
}

func TestTLSListenerOff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got, r, err := tlsListener(ln, nil, zap.NewNop())
	if err != nil || got != ln || r != nil {
		t.Fatalf("tlsListener(ln, nil) = %v, %v, %v; want ln unchanged", got, r, err)
	}
}

func TestTLSListenerBadFiles(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	if _, _, err := tlsListener(ln, &config.TLS{CertFile: filepath.Join(dir, "no.crt"), KeyFile: filepath.Join(dir, "no.key")},
		zap.NewNop()); err == nil {
		t.Fatal("tlsListener with missing files: no error")
	}
}

// TestTLSListenerProxy serves fasthttp on proxy.Listener(tlsListener(...)),
// as Run does: TLS 1.0 and 1.1 are refused, 1.2 and 1.3 served; the
// handler sees a TLS connection (ctx.IsTLS, which the proxy's
// X-Forwarded-Proto comes from); a clear-text request gets no clear-text
// answer; a reloaded certificate reaches new handshakes while a
// keep-alive connection opened before goes on.
func TestTLSListenerProxy(t *testing.T) {
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	conf := writePair(t, ca, dir, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tln, reloader, err := tlsListener(ln, conf, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if ctx.IsTLS() && ctx.TLSConnectionState() != nil {
			ctx.SetBodyString("tls")
		} else {
			ctx.SetBodyString("clear")
		}
	}, ReadTimeout: 5 * time.Second, CloseOnShutdown: true, Logger: discardLogger{}}
	done := make(chan struct{})
	go func() { _ = srv.Serve(proxy.Listener(tln)); close(done) }()
	defer func() { _ = srv.Shutdown(); <-done }()
	addr := ln.Addr().String()

	for _, v := range []struct {
		version uint16
		ok      bool
	}{{tls.VersionTLS10, false}, {tls.VersionTLS11, false}, {tls.VersionTLS12, true}, {tls.VersionTLS13, true}} {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool, MinVersion: v.version, MaxVersion: v.version})
		if !v.ok {
			if err == nil {
				c.Close()
				t.Errorf("TLS %x accepted", v.version)
			}
			continue
		}
		if err != nil {
			t.Fatalf("TLS %x: %v", v.version, err)
		}
		if body := tlsGet(t, c); body != "tls" {
			t.Errorf("TLS %x: the handler saw a %q connection (proxy.Listener hides the *tls.Conn from fasthttp's IsTLS?)",
				v.version, body)
		}
		c.Close()
	}

	// Clear text to the TLS port: no HTTP answer in clear.
	pc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = pc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(pc, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(pc)
	pc.Close()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("a clear-text request: the connection was left open")
	}
	if strings.Contains(string(b), "HTTP/") {
		t.Fatalf("a clear-text request was answered in clear: %q", b)
	}

	old, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	tlsGet(t, old)
	writePair(t, ca, dir, 2)
	if err := reloader.Reload(); err != nil {
		t.Fatal(err)
	}
	nc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool})
	if err != nil {
		t.Fatal(err)
	}
	if s := nc.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); s != 2 {
		t.Fatalf("after Reload: serial %d, want 2", s)
	}
	nc.Close()
	if body := tlsGet(t, old); body != "tls" {
		t.Fatalf("keep-alive connection after the reload: %q", body)
	}
	if s := old.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); s != 1 {
		t.Fatalf("keep-alive connection's serial %d, want 1", s)
	}
}

// TestTLSListenerAdmin: net/http (the admin listener) serves on the same
// listener, and sees TLS.
func TestTLSListenerAdmin(t *testing.T) {
	ca := tlstest.NewCA(t)
	conf := writePair(t, ca, t.TempDir(), 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tln, _, err := tlsListener(ln, conf, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			_, _ = io.WriteString(w, "tls")
		}
	}), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { _ = srv.Serve(tln); close(done) }()
	defer func() { _ = srv.Close(); <-done }()

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "tls" || resp.Proto != "HTTP/1.1" {
		t.Fatalf("admin over TLS: %s %q", resp.Proto, b)
	}
}

// discardLogger silences fasthttp's log of the refused handshakes.
type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

// tlsGet sends a keep-alive GET on c and returns the answer's body.
func tlsGet(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Close {
		t.Fatal("the server closes the keep-alive connection")
	}
	return string(b)
}
