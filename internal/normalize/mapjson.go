package normalize

import (
	"net/url"
	"strconv"
	"strings"

	"github.com/tollgate/tollgate/internal/problems"
)

// The member names below are matched without regard to case: ASP.NET, AWS
// and others spell them "Message", "Errors" and so on.

// summaryMembers hold a document's own message, best first. RFC 9457 puts
// the specific text in detail and the generic one in title; Spring Boot's
// error is the reason phrase and its message the real text; OAuth's error is
// a code and error_description the text.
var summaryMembers = []string{"detail", "message", "error_description", "errorMessage", "error_message", "error", "title", "description", "msg"}

// itemMembers hold the message of one entry of an errors list, best first.
// defaultMessage is Spring's binding errors; reason is RFC 7807's
// invalid-params.
var itemMembers = []string{"detail", "message", "msg", "description", "defaultMessage", "error_description", "errorMessage", "error_message", "title", "error", "reason"}

// placeholders are messages that say nothing: the next candidate is taken.
var placeholders = []string{"No message available"}

// listMembers hold a list (or a map) of problems.
var listMembers = []string{"errors", "invalid-params", "invalid_params", "invalidParams", "problems", "violations", "fieldViolations", "detail"}

// nestedMembers hold further problem lists inside an entry that has no
// message of its own, such as Google's details[].fieldViolations.
var nestedMembers = []string{"fieldViolations", "violations", "errors", "causes"}

// summaryFields name the field a whole document is about. Fewer than for
// entries: at the top level "path" is Spring's request path and "name" or
// "location" mean anything.
var summaryFields = []string{"pointer", "field", "param", "parameter"}

// itemFields name the field of one entry, best first: JSON pointers, then
// names, then FastAPI's loc and GraphQL's path arrays.
var itemFields = []string{"pointer", "source", "field", "param", "parameter", "propertyPath", "property", "attribute", "loc", "path", "location", "name"}

// noField are the field-map keys that hold errors about no one field.
var noField = []string{"non_field_errors", "__all__", "base"}

// maxNesting bounds how deep the mapper follows nested lists and field maps.
const maxNesting = 8

// maxCode is the longest upstream code kept: a code is an identifier, and
// anything longer is not one.
const maxCode = 128

// mapper collects the problems of one JSON document.
type mapper struct {
	n   *normalizer
	out []problems.Problem
}

// document maps an object that is a whole error response.
func (m *mapper) document(doc value, lvl problems.Level, depth int) {
	lvl = levelOf(doc, lvl)
	// Google and Stripe wrap everything in an "error" object. When it
	// holds nothing we can use, the outer object may still.
	if e := lookup(doc, "error"); e.kind == kindObject && depth < maxNesting {
		before := len(m.out)
		if m.document(e, lvl, depth+1); len(m.out) > before {
			return
		}
	}
	if msg := firstMessage(doc, summaryMembers); msg != "" {
		m.add(lvl, codeOf(doc), fieldOf(doc, summaryFields), msg)
	}
	for _, name := range listMembers {
		v := lookup(doc, name)
		if name == "detail" && v.kind == kindString {
			continue // the summary, taken above
		}
		m.list(v, lvl, "", depth+1)
	}
	if v := lookup(doc, "details"); v.kind == kindArray {
		m.nested(v, lvl, depth+1)
	}
	if len(m.out) == 0 && isFieldMap(doc, 0) {
		// Django REST: the document is {"field": ["message", ...], ...}.
		m.fieldMap(doc, lvl, "", depth+1)
	}
}

// list maps a member that holds problems: a message, a list of messages or
// entries, or a map of fields to messages (Rails, ASP.NET, Laravel).
func (m *mapper) list(v value, lvl problems.Level, field string, depth int) {
	if depth > maxNesting {
		return
	}
	switch v.kind {
	case kindString:
		m.add(lvl, "", field, v.str)
	case kindArray:
		for _, el := range v.arr {
			switch el.kind {
			case kindString:
				m.add(lvl, "", field, el.str)
			case kindObject:
				m.item(el, lvl, field, depth+1)
			}
		}
	case kindObject:
		if hasMessage(v) {
			m.item(v, lvl, field, depth+1)
		} else {
			m.fieldMap(v, lvl, field, depth+1)
		}
	}
}

