package tlsreload

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testCA is a self-signed ECDSA P-256 CA that issues leaves for 127.0.0.1.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tlsreload test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf issues a certificate for 127.0.0.1 with serial number serial and
// returns it and its key in PEM.
func (ca *testCA) leaf(t *testing.T, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// rewrites counts writeInPlace's calls, to give each a distinct mtime.
var rewrites int

// writeInPlace rewrites path in place (same inode), as a naive rotation
// does. The mtime is then moved a whole second per call, so that the
// change shows whatever the file system's timestamp granularity.
func writeInPlace(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	rewrites++
	mt := time.Now().Add(time.Duration(rewrites) * time.Second)
	if err := os.Chtimes(path, mt, mt); err != nil {
		t.Fatal(err)
	}
}

// writePair writes the leaf with serial into dir/tls.crt and dir/tls.key
// in place and returns their paths.
func (ca *testCA) writePair(t *testing.T, dir string, serial int64) (certFile, keyFile string) {
	t.Helper()
	c, k := ca.leaf(t, serial)
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeInPlace(t, certFile, c)
	writeInPlace(t, keyFile, k)
	return certFile, keyFile
}

// secretDir lays out dir as Kubernetes mounts a secret: the files are
// symlinks through "..data", itself a symlink to a timestamped directory.
// swap publishes a new pair the way kubelet does: a new directory, a new
// symlink to it, renamed over "..data".
type secretDir struct {
	dir string
	n   int
}

func (s *secretDir) swap(t *testing.T, ca *testCA, serial int64) {
	t.Helper()
	s.n++
	ts := filepath.Join(s.dir, "..2026_12_05_"+big.NewInt(int64(s.n)).String())
	if err := os.Mkdir(ts, 0o700); err != nil {
		t.Fatal(err)
	}
	c, k := ca.leaf(t, serial)
	if err := os.WriteFile(filepath.Join(ts, "tls.crt"), c, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, "tls.key"), k, 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(s.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if s.n == 1 {
		for _, f := range []string{"tls.crt", "tls.key"} {
			if err := os.Symlink(filepath.Join("..data", f), filepath.Join(s.dir, f)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func (s *secretDir) files() (certFile, keyFile string) {
	return filepath.Join(s.dir, "tls.crt"), filepath.Join(s.dir, "tls.key")
}

// serialOf returns the serial number of the leaf a TLS connection got.
func serialOf(t *testing.T, cs tls.ConnectionState) int64 {
	t.Helper()
	if len(cs.PeerCertificates) == 0 {
		t.Fatal("no peer certificate")
	}
	return cs.PeerCertificates[0].SerialNumber.Int64()
}
