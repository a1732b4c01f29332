package proxy

import (
	"bytes"

	"github.com/tollgate/tollgate/internal/problems"
	"github.com/valyala/fasthttp"
)

// What is forwarded is what was authorized. canonicalize decides, once and
// before anything else looks at the request, the one reading of it that
// routing, authentication, authorization and forwarding all use:
//
//   - the version: HTTP/1.1 or HTTP/1.0, nothing else (505);
//   - the framing: Content-Length, or Transfer-Encoding that is exactly
//     "chunked", never both, and a Connection header that does not name a
//     framing field (400 and a close: RFC 9112 §6.1, §6.3);
//   - the header names: tokens only (RFC 9110 §5.1), so that every copy of
//     a header tollgate owns is found and removed;
//   - the host: the authority of an absolute-form target, else the Host
//     header (RFC 9112 §3.2.2); it must be present and well-formed, and it
//     is the Host the upstream receives;
//   - the path: origin-form, with percent-encoded unreserved characters
//     decoded (RFC 3986 §6.2.2.2) and nothing else changed; a path that
//     other software could read as a different path is refused with 400
//     (see canonicalPath) rather than rewritten, so the path a route
//     matched is byte for byte the path the upstream receives;
//   - the hop-by-hop headers, and those the Connection header names, are
//     removed here, before tollgate sets any header of its own; the same
//     pass over the raw head records which headers tollgate owns are
//     present (rs.owned), so that the forwarding rules delete only those.
//
// On failure it has answered and returns false. While expecting (deciding
// on "Expect: 100-continue", before Handler runs) it decides but leaves
// the hop-by-hop headers for Handler's own pass.
func (p *Proxy) canonicalize(ctx *fasthttp.RequestCtx, t *table, rs *reqState, expecting bool) bool {
	req := &ctx.Request
	h := &req.Header
	proto := h.Protocol()
	switch {
	case string(proto) == "HTTP/1.1", string(proto) == "HTTP/1.0":
	default:
		ctx.SetConnectionClose()
		p.fail(ctx, rs, 505, problems.CodeVersionNotSupported, "", "")
		return false
	}
	if h.IsConnect() {
		p.fail(ctx, rs, 405, problems.CodeMethodNotAllowed, "method", "CONNECT is not served")
		return false
	}
	owned, field, msg := t.checkHead(h)
	if msg != "" {
		ctx.SetConnectionClose()
		p.fail(ctx, rs, 400, problems.CodeInvalidFraming, field, msg)
		return false
	}
	rs.owned = owned

	// The target and the host.
	target := h.RequestURI()
	host := h.Host()
	absolute := false
	if len(target) == 0 || target[0] != '/' {
		auth, rest, ok := absoluteForm(target)
		if !ok {
			p.fail(ctx, rs, 400, problems.CodeInvalidTarget, "", "the request target must be a path or an absolute http(s) URL")
			return false
		}
		host, target, absolute = auth, rest, true
	}
	if len(host) == 0 {
		p.fail(ctx, rs, 400, problems.CodeInvalidHost, "Host", "the Host header is required")
		return false
	}
	if !validHost(host) {
		p.fail(ctx, rs, 400, problems.CodeInvalidHost, "Host", "the Host header is not a valid host[:port]")
		return false
	}
	path, query := target, []byte(nil)
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		path, query = target[:i], target[i:]
	}
	if !validQuery(query) {
		p.fail(ctx, rs, 400, problems.CodeInvalidTarget, "", "the query contains a character not allowed in a URL")
		return false
	}
	var buf [1024]byte
	canon, why := canonicalPath(buf[:0], path)
	if why != "" {
		p.fail(ctx, rs, 400, problems.CodeAmbiguousPath, "", why)
		return false
	}
	// A fully qualified name's final dot ("private.test.") is dropped:
	// routing and many backends would otherwise read two names.
	dot := trailingDot(host)
	if absolute || dot >= 0 {
		// Copy: host points into the request target or header we replace.
		var hb [256]byte
		b := append(hb[:0], host...)
		if dot >= 0 {
			b = append(b[:dot], host[dot+1:]...)
		}
		h.SetHostBytes(b)
	}
	if absolute || !bytes.Equal(canon, path) {
		canon = append(canon, query...)
		req.SetRequestURIBytes(canon)
	}
	// fasthttp takes the Host of a parsed URI over the header unless told.
	req.UseHostHeader = true
	target = h.RequestURI()
	rs.path = target[:len(target)-len(query)]
	rs.host = h.Host()

	if up := h.PeekBytes(hUpgrade); len(up) > 0 {
		if len(up) > len(rs.upgradeBuf) {
			p.fail(ctx, rs, 400, problems.CodeBadRequest, "Upgrade", "the Upgrade header is too long")
			return false
		}
		rs.upgradeN = copy(rs.upgradeBuf[:], up)
	}
	cl := h.ContentLength()
	rs.hasBody = cl > 0 || cl == -1
	if expecting {
		return true
	}
	if owned&ownHop != 0 {
		removeHops(h)
	}
	// Upstream connections are ours: the upstream gets HTTP/1.1 and no
	// "Connection: close", whatever the client spoke. fasthttp took the
	// client's version and wish to close before calling the handler, and
	// frames the answer and treats the client connection by them.
	h.ResetConnectionClose()
	if !h.IsHTTP11() {
		h.SetProtocolBytes(strHTTP11)
	}
	return true
}

