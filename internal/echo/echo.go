// Package echo is a small fasthttp backend for `tollgate demo` and the
// tests: it answers with what it received (method, path, headers, body
// size) and has a few endpoints to exercise the proxy: /status/N,
// /bytes/N, /slow/MS.
package echo

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// Reply is what the echo backend answers.
type Reply struct {
	Method    string            `json:"method"`
	Path      string            `json:"path"`
	Query     string            `json:"query,omitempty"`
	Headers   map[string]string `json:"headers"`
	BodyBytes int64             `json:"body_bytes"`
}

// Handler serves the echo backend.
func Handler(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	switch {
	case strings.HasPrefix(path, "/status/"):
		code, _ := strconv.Atoi(strings.TrimPrefix(path, "/status/"))
		if code < 200 || code > 599 {
			code = 400
		}
		ctx.SetStatusCode(code)
		ctx.SetContentType("text/plain; charset=utf-8")
		ctx.SetBodyString("echo: status " + strconv.Itoa(code) + "\n")
		return
	case strings.HasPrefix(path, "/error/"):
		writeError(ctx, strings.TrimPrefix(path, "/error/"))
		return
	case strings.HasPrefix(path, "/bytes/"):
		n, _ := strconv.ParseInt(strings.TrimPrefix(path, "/bytes/"), 10, 64)
		ctx.SetContentType("application/octet-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			var buf [32 << 10]byte
			for i := range buf {
				buf[i] = 'x'
			}
			for n > 0 {
				k := min(n, int64(len(buf)))
				if _, err := w.Write(buf[:k]); err != nil {
					return
				}
				n -= k
			}
		})
		return
	case strings.HasPrefix(path, "/slow/"):
		ms, _ := strconv.Atoi(strings.TrimPrefix(path, "/slow/"))
		time.Sleep(time.Duration(min(ms, 60000)) * time.Millisecond)
	}
	r := Reply{Method: string(ctx.Method()), Path: path, Query: string(ctx.URI().QueryString()), Headers: map[string]string{}}
	for k, v := range ctx.Request.Header.All() {
		r.Headers[string(k)] = string(v)
	}
	if s := ctx.RequestBodyStream(); s != nil {
		r.BodyBytes, _ = io.Copy(io.Discard, s)
	} else {
		r.BodyBytes = int64(len(ctx.Request.Body()))
	}
	ctx.SetContentType("application/json")
	enc := json.NewEncoder(ctx)
	enc.SetIndent("", "  ")
	_ = enc.Encode(r)
}

// Errors are upstream error answers in the shapes backends use, served
// at /error/<name> to exercise normalization.
var Errors = map[string]struct {
	Status      int
	ContentType string
	Body        string
}{
	"html":     {502, "text/html", "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>"},
	"errors":   {422, "application/json", `{"errors":[{"field":"email","message":"is invalid"},"name is required"]}`},
	"problem":  {400, "application/problem+json", `{"type":"about:blank","title":"Bad Request","status":400,"detail":"amount must be positive"}`},
	"text":     {503, "text/plain", "database is down\n"},
	"gzip":     {500, "application/json", `{"error":"boom","message":"it broke"}`},
	"spring":   {404, "application/json", `{"timestamp":"2026-11-23T10:00:00.000+00:00","status":404,"error":"Not Found","path":"/x"}`},
	"problems": {409, "application/json", `{"ok":false,"status":409,"problems":[{"level":"WARNING","field":"name","message":"taken"}]}`},
}

func writeError(ctx *fasthttp.RequestCtx, name string) {
	e, ok := Errors[name]
	if !ok {
		ctx.SetStatusCode(404)
		return
	}
	ctx.SetStatusCode(e.Status)
	ctx.SetContentType(e.ContentType)
	if name == "gzip" {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		_, _ = w.Write([]byte(e.Body))
		_ = w.Close()
		ctx.Response.Header.Set("Content-Encoding", "gzip")
		ctx.SetBody(b.Bytes())
		return
	}
	ctx.SetBodyString(e.Body)
}

// HeaderNames returns the sorted header names of r, for tests.
func (r Reply) HeaderNames() []string {
	out := make([]string, 0, len(r.Headers))
	for k := range r.Headers {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Serve runs the echo backend on ln until it is closed.
func Serve(ln net.Listener) error {
	s := &fasthttp.Server{Handler: Handler, StreamRequestBody: true, MaxRequestBodySize: 1 << 40, Name: "echo"}
	return s.Serve(ln)
}
