package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/tlsreload/tlstest"

	"github.com/tollgate/tollgate/internal/echo"
)

// TestTLS runs the binary with TLS on both listeners (tls and admin.tls,
// one certificate for 127.0.0.1 from a test CA): the admin API creates a
// key over https; the key works over https, the backend sees
// X-Forwarded-Proto: https; a clear-text request to the proxy's port gets
// no answer in clear and costs no quota; a client that does not trust the
// CA is refused; a rewritten certificate reaches new handshakes while a
// keep-alive connection opened before goes on.
func TestTLS(t *testing.T) {
	ca := tlstest.NewCA(t)
	in := newInstance(t, backend(t), 100)
	certFile, keyFile := filepath.Join(in.dir, "tls.crt"), filepath.Join(in.dir, "tls.key")
	ca.WriteLeaf(t, certFile, keyFile, 1)
	// newInstance's config gains tls at the top and in its admin line.
	cfg, err := os.ReadFile(in.config)
	if err != nil {
		t.Fatal(err)
	}
	tlsSetting := fmt.Sprintf("tls: {cert_file: %s, key_file: %s}", certFile, keyFile)
	cfg = bytes.Replace(cfg, []byte(`admin: {listen: `+in.admin+`, `), []byte(`admin: {`+tlsSetting+`, listen: `+in.admin+`, `), 1)
	cfg = append(cfg, tlsSetting+"\n"...)
	if err := os.WriteFile(in.config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	in.spawn()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get("https://" + in.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("tollgate not ready over https after 60s (%v):\n%s", err, in.logs())
		}
		if resp, err := http.Get("http://" + in.admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Fatal("the admin API answers in clear: admin.tls is not applied")
			}
		}
		select {
		case <-in.exited:
			t.Fatalf("tollgate exited:\n%s", in.logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
	m := tokenRE.FindStringSubmatch(in.logs())
	if m == nil {
		t.Fatalf("serve printed no admin token:\n%s", in.logs())
	}
	token := m[1]

	admin := func(method, path, body string, out any) int {
		t.Helper()
		req, _ := http.NewRequest(method, "https://"+in.admin+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if out != nil && json.Unmarshal(b, out) != nil {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		return resp.StatusCode
	}
	if s := admin("POST", "/v1/tenants", `{"id": "acme", "plan": "pro"}`, nil); s != 201 && s != 200 {
		t.Fatalf("create tenant over https: %d", s)
	}
	var created struct{ Key string }
	if s := admin("POST", "/v1/tenants/acme/keys", `{"name": "tls"}`, &created); (s != 201 && s != 200) || created.Key == "" {
		t.Fatalf("create key over https: %d %+v", s, created)
	}
	used := func() int64 {
		t.Helper()
		var u struct{ Used *int64 }
		if s := admin("GET", "/v1/tenants/acme/usage", "", &u); s != 200 || u.Used == nil {
			t.Fatalf("usage: %d", s)
		}
		return *u.Used
	}

	// The admin API is not served in clear (net/http answers a clear
	// request to a TLS port with a 400 of its own).
	if resp, err := http.Get("http://" + in.admin + "/readyz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("the admin API answers in clear on its TLS port")
		}
	}

	// The key over https: HTTP/1.1 (h2 was offered), the backend told
	// the request came over https.
	req, _ := http.NewRequest("GET", "https://"+in.proxy+"/anything", nil)
	req.Header.Set("X-API-Key", created.Key)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("key over https: %d %s", resp.StatusCode, body)
	}
	if resp.Proto != "HTTP/1.1" || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 || resp.TLS.NegotiatedProtocol != "http/1.1" {
		t.Errorf("over https: %s, TLS %+v", resp.Proto, resp.TLS)
	}
	var seen echo.Reply
	if err := json.Unmarshal(body, &seen); err != nil {
		t.Fatal(err)
	}
	if p := seen.Headers["X-Forwarded-Proto"]; p != "https" {
		t.Errorf("backend saw X-Forwarded-Proto %q, want https (headers %v)", p, seen.Headers)
	}
	if n := used(); n != 1 {
		t.Errorf("used %d after one request, want 1", n)
	}

	// Clear text to the proxy's TLS port: no answer in clear, the
	// connection closed, nothing counted.
	c, err := net.Dial("tcp", in.proxy)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /anything HTTP/1.1\r\nHost: "+in.proxy+"\r\nX-API-Key: "+created.Key+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	c.Close()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Error("a clear-text request to the TLS port: the connection was left open")
	}
	if bytes.Contains(got, []byte("HTTP/")) {
		t.Errorf("a clear-text request to the TLS port was answered in clear: %q", got)
	}
	if n := used(); n != 1 {
		t.Errorf("used %d after the clear-text request, want 1", n)
	}

	// A client that does not trust the test CA is refused.
	if c, err := tls.Dial("tcp", in.proxy, &tls.Config{}); err == nil {
		c.Close()
		t.Error("a client without the test CA completed a handshake")
	}

	// Rotation: a keep-alive connection is opened, the pair rewritten in
	// place; new handshakes get the new certificate (checked once a
	// second at most), the old connection goes on.
	old := tlsKeepAlive(t, in.proxy, ca, created.Key)
	defer old.close()
	if s := old.serial(); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}
	old.get(t)
	ca.WriteLeaf(t, certFile, keyFile, 2)
	var s int64
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		c, err := tls.Dial("tcp", in.proxy, &tls.Config{RootCAs: ca.Pool})
		if err != nil {
			t.Fatal(err)
		}
		s = c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
		c.Close()
		if s == 2 {
			break
		}
	}
	if s != 2 {
		t.Fatalf("after rewriting the certificate: new handshakes get serial %d, want 2\n%s", s, in.logs())
	}
	old.get(t)
	if s := old.serial(); s != 1 {
		t.Errorf("the keep-alive connection's serial %d, want 1", s)
	}
	if !strings.Contains(in.logs(), "TLS certificate reloaded") {
		t.Errorf("no reload logged:\n%s", in.logs())
	}
}

// tlsConn is one keep-alive client connection to the proxy, through a
// Transport of its own that counts its dials.
type tlsConn struct {
	tr     *http.Transport
	client *http.Client
	url    string
	key    string
	state  *tls.ConnectionState
	dials  atomic.Int32
}

func tlsKeepAlive(t *testing.T, addr string, ca *tlstest.CA, key string) *tlsConn {
	t.Helper()
	kc := &tlsConn{url: "https://" + addr + "/anything", key: key}
	var d net.Dialer
	kc.tr = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			kc.dials.Add(1)
			return d.DialContext(ctx, network, addr)
		}}
	kc.client = &http.Client{Transport: kc.tr, Timeout: 10 * time.Second}
	kc.get(t)
	return kc
}

// get sends a request with the key and checks it succeeds on the
// connection opened first; serial then gives that connection's
// certificate.
func (kc *tlsConn) get(t *testing.T) {
	t.Helper()
	req, _ := http.NewRequest("GET", kc.url, nil)
	req.Header.Set("X-API-Key", kc.key)
	resp, err := kc.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("keep-alive request: %d", resp.StatusCode)
	}
	kc.state = resp.TLS
	if n := kc.dials.Load(); n != 1 {
		t.Fatalf("the keep-alive connection was replaced: %d connections", n)
	}
}

func (kc *tlsConn) serial() int64 { return kc.state.PeerCertificates[0].SerialNumber.Int64() }

func (kc *tlsConn) close() { kc.tr.CloseIdleConnections() }
