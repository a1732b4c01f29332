package tlsreload

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/leaktest"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

// newTest returns a Reloader of the pair, its log and a function that
// moves its clock on by the check interval: no test waits for it.
func newTest(t *testing.T, certFile, keyFile string) (*Reloader, *observer.ObservedLogs, func()) {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	r, err := New(certFile, keyFile, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	r.now = func() time.Time { return time.Unix(0, now.Load()) }
	return r, logs, func() { now.Add(int64(checkInterval)) }
}

func serial(t *testing.T, r *Reloader) int64 {
	t.Helper()
	c, err := r.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil || c == nil {
		t.Fatalf("GetCertificate: %v, %v", c, err)
	}
	return c.Leaf.SerialNumber.Int64()
}

func warnings(logs *observer.ObservedLogs) int {
	return logs.FilterLevelExact(zapcore.WarnLevel).Len()
}

func TestNew(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.writePair(t, dir, 10)
	r, err := New(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Certificate().Leaf.SerialNumber.Int64(); got != 10 {
		t.Fatalf("serial %d, want 10", got)
	}
	c := r.TLSConfig()
	if c.MinVersion != tls.VersionTLS12 || len(c.NextProtos) != 1 || c.NextProtos[0] != "http/1.1" || c.GetCertificate == nil {
		t.Fatalf("TLSConfig: MinVersion %x, NextProtos %q", c.MinVersion, c.NextProtos)
	}

	if _, err := New(filepath.Join(dir, "missing.crt"), keyFile, nil); err == nil {
		t.Error("New with a missing certificate: no error")
	}
	if _, err := New(certFile, filepath.Join(dir, "missing.key"), nil); err == nil {
		t.Error("New with a missing key: no error")
	}
	// A certificate and the key of another.
	_, otherKey := ca.leaf(t, 11)
	other := filepath.Join(dir, "other.key")
	writeInPlace(t, other, otherKey)
	if _, err := New(certFile, other, nil); err == nil {
		t.Error("New with a mismatched pair: no error")
	}
	garbage := filepath.Join(dir, "garbage.crt")
	writeInPlace(t, garbage, []byte("-----BEGIN CERTIFICATE-----\nMIIB"))
	if _, err := New(garbage, keyFile, nil); err == nil {
		t.Error("New with a truncated certificate: no error")
	}
}

// TestRewrite: a pair rewritten in place is served from the next check
// on, which comes at most once per interval.
func TestRewrite(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.writePair(t, dir, 1)
	r, logs, advance := newTest(t, certFile, keyFile)
	if s := serial(t, r); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}
	ca.writePair(t, dir, 2)
	// Within the interval the files are not looked at.
	if s := serial(t, r); s != 1 {
		t.Fatalf("within the interval: serial %d, want 1", s)
	}
	advance()
	if s := serial(t, r); s != 2 {
		t.Fatalf("after the interval: serial %d, want 2", s)
	}
	// Unchanged files are not read again.
	n := logs.Len()
	advance()
	if s := serial(t, r); s != 2 || logs.Len() != n {
		t.Fatalf("unchanged files: serial %d, %d new log entries", s, logs.Len()-n)
	}
	if warnings(logs) != 0 {
		t.Fatalf("warnings: %v", logs.All())
	}
}

// TestReplaceByRename: a pair replaced by rename (new inodes) is seen even
// when the new files have the old ones' size and modification time.
func TestReplaceByRename(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.writePair(t, dir, 1)
	r, _, advance := newTest(t, certFile, keyFile)
	st := [2]os.FileInfo{}
	for i, f := range []string{certFile, keyFile} {
		var err error
		if st[i], err = os.Stat(f); err != nil {
			t.Fatal(err)
		}
	}
	sub := t.TempDir()
	c2, k2 := ca.writePair(t, sub, 2)
	for i, pair := range [][2]string{{c2, certFile}, {k2, keyFile}} {
		if err := os.Chtimes(pair[0], st[i].ModTime(), st[i].ModTime()); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(pair[0], pair[1]); err != nil {
			t.Fatal(err)
		}
	}
	advance()
	if s := serial(t, r); s != 2 {
		t.Fatalf("serial %d, want 2", s)
	}
}

// TestBadRewrite: a pair that does not load (half a rotation, a truncated
// file) keeps the certificate in force, is logged once per change, and is
// read again when the files change again.
func TestBadRewrite(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.writePair(t, dir, 1)
	r, logs, advance := newTest(t, certFile, keyFile)

	// The new certificate is written, its key not yet.
	c2, k2 := ca.leaf(t, 2)
	writeInPlace(t, certFile, c2)
	for range 3 {
		advance()
		if s := serial(t, r); s != 1 {
			t.Fatalf("half-written rotation: serial %d, want 1", s)
		}
	}
	if n := warnings(logs); n != 1 {
		t.Fatalf("%d warnings for one bad change, want 1: %v", n, logs.All())
	}
	if msg := logs.FilterLevelExact(zapcore.WarnLevel).All()[0].ContextMap()["error"]; !strings.Contains(fmt.Sprint(msg), "private key does not match") {
		t.Errorf("warning's error: %v", msg)
	}
	// The key arrives: the pair loads.
	writeInPlace(t, keyFile, k2)
	advance()
	if s := serial(t, r); s != 2 {
		t.Fatalf("completed rotation: serial %d, want 2", s)
	}

	// A truncated certificate: kept, one more warning.
	c3, _ := ca.leaf(t, 3)
	writeInPlace(t, certFile, c3[:len(c3)/2])
	advance()
	advance()
	if s := serial(t, r); s != 2 {
		t.Fatalf("truncated certificate: serial %d, want 2", s)
	}
	advance()
	serial(t, r)
	if n := warnings(logs); n != 2 {
		t.Fatalf("%d warnings after two bad changes, want 2", n)
	}

	// Files gone for a while (removed before being recreated): kept,
	// logged once.
	if err := os.Remove(certFile); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		advance()
		if s := serial(t, r); s != 2 {
			t.Fatalf("missing certificate: serial %d, want 2", s)
		}
	}
	if n := warnings(logs); n != 3 {
		t.Fatalf("%d warnings after a missing file, want 3", n)
	}
	ca.writePair(t, dir, 4)
	advance()
	if s := serial(t, r); s != 4 {
		t.Fatalf("recreated pair: serial %d, want 4", s)
	}
}

