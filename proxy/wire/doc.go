// Package wire owns tollgate's connections below HTTP semantics: the
// client listener's connections (a yield before reading the next request,
// refusing heads that end in bare line feeds, lingering close after an
// error answer), upstream connections that bound silence rather than
// transfer length and wait for an answer without an empty read, the
// pooled round trip that streams large answers, and the HTTP/1.1
// pipelining client. The proxy decides what is sent; this package only
// moves bytes. What each optimisation measured is in bench/RESULTS.md.
package wire