// item maps one entry of an errors list. field is the entry's field when it
// does not name one itself.
func (m *mapper) item(obj value, lvl problems.Level, field string, depth int) {
	lvl = levelOf(obj, lvl)
	if f := fieldOf(obj, itemFields); f != "" {
		field = f
	}
	msg := firstMessage(obj, itemMembers)
	if msg == "" {
		for _, name := range nestedMembers {
			if v := lookup(obj, name); v.kind == kindArray || v.kind == kindObject {
				m.list(v, lvl, field, depth+1)
				return
			}
		}
		if obj.partial {
			return // its message may be the part that was cut off
		}
	}
	m.add(lvl, codeOf(obj), field, msg)
}

// nested maps Google's details list: only entries that hold further lists
// count, since the others (ErrorInfo, RetryInfo...) are for machines.
func (m *mapper) nested(v value, lvl problems.Level, depth int) {
	for _, el := range v.arr {
		for _, name := range nestedMembers {
			if l := lookup(el, name); l.kind == kindArray {
				m.list(l, lvl, "", depth+1)
			}
		}
	}
}

// fieldMap maps {"field": ["message", ...], "nested": {"field": [...]}},
// joining nested names with dots and list positions as numbers, the way
// Django REST reports nested and list serializers.
func (m *mapper) fieldMap(obj value, lvl problems.Level, prefix string, depth int) {
	if depth > maxNesting {
		return
	}
	for _, mem := range obj.obj {
		name := joinField(prefix, mem.key)
		if containsFold(noField, mem.key) {
			name = prefix
		}
		switch mem.val.kind {
		case kindString:
			m.add(lvl, "", name, mem.val.str)
		case kindArray:
			for i, el := range mem.val.arr {
				switch {
				case el.kind == kindString:
					m.add(lvl, "", name, el.str)
				case el.kind == kindObject && hasMessage(el):
					m.item(el, lvl, name, depth+1)
				case el.kind == kindObject:
					m.fieldMap(el, lvl, joinField(name, strconv.Itoa(i)), depth+1)
				}
			}
		case kindObject:
			m.list(mem.val, lvl, name, depth+1)
		}
	}
}

// add appends one problem, cleaned, unless it repeats one already there
// (Google sends its message both in error.message and error.errors[]).
func (m *mapper) add(lvl problems.Level, code problems.Code, field, msg string) {
	if len(m.out) >= maxProblems {
		return
	}
	max := m.n.o.MaxMessage
	field, msg = clean(field, max), clean(msg, max)
	for _, q := range m.out {
		if q.Field == field && q.Message == msg {
			return
		}
	}
	// The parsed strings share the memory of the whole body; copies keep
	// the problems from holding on to it.
	code = problems.Code(strings.Clone(string(code)))
	p := m.n.problem(lvl, code, strings.Clone(field), strings.Clone(msg))
	if m.out == nil {
		m.out = make([]problems.Problem, 0, 4)
	}
	m.out = append(m.out, p)
}

// lookup returns the member of obj called name, or a null value.
func lookup(obj value, name string) value {
	if obj.kind != kindObject {
		return value{}
	}
	for _, mem := range obj.obj {
		if strings.EqualFold(mem.key, name) {
			return mem.val
		}
	}
	return value{}
}

// firstMessage returns the first of the named members that is a string with
// something to say.
func firstMessage(obj value, names []string) string {
	for _, name := range names {
		v := lookup(obj, name)
		if v.kind != kindString {
			continue
		}
		if s := strings.TrimSpace(v.str); s != "" && !containsFold(placeholders, s) {
			return v.str
		}
	}
	return ""
}

// hasMessage tells an object that is one problem from a field map.
func hasMessage(obj value) bool { return firstMessage(obj, itemMembers) != "" }

