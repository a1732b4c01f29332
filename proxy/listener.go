package proxy

import (
	"net"

	"github.com/tollgate/tollgate/proxy/wire"
)

// Listener wraps the proxy's client listener (see wire.Listener): serve the
// proxy on it so that bare-LF heads, lingering close and the yield before
// reading work.
func Listener(ln net.Listener) net.Listener { return wire.Listener(ln) }
