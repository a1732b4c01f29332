// Package normalize rewrites upstream error bodies into tollgate's problems
// shape. An upstream that fails (status >= 400) may answer with an HTML page,
// plain text, RFC 9457 problem details, one of the common framework JSON
// shapes, gzip'd bytes or garbage; clients of tollgate always get
// {"ok":false,"status":N,"problems":[...]} instead, with the upstream's
// messages and fields kept where they can be found and its markup, binary
// data and internals never shown.
//
// The package is pure: it parses bytes and returns problems. The proxy
// decides when to call it and writes the response.
package normalize

import (
	"bytes"
	"html"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/tollgate/tollgate/internal/problems"
)

// Options bounds the work. Zero value: MaxBody 64 KiB, MaxMessage 1024 bytes.
type Options struct {
	// MaxBody is the most body bytes looked at, after gzip decoding.
	MaxBody int
	// MaxMessage is the most bytes of one message, field or fallback text.
	MaxMessage int
}

// The defaults for a zero Options.
const (
	DefaultMaxBody    = 64 << 10
	DefaultMaxMessage = 1024
)

// maxProblems caps the problems taken from one body: a client gains nothing
// from the 5000th validation error, and the response stays small.
const maxProblems = 100

func (o Options) withDefaults() Options {
	if o.MaxBody <= 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.MaxMessage <= 0 {
		o.MaxMessage = DefaultMaxMessage
	}
	return o
}

// Result of normalizing one upstream error.
type Result struct {
	Problems []problems.Problem // never empty
	// Already says the body already was a valid problems body
	// {"ok":false,"status":N,"problems":[...]} for this status, with every
	// message within bounds: the caller passes it through unchanged.
	Already bool
}

// Body normalizes an upstream error. status is the upstream status;
// contentType and contentEncoding are the upstream header values (may be
// empty); body is the raw body as received (possibly truncated by the caller
// to MaxBody; truncated=true says so).
//
// A gzip body (by Content-Encoding, or by its magic bytes whatever the
// header says) is decoded first, reading at most MaxBody decoded bytes. A body
// in any other content coding cannot be read and gets the reason phrase.
//
// What the body is decides the problems:
//   - JSON: the shapes of RFC 9457, JSON:API, GraphQL, Spring Boot, Django
//     REST, Rails, Google, OAuth and the like give one problem per message,
//     with its field, code and level where the upstream says them; a JSON
//     value that is no object we recognise gives the reason phrase;
//   - HTML or XML markup: the status's reason phrase. Never the markup, and
//     not the page's <title> either: it is mostly the status line again, or
//     a site name or host name that is nobody's business;
//   - other text: the text itself, white space collapsed;
//   - empty, binary, or not valid UTF-8 (Latin-1 text included): the reason
//     phrase.
//
// A JSON body cut short (truncated, or just ending early) is not read as
// text: it gives every message that was complete in it, and the reason
// phrase when there was none. A cut text body gives its text ending in "…".
//
// A body that already is a problems body for this status, and that the
// client can read as it is, comes back with Already set.
func Body(status int, contentType, contentEncoding string, body []byte, truncated bool, o Options) Result {
	n := normalizer{status: status, reason: reasonPhrase(status), o: o.withDefaults()}
	return n.body(contentType, contentEncoding, body, truncated)
}

// normalizer carries what every step needs.
type normalizer struct {
	status int
	reason string
	o      Options
	// passable says the raw body, sent on with the upstream's headers,
	// reads the same as the bytes parsed: no gzip decoded that the
	// Content-Encoding did not announce, no BOM skipped. Only then may a
	// problems body be passed through.
	passable bool
}

// utf8BOM starts some bodies. It says nothing, so it is skipped.
var utf8BOM = []byte("\xef\xbb\xbf")

func (n *normalizer) body(contentType, contentEncoding string, body []byte, truncated bool) Result {
	body, truncated, gzipped, ok := decode(contentEncoding, body, truncated, n.o.MaxBody)
	if !ok {
		return n.fallback()
	}
	if truncated {
		body = dropCutRune(body)
	}
	if isBinary(body) {
		return n.fallback()
	}
	n.passable = (!gzipped || isGzip(coding(contentEncoding))) && !bytes.HasPrefix(body, utf8BOM)
	body = bytes.TrimPrefix(body, utf8BOM)
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return n.fallback()
	}
	ct := mediaType(contentType)
	if body[0] == '{' || body[0] == '[' || isJSONType(ct) {
		if res, ok := n.json(body, truncated); ok {
			return res
		}
	}
	if isMarkup(ct, body) {
		return n.fallback()
	}
	return n.text(ct, body, truncated)
}

