package tlsreload

import (
	"crypto/tls"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/tlsreload/tlstest"
)

// testCA is the shared test CA (tlstest), with this package's helpers.
type testCA struct{ *tlstest.CA }

func newCA(t *testing.T) *testCA { return &testCA{tlstest.NewCA(t)} }

func (ca *testCA) leaf(t *testing.T, serial int64) (certPEM, keyPEM []byte) {
	return ca.Leaf(t, serial)
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
