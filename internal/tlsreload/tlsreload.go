// Package tlsreload serves a TLS certificate from a certificate file and a
// key file (PEM) and picks up a new pair when the files change, without a
// restart and without dropping connections: only new handshakes get the
// new certificate.
//
// A change is noticed from the handshakes themselves: GetCertificate
// stats both files at most once per checkInterval (one handshake does it;
// the others go on with the certificate in force), and re-reads the pair
// when either file's modification time, size or identity (device and
// inode) changed. os.Stat follows symbolic links, so the rotation of a
// Kubernetes secret or cert-manager volume (the "..data" symlink swapped
// to a new directory) is seen like a rewrite. No goroutine is started:
// there is nothing to close.
//
// A pair that fails to load (a rotation half written, a certificate and a
// key that do not match) keeps the certificate in force and is logged
// once; it is read again when the files change again.
package tlsreload

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// checkInterval bounds how often GetCertificate stats the files.
const checkInterval = time.Second

// Reloader holds the certificate loaded from a pair of files.
type Reloader struct {
	certFile, keyFile string
	log               *zap.Logger
	now               func() time.Time // the clock of the stat guard; tests replace it
	epoch             time.Time        // from now, at New: the guard runs on the monotonic clock

	cert      atomic.Pointer[tls.Certificate]
	nextCheck atomic.Int64 // nanoseconds after epoch before which GetCertificate does not stat

	mu   sync.Mutex // serialises checks and loads; protects seen
	seen [2]os.FileInfo
}

// New loads the pair certFile, keyFile; it fails when they do not load
// together. log may be nil.
func New(certFile, keyFile string, log *zap.Logger) (*Reloader, error) {
	if log == nil {
		log = zap.NewNop()
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log, now: time.Now}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.load(); err != nil {
		return nil, err
	}
	r.epoch = r.now()
	r.nextCheck.Store(int64(checkInterval))
	return r, nil
}

// TLSConfig returns a server configuration that serves r's certificate in
// force: TLS 1.2 and up, HTTP/1.1 (fasthttp speaks nothing else) offered
// through ALPN.
func (r *Reloader) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1"},
		GetCertificate: r.GetCertificate,
	}
}

// GetCertificate returns the certificate in force, after re-reading the
// pair if it is time to look at the files and they changed. It never
// fails: a pair that does not load leaves the certificate in force.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := int64(r.now().Sub(r.epoch))
	if next := r.nextCheck.Load(); now >= next && r.nextCheck.CompareAndSwap(next, now+int64(checkInterval)) {
		r.check()
	}
	return r.cert.Load(), nil
}

// Certificate returns the certificate in force.
func (r *Reloader) Certificate() *tls.Certificate { return r.cert.Load() }

// Reload re-reads the pair now, whether or not the files changed. On
// failure the certificate in force stays and the error is returned.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.load()
}

// check re-reads the pair when either file changed since it was last
// read (or tried).
func (r *Reloader) check() {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur, err := stat(r.certFile, r.keyFile)
	if err != nil {
		// Missing for a moment (a rotation that removes and recreates):
		// warn once per state seen, as for a pair that does not load.
		if r.seen[0] != nil {
			r.seen = [2]os.FileInfo{}
			r.log.Warn("TLS certificate files unreadable; keeping the certificate in force", zap.Error(err))
		}
		return
	}
	if same(cur[0], r.seen[0]) && same(cur[1], r.seen[1]) {
		return
	}
	if err := r.loadFrom(cur); err != nil {
		r.log.Warn("TLS certificate files changed but do not load; keeping the certificate in force until they change again",
			zap.Error(err))
	}
}

// load stats and reads the pair; mu is held.
func (r *Reloader) load() error {
	cur, err := stat(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	return r.loadFrom(cur)
}

// loadFrom reads the pair whose files' state before the read was cur, and
// remembers cur as seen whatever the outcome: a pair that failed is not
// read again before it changes. The files are stat'd before they are
// read, so a change that lands during the read differs from cur and is
// read at the next check. mu is held.
func (r *Reloader) loadFrom(cur [2]os.FileInfo) error {
	r.seen = cur
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tlsreload: %w", err)
	}
	if c.Leaf == nil { // GODEBUG=x509keypairleaf=0
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return fmt.Errorf("tlsreload: %w", err)
		}
	}
	old := r.cert.Swap(&c)
	fields := []zap.Field{zap.String("cert_file", r.certFile), zap.String("serial", hex.EncodeToString(c.Leaf.SerialNumber.Bytes())),
		zap.Strings("dns_names", c.Leaf.DNSNames), zap.Time("not_after", c.Leaf.NotAfter)}
	if old == nil {
		r.log.Info("TLS certificate loaded", fields...)
	} else {
		r.log.Info("TLS certificate reloaded", fields...)
	}
	return nil
}

func stat(certFile, keyFile string) ([2]os.FileInfo, error) {
	c, err := os.Stat(certFile)
	if err != nil {
		return [2]os.FileInfo{}, fmt.Errorf("tlsreload: %w", err)
	}
	k, err := os.Stat(keyFile)
	if err != nil {
		return [2]os.FileInfo{}, fmt.Errorf("tlsreload: %w", err)
	}
	return [2]os.FileInfo{c, k}, nil
}

// same reports whether a and b describe the same file in the same state.
func same(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}