// json maps a body that looks like JSON. ok=false says it was not JSON after
// all and should be read as text.
func (n *normalizer) json(body []byte, truncated bool) (Result, bool) {
	v, err := parseJSON(body)
	if err == errSyntax {
		// Broken JSON is not echoed as text: it would show its structure.
		// A body such as "[ERROR] no database" is text that happens to
		// start with a bracket, though.
		if body[0] == '{' {
			return n.fallback(), true
		}
		return Result{}, false
	}
	if err == nil && !truncated {
		if ps, ok := n.already(v); ok {
			return Result{Problems: ps, Already: true}, true
		}
	}
	m := mapper{n: n}
	if v.kind == kindObject {
		m.document(v, problems.Severe, 0)
	}
	if len(m.out) == 0 {
		return n.fallback(), true
	}
	return Result{Problems: m.out}, true
}

// text makes the one problem of a text body.
func (n *normalizer) text(ct string, body []byte, truncated bool) Result {
	s := string(body)
	if isHTMLType(ct) {
		// Express and friends send bare text as text/html; isMarkup has
		// ruled out tags, but entities such as &amp; still need decoding.
		s = html.UnescapeString(s)
	}
	msg := clean(s, n.o.MaxMessage)
	if truncated {
		msg = markCut(msg, n.o.MaxMessage)
	}
	return Result{Problems: []problems.Problem{n.problem(problems.Severe, "", "", msg)}}
}

// fallback is the result that says only what the status says.
func (n *normalizer) fallback() Result {
	return Result{Problems: []problems.Problem{n.problem(problems.Severe, "", "", "")}}
}

// problem builds one problem from cleaned parts, filling the defaults: the
// upstream_error code and, for an empty message, the reason phrase.
func (n *normalizer) problem(lvl problems.Level, code problems.Code, field, msg string) problems.Problem {
	if code == "" {
		code = problems.CodeUpstreamError
	}
	if msg == "" {
		msg = clean(n.reason, n.o.MaxMessage)
	}
	return problems.Problem{Level: lvl, Code: code, Field: field, Message: msg}
}

// reasonPhrase is the status's reason phrase, the message of last resort.
func reasonPhrase(status int) string {
	if s := http.StatusText(status); s != "" {
		return s
	}
	return "upstream error"
}

// dropCutRune removes the start of a multi-byte character that a cut left at
// the end of b, so a truncated body is not mistaken for binary.
func dropCutRune(b []byte) []byte {
	for i := 1; i < utf8.UTFMax && i <= len(b); i++ {
		c := b[len(b)-i]
		if c < utf8.RuneSelf {
			return b // ASCII: nothing cut
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return b[:len(b)-i]
			}
			return b
		}
	}
	return b
}

// isBinary reports a body that is not text: invalid UTF-8 or holding a NUL.
// Such a body has no message a client could read, whatever it claims to be.
func isBinary(b []byte) bool {
	return bytes.IndexByte(b, 0) >= 0 || !utf8.Valid(b)
}

// mediaType is the lower-cased media type of a Content-Type, without
// parameters.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

// isJSONType matches application/json, text/json and any +json type such as
// application/problem+json.
func isJSONType(mt string) bool {
	return strings.HasSuffix(mt, "/json") || strings.HasSuffix(mt, "+json")
}

func isHTMLType(mt string) bool { return strings.Contains(mt, "html") }

func isXMLType(mt string) bool { return strings.Contains(mt, "xml") }

// isMarkup reports a body whose text would carry HTML or XML markup.
//
// A body declared HTML or XML is markup only if it has a tag at all:
// frameworks label bare text as text/html, and that text is a fine message.
// An undeclared body is markup when it starts with a tag or holds one of the
// tags that mark a page: leaking a bit of markup is worse than losing a
// message to the reason phrase.
func isMarkup(mt string, b []byte) bool {
	if isHTMLType(mt) || isXMLType(mt) {
		return bytes.IndexByte(b, '<') >= 0
	}
	if b[0] == '<' {
		return true
	}
	for i := bytes.IndexByte(b, '<'); i >= 0; {
		rest := b[i:]
		for _, tag := range pageTags {
			if len(rest) >= len(tag) && bytes.EqualFold(rest[:len(tag)], []byte(tag)) {
				return true
			}
		}
		j := bytes.IndexByte(rest[1:], '<')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return false
}

// pageTags are the tags that give away an HTML page inside a text body.
var pageTags = []string{"<html", "<!doctype", "<head", "<body", "<script", "<title", "<?xml"}