var strHTTP11 = []byte("HTTP/1.1")

// owned says which of the request headers tollgate removes or replaces
// are present, as checkHead found them in the raw head. A bit that is set
// may be stale (Connection may have named the header away); a bit that is
// clear is not: the header is absent, and deleting it is skipped.
type owned uint16

// Headers checkHead records.
const (
	ownHop           owned = 1 << iota // a hop-by-hop header (hopHeaders)
	ownReqID                           // headers.request_id
	ownTenant                          // headers.tenant
	ownCred                            // headers.credential
	ownAuth                            // headers.auth
	ownAuthorization                   // Authorization
	ownForwarded                       // Forwarded or an X-Forwarded-For, -Proto or -Host
	ownExpect                          // Expect
	ownUser                            // headers.user or headers.user_type
	ownScopes                          // headers.scopes
)

// checkHead reads the raw header lines, once, for what fasthttp's parser
// tolerates: a header name that is not a token, a Transfer-Encoding other
// than a single "chunked" (fasthttp takes "identity" as no body, and the
// body then reads as the next request), Content-Length beside
// Transfer-Encoding, and a Connection header that names a field needed
// for framing or routing. It returns the owned headers present, and the
// field at fault and a message when the head is refused.
func (t *table) checkHead(h *fasthttp.RequestHeader) (owned, string, string) {
	var o owned
	raw := h.RawHeaders()
	te, cl := false, false
	for len(raw) > 0 {
		var line []byte
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			line, raw = raw, nil
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			return 0, "", "obsolete line folding is not accepted"
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return 0, "", "a header line has no field name"
		}
		name := line[:colon]
		for _, c := range name {
			if !isTchar(c) {
				return 0, b2s(name), "a header name contains a character that is not allowed"
			}
		}
		value := bytes.TrimSpace(line[colon+1:])
		switch {
		case eqName(name, hTransferEncoding):
			if te || !bytes.EqualFold(value, vChunked) {
				return 0, "Transfer-Encoding", `only "Transfer-Encoding: chunked" is accepted`
			}
			te = true
		case eqName(name, hContentLength):
			cl = true
		case eqName(name, hConnection):
			o |= ownHop
			for v := value; len(v) > 0; {
				var tok []byte
				tok, v = nextToken(v)
				if eqName(tok, hContentLength) || eqName(tok, hTransferEncoding) || eqName(tok, hHost) {
					return 0, "Connection", "the Connection header may not name " + string(tok)
				}
			}
		case isHopHeader(name):
			o |= ownHop
		case eqName(name, t.hReqID):
			o |= ownReqID
		case eqName(name, t.hTenant):
			o |= ownTenant
		case eqName(name, t.hCred):
			o |= ownCred
		case eqName(name, t.hAuth):
			o |= ownAuth
		case eqName(name, hAuthorization):
			o |= ownAuthorization
		case eqName(name, hXFF) || eqName(name, hXFProto) || eqName(name, hXFHost) || eqName(name, hForwarded):
			o |= ownForwarded
		case eqName(name, hExpect):
			o |= ownExpect
		case eqName(name, t.hUser) || eqName(name, t.hUserType):
			o |= ownUser
		case eqName(name, t.hScopes):
			o |= ownScopes
		}
	}
	if te && cl {
		return 0, "Content-Length", "a request may not carry both Content-Length and Transfer-Encoding"
	}
	return o, "", ""
}

