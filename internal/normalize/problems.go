package normalize

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tollgate/tollgate/internal/problems"
)

// IsProblems reports whether body is already a valid tollgate problems body:
// a JSON object with exactly the members ok (false), status (an integer from
// 100 to 599) and problems (a non-empty list of objects with a known level,
// a non-empty message and optionally a code and a field, all strings, and
// nothing else). The check is strict because a body that passes is sent to
// clients as it is.
func IsProblems(body []byte) bool {
	if !utf8.Valid(body) {
		return false
	}
	v, err := parseJSON(body)
	if err != nil {
		return false
	}
	_, _, ok := problemsBody(v)
	return ok
}

// already returns the problems of a document that is a problems body fit to
// pass through: one IsProblems accepts, for the upstream's own status, with
// every string exactly as Body would have produced it, in bytes the client
// can read as they are (see normalizer.passable). A problems body that
// misses only the last conditions is not lost: the mapper reads its
// "problems" list like any other.
func (n *normalizer) already(v value) ([]problems.Problem, bool) {
	ps, status, ok := problemsBody(v)
	if !ok || !n.passable || status != n.status || len(ps) > maxProblems {
		return nil, false
	}
	max := n.o.MaxMessage
	for _, p := range ps {
		if clean(p.Message, max) != p.Message || clean(p.Field, max) != p.Field ||
			len(p.Code) > maxCode || clean(string(p.Code), maxCode) != string(p.Code) {
			return nil, false
		}
	}
	// The parsed strings share the memory of the whole body; copies keep
	// the problems from holding on to it.
	for i := range ps {
		p := &ps[i]
		p.Code = problems.Code(strings.Clone(string(p.Code)))
		p.Field, p.Message = strings.Clone(p.Field), strings.Clone(p.Message)
	}
	return ps, true
}

// problemsBody parses the strict problems shape described at IsProblems.
func problemsBody(v value) (ps []problems.Problem, status int, ok bool) {
	if v.kind != kindObject || len(v.obj) != 3 {
		return nil, 0, false
	}
	var seenOK, seenStatus, seenProblems bool
	for _, mem := range v.obj {
		switch mem.key {
		case "ok":
			seenOK = mem.val.kind == kindBool && mem.val.str == "false"
		case "status":
			status, seenStatus = httpStatus(mem.val)
		case "problems":
			ps, seenProblems = problemList(mem.val)
		default:
			return nil, 0, false
		}
	}
	// Three members, each seen valid, means no member twice.
	if !seenOK || !seenStatus || !seenProblems {
		return nil, 0, false
	}
	return ps, status, true
}

// httpStatus reads a status: an integer literal from 100 to 599.
func httpStatus(v value) (int, bool) {
	if v.kind != kindNumber || len(v.str) != 3 {
		return 0, false
	}
	n, err := strconv.Atoi(v.str)
	return n, err == nil && n >= 100 && n <= 599
}

func problemList(v value) ([]problems.Problem, bool) {
	if v.kind != kindArray || len(v.arr) == 0 {
		return nil, false
	}
	ps := make([]problems.Problem, 0, len(v.arr))
	for _, el := range v.arr {
		p, ok := problemEntry(el)
		if !ok {
			return nil, false
		}
		ps = append(ps, p)
	}
	return ps, true
}

func problemEntry(v value) (problems.Problem, bool) {
	var p problems.Problem
	if v.kind != kindObject {
		return p, false
	}
	var seen uint8 // one bit per known member, to refuse repeats
	for _, mem := range v.obj {
		if mem.val.kind != kindString {
			return p, false
		}
		var bit uint8
		switch s := mem.val.str; mem.key {
		case "level":
			p.Level, bit = problems.Level(s), 1
		case "code":
			p.Code, bit = problems.Code(s), 2
		case "field":
			p.Field, bit = s, 4
		case "message":
			p.Message, bit = s, 8
		default:
			return p, false
		}
		if seen&bit != 0 {
			return p, false
		}
		seen |= bit
	}
	switch p.Level {
	case problems.Info, problems.Warning, problems.Severe:
	default:
		return p, false
	}
	return p, p.Message != ""
}

// urnPrefix starts the RFC 9457 type of a problem whose code is in
// tollgate's catalogue.
const urnPrefix = "urn:tollgate:problem:"

// AppendRFC9457 appends an RFC 9457 application/problem+json rendering of
// the problems body to dst:
//
//	{"type":"urn:tollgate:problem:<code>","title":<reason phrase>,"status":N,
//	 "detail":<first message>,"problems":[...same objects...]}
//
// The type is the URN of the first problem's code when tollgate's catalogue
// knows it, and "about:blank" otherwise (an upstream's own code says nothing
// stable about tollgate). It is used when a client Accepts
// application/problem+json.
func AppendRFC9457(dst []byte, status int, ps []problems.Problem) []byte {
	title := reasonPhrase(status)
	typ, detail := "about:blank", title
	if len(ps) > 0 {
		detail = ps[0].Message
		if inCatalogue(ps[0].Code) {
			typ = urnPrefix + string(ps[0].Code)
		}
	}
	dst = append(dst, `{"type":`...)
	dst = problems.AppendString(dst, typ)
	dst = append(dst, `,"title":`...)
	dst = problems.AppendString(dst, title)
	dst = append(dst, `,"status":`...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, `,"detail":`...)
	dst = problems.AppendString(dst, detail)
	dst = append(dst, `,"problems":[`...)
	for i := range ps {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = problems.AppendProblem(dst, &ps[i])
	}
	return append(dst, "]}"...)
}

func inCatalogue(c problems.Code) bool {
	for _, e := range problems.Catalogue {
		if e.Code == c {
			return true
		}
	}
	return false
}
