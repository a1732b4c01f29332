package normalize

import (
	"bytes"
	"compress/gzip"
	"io"
	"strings"
	"sync"
)

// gzipMagic starts every gzip stream.
var gzipMagic = []byte{0x1f, 0x8b}

// decode undoes the content coding of body and bounds it to max bytes. It
// returns the bytes to read, whether they are cut short, whether they were
// gzip'd, and ok=false when the body is in a coding that cannot be read.
//
// The magic bytes beat the header: upstreams and proxies that gzip a body
// without saying so, or strip the coding but keep the header, are common
// enough, and a gzip stream read as text would only be binary garbage.
func decode(contentEncoding string, body []byte, truncated bool, max int) (out []byte, cut, gzipped, ok bool) {
	if bytes.HasPrefix(body, gzipMagic) {
		if out, cut, ok := gunzip(body, max); ok {
			return out, cut || truncated, true, true
		}
	}
	if c := coding(contentEncoding); c != "" && c != "identity" && !isGzip(c) {
		return nil, false, false, false // br, zstd, deflate, stacked codings...
	}
	// Plain bytes, or "gzip" that is not (the check above failed): read
	// them as they are.
	if len(body) > max {
		return body[:max], true, false, true
	}
	return body, truncated, false, true
}

func isGzip(coding string) bool { return coding == "gzip" || coding == "x-gzip" }

// coding is the one content coding a Content-Encoding value names, lower
// case; identity entries are dropped, and a stack of codings is returned
// whole (so it matches no single coding).
func coding(v string) string {
	v = strings.ToLower(strings.TrimSpace(v))
	if !strings.Contains(v, ",") {
		return v
	}
	var kept []string
	for _, c := range strings.Split(v, ",") {
		if c = strings.TrimSpace(c); c != "" && c != "identity" {
			kept = append(kept, c)
		}
	}
	return strings.Join(kept, ",")
}

// gzipReaders recycles gzip readers: each holds tens of KiB of decoder
// state, too much to allocate per error response.
var gzipReaders sync.Pool

// gunzip decodes at most max bytes of a gzip stream. Reading through a
// limit is what keeps a gzip bomb from taking memory: the output stops at
// max+1 bytes whatever the stream says. A stream that breaks off (a
// truncated body, a bad checksum) gives what was decoded, marked cut.
// ok=false says body is no gzip stream at all.
func gunzip(body []byte, max int) (out []byte, cut, ok bool) {
	zr, _ := gzipReaders.Get().(*gzip.Reader)
	var err error
	if zr == nil {
		zr, err = gzip.NewReader(bytes.NewReader(body))
	} else {
		err = zr.Reset(bytes.NewReader(body))
	}
	if zr != nil {
		defer gzipReaders.Put(zr)
	}
	if err != nil {
		return nil, false, false
	}
	out, err = io.ReadAll(io.LimitReader(zr, int64(max)+1))
	if len(out) > max {
		return out[:max], true, true
	}
	return out, err != nil, true
}