// nextToken splits the first element off a comma-separated list, spaces
// trimmed.
func nextToken(v []byte) (tok, rest []byte) {
	if i := bytes.IndexByte(v, ','); i >= 0 {
		return bytes.TrimSpace(v[:i]), v[i+1:]
	}
	return bytes.TrimSpace(v), nil
}

// eqName compares header names case-insensitively.
func eqName(a, b []byte) bool { return len(a) == len(b) && bytes.EqualFold(a, b) }

var (
	hTransferEncoding = []byte("Transfer-Encoding")
	hContentLength    = []byte("Content-Length")
	hHost             = []byte("Host")
	vChunked          = []byte("chunked")
)

// isTchar reports whether c may appear in a token (RFC 9110 §5.6.2).
func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// absoluteForm splits an absolute-form target "http://authority/path?q"
// into its authority and its origin-form rest ("/" when the path is
// empty). Only http and https are accepted, and no userinfo.
func absoluteForm(target []byte) (authority, rest []byte, ok bool) {
	var s []byte
	switch {
	case len(target) > 7 && bytes.EqualFold(target[:7], []byte("http://")):
		s = target[7:]
	case len(target) > 8 && bytes.EqualFold(target[:8], []byte("https://")):
		s = target[8:]
	default:
		return nil, nil, false
	}
	end := len(s)
	for i, c := range s {
		if c == '/' || c == '?' || c == '#' {
			end = i
			break
		}
	}
	authority, rest = s[:end], s[end:]
	if bytes.IndexByte(authority, '@') >= 0 || len(authority) == 0 {
		return nil, nil, false
	}
	if len(rest) == 0 || rest[0] != '/' {
		if len(rest) > 0 && rest[0] != '?' {
			return nil, nil, false
		}
		// "http://host" and "http://host?q": the path is "/". The target
		// is rewritten whole by the caller, so a copy here is fine.
		rest = append([]byte("/"), rest...)
	}
	return authority, rest, true
}