// TestReload: an explicit Reload reads the pair at once, and fails,
// keeping the certificate in force, when it does not load.
func TestReload(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.writePair(t, dir, 1)
	r, _, _ := newTest(t, certFile, keyFile)
	ca.writePair(t, dir, 2)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if s := serial(t, r); s != 2 {
		t.Fatalf("serial %d, want 2", s)
	}
	c3, _ := ca.leaf(t, 3)
	writeInPlace(t, certFile, c3)
	if err := r.Reload(); err == nil {
		t.Fatal("Reload of a mismatched pair: no error")
	}
	if s := serial(t, r); s != 2 {
		t.Fatalf("after a failed Reload: serial %d, want 2", s)
	}
}

// TestSymlinkSwap: a Kubernetes secret volume's rotation (the "..data"
// symlink swapped to a new directory) is picked up.
func TestSymlinkSwap(t *testing.T) {
	ca := newCA(t)
	sd := &secretDir{dir: t.TempDir()}
	sd.swap(t, ca, 1)
	certFile, keyFile := sd.files()
	r, logs, advance := newTest(t, certFile, keyFile)
	if s := serial(t, r); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}
	sd.swap(t, ca, 2)
	advance()
	if s := serial(t, r); s != 2 {
		t.Fatalf("after the swap: serial %d, want 2", s)
	}
	if warnings(logs) != 0 {
		t.Fatalf("warnings: %v", logs.All())
	}
}

