// Package leaktest owns the goroutine-leak check of tollgate's tests:
// VerifyTestMain, which a package that starts goroutines calls from its
// TestMain, fails the package's tests if a goroutine is left running when
// they end (go.uber.org/goleak). It ignores only goroutines that are not
// ours, each for a reason given below; a server never shut down, a
// connection never closed, a watcher, loop or copy of ours still running
// shows up all the same.
package leaktest

import (
	"testing"

	"go.uber.org/goleak"
)

// ignored are goroutines of fasthttp that it starts once per process and
// never stops, or that notice a stop only on their next pass, after a
// sleep: none of them is ours, and each one that outlives what started it
// has a goroutine of ours next to it if ours leaked (a Serve loop, a
// connection's read loop).
var ignored = []goleak.Option{
	// The coarse clock behind the Date header: started by the first
	// server of the process, never stopped.
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	// A server's idle-worker reaper: it sees the server's Shutdown only
	// after its sleep (MaxIdleWorkerDuration, 10s by default).
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	// A HostClient's idle-connection reaper (the proxy's upstream clients,
	// the tests' clients): fasthttp gives no way to stop it; it ends on
	// the first pass that finds no connection, up to the client's
	// MaxIdleConnDuration later.
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
	// The same for a fasthttp.Client's table of HostClients.
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*Client).mCleaner"),
	// The default dialer's DNS cache reaper, one per process.
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
}

// VerifyTestMain runs the tests of m, then fails them if any goroutine
// other than those ignored above is still running (goleak retries for a
// while, so goroutines on their way out are not counted).
func VerifyTestMain(m *testing.M) {
	goleak.VerifyTestMain(m, ignored...)
}
