package normalize

import (
	"errors"
	"unicode/utf16"
	"unicode/utf8"
)

// A small JSON parser of our own rather than encoding/json, for two reasons:
//   - objects keep their members in document order (a map would not), so
//     problems come out in the order the upstream listed them;
//   - a body cut short (truncated by the caller or by the gzip limit) still
//     yields every member that was complete, which encoding/json cannot do.

// kind is the type of a parsed JSON value.
type kind uint8

const (
	kindNull kind = iota
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

// value is one parsed JSON value.
type value struct {
	kind kind
	str  string   // kindString: the decoded text; kindBool, kindNumber: the literal
	arr  []value  // kindArray
	obj  []member // kindObject, in document order
	// partial marks a container the input ended inside of: it holds only the
	// members that were complete.
	partial bool
}

// member is one name/value pair of an object.
type member struct {
	key string
	val value
}

// maxDepth bounds nesting. Real error bodies are shallow; the bound keeps a
// body of 64 KiB of '[' from costing a deep recursion.
const maxDepth = 64

var (
	errSyntax = errors.New("normalize: invalid JSON")
	// errEOF says the input ended inside a value. The value returned with it
	// (when it is a container) holds what was complete.
	errEOF = errors.New("normalize: JSON ends early")
)

type parser struct {
	data []byte
	// src is data as one string: strings without escapes, keys and number
	// literals are slices of it, so parsing allocates once for all of them
	// rather than once for each.
	src   string
	pos   int
	depth int
}

// parseJSON parses data as exactly one JSON value. It returns errSyntax for
// input that is not JSON, and errEOF with the complete part of the value
// for input that is JSON cut short.
func parseJSON(data []byte) (value, error) {
	p := parser{data: data, src: string(data)}
	v, err := p.value()
	if err != nil {
		return v, err
	}
	p.skipSpace()
	if p.pos != len(p.data) {
		return value{}, errSyntax
	}
	return v, nil
}

func (p *parser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *parser) eof() bool { return p.pos >= len(p.data) }

func (p *parser) value() (value, error) {
	p.skipSpace()
	if p.eof() {
		return value{}, errEOF
	}
	switch c := p.data[p.pos]; {
	case c == '{':
		return p.object()
	case c == '[':
		return p.array()
	case c == '"':
		s, err := p.string()
		return value{kind: kindString, str: s}, err
	case c == 't':
		return p.literal("true", kindBool)
	case c == 'f':
		return p.literal("false", kindBool)
	case c == 'n':
		return p.literal("null", kindNull)
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	}
	return value{}, errSyntax
}

// enter counts one level of nesting, failing past maxDepth.
func (p *parser) enter() error {
	p.depth++
	if p.depth > maxDepth {
		return errSyntax
	}
	return nil
}

func (p *parser) object() (value, error) {
	if err := p.enter(); err != nil {
		return value{}, err
	}
	defer func() { p.depth-- }()
	p.pos++ // '{'
	v := value{kind: kindObject, obj: make([]member, 0, 4)}
	cut := func() (value, error) { v.partial = true; return v, errEOF }

	p.skipSpace()
	if p.eof() {
		return cut()
	}
	if p.data[p.pos] == '}' {
		p.pos++
		return v, nil
	}
	for {
		p.skipSpace()
		if p.eof() {
			return cut()
		}
		if p.data[p.pos] != '"' {
			return value{}, errSyntax
		}
		key, err := p.string()
		if err == errEOF {
			return cut()
		} else if err != nil {
			return value{}, err
		}
		p.skipSpace()
		if p.eof() {
			return cut()
		}
		if p.data[p.pos] != ':' {
			return value{}, errSyntax
		}
		p.pos++
		val, err := p.value()
		if err == errEOF {
			if val.partial { // a container keeps its complete part
				v.obj = append(v.obj, member{key, val})
			}
			return cut()
		} else if err != nil {
			return value{}, err
		}
		v.obj = append(v.obj, member{key, val})
		p.skipSpace()
		if p.eof() {
			return cut()
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			return v, nil
		default:
			return value{}, errSyntax
		}
	}
}

func (p *parser) array() (value, error) {
	if err := p.enter(); err != nil {
		return value{}, err
	}
	defer func() { p.depth-- }()
	p.pos++ // '['
	v := value{kind: kindArray, arr: make([]value, 0, 4)}
	cut := func() (value, error) { v.partial = true; return v, errEOF }

	p.skipSpace()
	if p.eof() {
		return cut()
	}
	if p.data[p.pos] == ']' {
		p.pos++
		return v, nil
	}
	for {
		el, err := p.value()
		if err == errEOF {
			if el.partial {
				v.arr = append(v.arr, el)
			}
			return cut()
		} else if err != nil {
			return value{}, err
		}
		v.arr = append(v.arr, el)
		p.skipSpace()
		if p.eof() {
			return cut()
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return v, nil
		default:
			return value{}, errSyntax
		}
	}
}

// literal parses true, false or null. A prefix of the literal at the end of
// the input is a cut value, not a syntax error.
func (p *parser) literal(lit string, k kind) (value, error) {
	rest := p.data[p.pos:]
	if len(rest) < len(lit) {
		if string(rest) == lit[:len(rest)] {
			return value{}, errEOF
		}
		return value{}, errSyntax
	}
	if string(rest[:len(lit)]) != lit {
		return value{}, errSyntax
	}
	p.pos += len(lit)
	return value{kind: k, str: lit}, nil
}

// number parses a number per RFC 8259. Inside a container, a number that
// runs to the end of the input may have lost digits, so it counts as cut.
func (p *parser) number() (value, error) {
	start := p.pos
	digits := func() int {
		n := 0
		for !p.eof() && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
			p.pos++
			n++
		}
		return n
	}
	bad := func() (value, error) {
		if p.eof() {
			return value{}, errEOF
		}
		return value{}, errSyntax
	}
	if p.data[p.pos] == '-' {
		p.pos++
	}
	if !p.eof() && p.data[p.pos] == '0' {
		p.pos++
	} else if digits() == 0 {
		return bad()
	}
	if !p.eof() && p.data[p.pos] == '.' {
		p.pos++
		if digits() == 0 {
			return bad()
		}
	}
	if !p.eof() && (p.data[p.pos] == 'e' || p.data[p.pos] == 'E') {
		p.pos++
		if !p.eof() && (p.data[p.pos] == '+' || p.data[p.pos] == '-') {
			p.pos++
		}
		if digits() == 0 {
			return bad()
		}
	}
	if p.eof() && p.depth > 0 {
		return value{}, errEOF
	}
	return value{kind: kindNumber, str: p.src[start:p.pos]}, nil
}