// TestConcurrentHandshakes: GetCertificate from many goroutines while the
// clock moves and the pair rotates (for the race detector); every call
// gets a whole certificate, and the last rotation is served in the end.
func TestConcurrentHandshakes(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.writePair(t, dir, 1)
	r, _, advance := newTest(t, certFile, keyFile)
	pairs := make([][2][]byte, 5)
	for i := range pairs {
		pairs[i][0], pairs[i][1] = ca.leaf(t, int64(i+2))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := r.GetCertificate(nil)
				if err != nil || c == nil || c.Leaf == nil || c.PrivateKey == nil {
					t.Errorf("GetCertificate: %v, %v", c, err)
					return
				}
				advance()
			}
		})
	}
	for _, p := range pairs {
		// Written whole, by rename, so that no check sees half a pair.
		for i, f := range []string{certFile, keyFile} {
			tmp := f + ".tmp"
			writeInPlace(t, tmp, p[i])
			if err := os.Rename(tmp, f); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	advance()
	if s := serial(t, r); s != int64(len(pairs)+1) {
		t.Fatalf("serial %d, want %d", s, len(pairs)+1)
	}
}

// TestServe: a fasthttp server on a TLS listener of the Reloader's
// configuration. TLS 1.1 is refused, 1.2 and 1.3 served over HTTP/1.1; a
// rotation (in place, then by symlink swap) reaches new handshakes while a
// keep-alive connection opened before it goes on working with the old
// certificate.
func TestServe(t *testing.T) {
	ca := newCA(t)
	sd := &secretDir{dir: t.TempDir()}
	sd.swap(t, ca, 1)
	certFile, keyFile := sd.files()
	r, logs, advance := newTest(t, certFile, keyFile)
	addr := serve(t, r.TLSConfig())

	for _, v := range []struct {
		version uint16
		ok      bool
	}{{tls.VersionTLS10, false}, {tls.VersionTLS11, false}, {tls.VersionTLS12, true}, {tls.VersionTLS13, true}} {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool, MinVersion: v.version, MaxVersion: v.version,
			NextProtos: []string{"h2", "http/1.1"}})
		if !v.ok {
			if err == nil {
				c.Close()
				t.Errorf("TLS %x accepted", v.version)
			} else if !strings.Contains(err.Error(), "protocol version") {
				t.Errorf("TLS %x refused with %v, want a protocol version alert", v.version, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("TLS %x: %v", v.version, err)
		}
		if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
			t.Errorf("ALPN %q, want http/1.1", p)
		}
		if body := get(t, c); body != "tls" {
			t.Errorf("TLS %x: answer %q", v.version, body)
		}
		c.Close()
	}

	old := dial(t, addr, ca)
	defer old.Close()
	if s := serialOf(t, old.ConnectionState()); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}
	get(t, old)

	// Rewritten in place, through the symlinks.
	c, k := ca.leaf(t, 2)
	writeInPlace(t, filepath.Join(sd.dir, "..data", "tls.crt"), c)
	writeInPlace(t, filepath.Join(sd.dir, "..data", "tls.key"), k)
	advance()
	c2 := dial(t, addr, ca)
	if s := serialOf(t, c2.ConnectionState()); s != 2 {
		t.Fatalf("after an in-place rewrite: serial %d, want 2", s)
	}
	get(t, c2)
	c2.Close()

	// Swapped like a secret volume.
	sd.swap(t, ca, 3)
	advance()
	c3 := dial(t, addr, ca)
	if s := serialOf(t, c3.ConnectionState()); s != 3 {
		t.Fatalf("after a symlink swap: serial %d, want 3", s)
	}
	get(t, c3)
	c3.Close()

	// A bad rotation: new handshakes keep the last good certificate.
	c4, _ := ca.leaf(t, 4)
	writeInPlace(t, filepath.Join(sd.dir, "..data", "tls.crt"), c4)
	advance()
	c5 := dial(t, addr, ca)
	if s := serialOf(t, c5.ConnectionState()); s != 3 {
		t.Fatalf("after a bad rotation: serial %d, want 3", s)
	}
	get(t, c5)
	c5.Close()

	// The connection opened first still works, on its own handshake.
	for range 3 {
		if body := get(t, old); body != "tls" {
			t.Fatalf("old keep-alive connection: %q", body)
		}
	}
	if s := serialOf(t, old.ConnectionState()); s != 1 {
		t.Fatalf("old connection's serial %d, want 1", s)
	}
	if n := warnings(logs); n != 1 {
		t.Fatalf("%d warnings, want 1", n)
	}
}

// serve runs a trivial fasthttp server on a TLS listener on loopback
// until the test ends; it answers "tls" when the connection is TLS.
func serve(t *testing.T, conf *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if ctx.IsTLS() {
			ctx.SetBodyString("tls")
		} else {
			ctx.SetBodyString("clear")
		}
	}, ReadTimeout: 5 * time.Second, CloseOnShutdown: true}
	done := make(chan struct{})
	go func() { _ = srv.Serve(tls.NewListener(ln, conf)); close(done) }()
	t.Cleanup(func() { _ = srv.Shutdown(); <-done })
	return ln.Addr().String()
}

func dial(t *testing.T, addr string, ca *testCA) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// get sends a keep-alive GET on c and returns the answer's body.
func get(t *testing.T, c net.Conn) string {
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