// validHost accepts host[:port] where host is a registered name or IPv4
// address (letters, digits, '-', '.', '_', '~') or a bracketed IPv6
// literal, and port is digits (RFC 9110 §7.2, RFC 3986 §3.2.2). Anything
// else (userinfo, a path, spaces, percent-encoding) is refused: routing
// compares hosts byte by byte. So is an empty label ("a..b", ".a",
// "a..", but not the one final dot of a fully qualified name, which
// canonicalize drops): one dot fewer or more is the same name to some
// resolvers and backends and another to tollgate's routes.
func validHost(h []byte) bool {
	if len(h) == 0 || len(h) > 255 {
		return false
	}
	if h[0] == '[' {
		end := bytes.IndexByte(h, ']')
		if end < 2 {
			return false
		}
		for _, c := range h[1:end] {
			if !(c == ':' || c == '.' || '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
		return validPort(h[end+1:])
	}
	i := bytes.IndexByte(h, ':')
	name, port := h, []byte(nil)
	if i >= 0 {
		name, port = h[:i], h[i:]
	}
	if len(name) == 0 || name[0] == '.' || bytes.Contains(name, []byte("..")) {
		return false
	}
	for _, c := range name {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return validPort(port)
}

// trailingDot returns the index of the dot that ends host's name
// ("example.com.:80"), or -1.
func trailingDot(host []byte) int {
	if len(host) == 0 || host[0] == '[' {
		return -1
	}
	end := len(host)
	if i := bytes.IndexByte(host, ':'); i >= 0 {
		end = i
	}
	if end > 1 && host[end-1] == '.' {
		return end - 1
	}
	return -1
}

// validPort accepts "" or ":" followed by one to five digits.
func validPort(p []byte) bool {
	if len(p) == 0 {
		return true
	}
	if p[0] != ':' || len(p) < 2 || len(p) > 6 {
		return false
	}
	for _, c := range p[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// validQuery accepts a query of visible ASCII without '#'; percent-encoding
// is passed through as it is (tollgate does not route on the query).
func validQuery(q []byte) bool {
	for _, c := range q {
		if c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return true
}

// canonicalPath appends to dst the canonical form of an origin-form path,
// or says why the path is refused. Percent-encoded unreserved characters
// (ALPHA DIGIT - . _ ~) are decoded, as RFC 3986 §6.2.2.2 allows; other
// percent-encodings are kept, with upper-case hex digits. Refused, because
// proxies, frameworks and file servers disagree on what they mean and one
// of them could serve a route other than the one tollgate authorized:
//
//   - dot segments ("." and "..", also percent-encoded): resolved by some
//     backends, passed through by others;
//   - empty segments ("//"): merged by nginx and many frameworks;
//   - encoded '/' (%2F) and '\' (%5C), and a raw '\': read as separators
//     by some servers, as data by others;
//   - ';': starts path parameters that Tomcat and Jetty drop before
//     routing ("/admin;x/secret" is "/admin/secret" to them);
//   - %00 and other encoded control characters, malformed
//     percent-encoding, and bytes that are not visible ASCII.
//
// A trailing '/' is kept (it is a segment boundary, not a new segment).
func canonicalPath(dst, path []byte) ([]byte, string) {
	if len(path) == 0 || path[0] != '/' {
		return dst, "the path must begin with '/'"
	}
	segStart := len(dst)
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '/':
			if i > 0 {
				if why := checkSegment(dst[segStart:]); why != "" {
					return dst, why
				}
				if len(dst) == segStart {
					return dst, "the path has an empty segment (\"//\")"
				}
			}
			dst = append(dst, '/')
			segStart = len(dst)
			continue
		case c == '%':
			if i+2 >= len(path) || unhex(path[i+1]) < 0 || unhex(path[i+2]) < 0 {
				return dst, "the path has a malformed percent-encoding"
			}
			d := byte(unhex(path[i+1])<<4 | unhex(path[i+2]))
			i += 2
			switch {
			case isUnreserved(d):
				dst = append(dst, d)
			case d == '/' || d == '\\':
				return dst, "the path has an encoded '/' or '\\'"
			case d < 0x20 || d == 0x7f:
				return dst, "the path has an encoded control character"
			default:
				const hexdigits = "0123456789ABCDEF"
				dst = append(dst, '%', hexdigits[d>>4], hexdigits[d&0xf])
			}
			continue
		case c == '\\':
			return dst, "the path has a '\\'"
		case c == ';':
			return dst, "the path has a ';' (path parameters are not accepted)"
		case c <= ' ' || c >= 0x7f || c == '#':
			return dst, "the path has a character not allowed in a URL"
		}
		dst = append(dst, c)
	}
	if why := checkSegment(dst[segStart:]); why != "" {
		return dst, why
	}
	return dst, ""
}

// checkSegment refuses a dot segment (after decoding).
func checkSegment(seg []byte) string {
	if string(seg) == "." || string(seg) == ".." {
		return "the path has a dot segment (\".\" or \"..\")"
	}
	return ""
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
