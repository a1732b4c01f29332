package app

import (
	"crypto/tls"
	"fmt"
	"net"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/tlsreload"
	"go.uber.org/zap"
)

// tlsListener terminates TLS on ln when t is set (nil: ln is returned as
// it is, with a nil Reloader). The certificate is t's pair of files,
// re-read when they change (see tlsreload); handshakes happen on a
// connection's first read or write, in the goroutine that serves it, not
// in Accept.
//
// The proxy's listener wraps this one, never the reverse:
// proxy.Listener(tlsListener(...)) scans and lingers on the decrypted
// stream. net/http's Server.Serve takes it as it is.
func tlsListener(ln net.Listener, t *config.TLS, log *zap.Logger) (net.Listener, *tlsreload.Reloader, error) {
	if t == nil {
		return ln, nil, nil
	}
	r, err := tlsreload.New(t.CertFile, t.KeyFile, log)
	if err != nil {
		return nil, nil, fmt.Errorf("app: tls on %s: %w", ln.Addr(), err)
	}
	return tls.NewListener(ln, r.TLSConfig()), r, nil
}