// string parses a string literal starting at the opening quote. Lone
// surrogates become U+FFFD so the result is always valid UTF-8 when the
// input is.
func (p *parser) string() (string, error) {
	p.pos++ // opening quote
	start := p.pos
	// Fast path: no escapes, the common case.
	for i := start; i < len(p.data); i++ {
		switch c := p.data[i]; {
		case c == '"':
			p.pos = i + 1
			return p.src[start:i], nil
		case c == '\\':
			return p.escapedString(start, i)
		case c < 0x20:
			return "", errSyntax
		}
	}
	return "", errEOF
}

// escapedString continues a string at its first backslash, at index i.
func (p *parser) escapedString(start, i int) (string, error) {
	buf := make([]byte, 0, i-start+16)
	buf = append(buf, p.data[start:i]...)
	for i < len(p.data) {
		c := p.data[i]
		switch {
		case c == '"':
			p.pos = i + 1
			return string(buf), nil
		case c < 0x20:
			return "", errSyntax
		case c != '\\':
			buf = append(buf, c)
			i++
			continue
		}
		// An escape sequence.
		if i+1 >= len(p.data) {
			return "", errEOF
		}
		switch e := p.data[i+1]; e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, n, err := p.unicodeEscape(i)
			if err != nil {
				return "", err
			}
			buf = utf8.AppendRune(buf, r)
			i += n
			continue
		default:
			return "", errSyntax
		}
		i += 2
	}
	return "", errEOF
}

// unicodeEscape decodes the \uXXXX escape at index i, joining a surrogate
// pair when one follows. It returns the rune and the bytes consumed.
func (p *parser) unicodeEscape(i int) (rune, int, error) {
	r, err := p.hex4(i + 2)
	if err != nil {
		return 0, 0, err
	}
	if !utf16.IsSurrogate(r) {
		return r, 6, nil
	}
	// A high surrogate joins a following \uDC00-\uDFFF; anything else
	// leaves it lone, and a lone surrogate is not a character.
	rest := p.data[i+6:]
	if len(rest) >= 6 && rest[0] == '\\' && rest[1] == 'u' {
		if r2, err := p.hex4(i + 8); err == nil {
			if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
				return dec, 12, nil
			}
		}
	} else if len(rest) < 6 && isEscapePrefix(rest) {
		return 0, 0, errEOF // the low half may have been cut off
	}
	return utf8.RuneError, 6, nil
}

// isEscapePrefix reports whether b is a proper prefix of a \uXXXX escape.
func isEscapePrefix(b []byte) bool {
	for j, c := range b {
		switch {
		case j == 0 && c != '\\', j == 1 && c != 'u', j > 1 && unhex(c) < 0:
			return false
		}
	}
	return true
}

// hex4 reads four hex digits at index i.
func (p *parser) hex4(i int) (rune, error) {
	if i+4 > len(p.data) {
		for _, c := range p.data[i:] {
			if unhex(c) < 0 {
				return 0, errSyntax
			}
		}
		return 0, errEOF
	}
	var r rune
	for _, c := range p.data[i : i+4] {
		d := unhex(c)
		if d < 0 {
			return 0, errSyntax
		}
		r = r<<4 | d
	}
	return r, nil
}

func unhex(c byte) rune {
	switch {
	case c >= '0' && c <= '9':
		return rune(c - '0')
	case c >= 'a' && c <= 'f':
		return rune(c - 'a' + 10)
	case c >= 'A' && c <= 'F':
		return rune(c - 'A' + 10)
	}
	return -1
}