// codeOf returns the upstream's own string code of a problem: its "code"
// member, or GraphQL's extensions.code. Numeric codes are HTTP statuses or
// internal numbers, not identifiers, and are dropped.
func codeOf(obj value) problems.Code {
	v := lookup(obj, "code")
	if v.kind != kindString {
		v = lookup(lookup(obj, "extensions"), "code")
	}
	if v.kind != kindString || len(v.str) > maxCode {
		return ""
	}
	return problems.Code(clean(v.str, maxCode))
}

// levelOf maps the upstream's level or severity member, keeping def when
// there is none or it is not one we know.
func levelOf(obj value, def problems.Level) problems.Level {
	for _, name := range []string{"level", "severity"} {
		v := lookup(obj, name)
		if v.kind != kindString {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(v.str)) {
		case "error", "err", "fatal", "critical", "crit", "alert", "emergency", "emerg", "severe":
			return problems.Severe
		case "warn", "warning":
			return problems.Warning
		case "info", "information", "informational", "notice", "debug":
			return problems.Info
		}
	}
	return def
}

// fieldOf returns the field named by the first of the given members that
// names one.
func fieldOf(obj value, names []string) string {
	for _, name := range names {
		v := lookup(obj, name)
		if name == "source" { // JSON:API: source.pointer or source.parameter
			for _, sub := range []string{"pointer", "parameter", "header"} {
				if f := fieldValue(lookup(v, sub)); f != "" {
					return f
				}
			}
			continue
		}
		if f := fieldValue(v); f != "" {
			return f
		}
	}
	return ""
}

// fieldValue turns a field member into a dotted field name: JSON pointers
// lose their slashes, path arrays ["user", 0, "name"] are joined with dots.
func fieldValue(v value) string {
	switch v.kind {
	case kindString:
		return fromPointer(strings.TrimSpace(v.str))
	case kindArray:
		var parts []string
		for _, el := range v.arr {
			if el.kind == kindString || el.kind == kindNumber {
				parts = append(parts, el.str)
			}
		}
		return strings.Join(parts, ".")
	}
	return ""
}

// fromPointer turns a JSON pointer ("/data/attributes/name") or its URI
// fragment form ("#/name") into a dotted name; other names pass unchanged.
func fromPointer(s string) string {
	if strings.HasPrefix(s, "#") {
		if u, err := url.PathUnescape(s[1:]); err == nil {
			s = u
		} else {
			s = s[1:]
		}
		if s == "" {
			return "" // "#" is the whole document
		}
	}
	if !strings.HasPrefix(s, "/") {
		return s
	}
	s = s[1:]
	if !strings.Contains(s, "~") {
		return strings.ReplaceAll(s, "/", ".")
	}
	parts := strings.Split(s, "/")
	for i, p := range parts {
		// RFC 6901: ~1 is '/', ~0 is '~', in that order.
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(p, "~1", "/"), "~0", "~")
	}
	return strings.Join(parts, ".")
}

// isFieldMap reports whether a whole document is a Django REST style field
// map: every member a list of messages or a nested field map, and at least
// one message. A single string member does not count: {"status": "down"}
// is not an error about a field called status.
func isFieldMap(obj value, depth int) bool {
	n, ok := countFieldMessages(obj, depth)
	return ok && n > 0
}

func countFieldMessages(obj value, depth int) (int, bool) {
	if depth > maxNesting || len(obj.obj) == 0 {
		return 0, false
	}
	total := 0
	for _, mem := range obj.obj {
		switch mem.val.kind {
		case kindArray:
			for _, el := range mem.val.arr {
				switch el.kind {
				case kindString:
					total++
				case kindObject: // a list serializer: one map per item, {} for valid ones
					if len(el.obj) == 0 {
						continue
					}
					n, ok := countFieldMessages(el, depth+1)
					if !ok {
						return 0, false
					}
					total += n
				default:
					return 0, false
				}
			}
		case kindObject:
			n, ok := countFieldMessages(mem.val, depth+1)
			if !ok {
				return 0, false
			}
			total += n
		default:
			return 0, false
		}
	}
	return total, true
}

func joinField(prefix, name string) string {
	if prefix == "" {
		return name
	}
	if name == "" {
		return prefix
	}
	return prefix + "." + name
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}
