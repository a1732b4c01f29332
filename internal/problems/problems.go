// Package problems owns tollgate's one error shape: the body
// {"ok": false, "status": N, "problems": [{"level", "code", "field", "message"}]}
// and the catalogue of stable error codes. Every error that tollgate
// produces, on the proxy listener and the admin API alike, is rendered here.
package problems

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Level is the severity of one problem.
type Level string

// The levels a problem may carry.
const (
	Info    Level = "INFO"
	Warning Level = "WARNING"
	Severe  Level = "SEVERE"
)

// Problem is one entry of the problems list.
type Problem struct {
	Level   Level  `json:"level"`
	Code    Code   `json:"code,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// Body is the whole error body.
type Body struct {
	OK       bool      `json:"ok"`
	Status   int       `json:"status"`
	Problems []Problem `json:"problems"`
}

// Error is an error that carries the HTTP status and the problems to show
// the client. Err, when set, is internal detail for logs and is never
// rendered.
type Error struct {
	Status   int
	Problems []Problem
	Err      error
}

// New returns an *Error with one SEVERE problem. An empty message takes the
// catalogue's default message for code.
func New(status int, code Code, field, message string) *Error {
	if message == "" {
		message = code.Message()
	}
	return &Error{Status: status, Problems: []Problem{{Level: Severe, Code: code, Field: field, Message: message}}}
}

// Newf is New with a formatted message.
func Newf(status int, code Code, field, format string, args ...any) *Error {
	return New(status, code, field, fmt.Sprintf(format, args...))
}

// Wrap returns e with err kept as internal detail.
func (e *Error) Wrap(err error) *Error { e.Err = err; return e }

func (e *Error) Error() string {
	msg := ""
	if len(e.Problems) > 0 {
		msg = e.Problems[0].Message
		if e.Problems[0].Field != "" {
			msg = e.Problems[0].Field + ": " + msg
		}
	}
	if e.Err != nil {
		return fmt.Sprintf("%d %s (%v)", e.Status, msg, e.Err)
	}
	return fmt.Sprintf("%d %s", e.Status, msg)
}

func (e *Error) Unwrap() error { return e.Err }

// From returns err as an *Error, mapping any other error to a 500 that
// does not leak its text.
func From(err error) *Error {
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	return New(500, CodeInternal, "", "").Wrap(err)
}

// Append appends the JSON rendering of the problems body to dst.
func Append(dst []byte, status int, ps []Problem) []byte {
	dst = append(dst, `{"ok":false,"status":`...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, `,"problems":[`...)
	for i := range ps {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendProblem(dst, &ps[i])
	}
	return append(dst, "]}"...)
}

// AppendProblem appends one problem object.
func AppendProblem(dst []byte, p *Problem) []byte {
	lvl := p.Level
	if lvl == "" {
		lvl = Severe
	}
	dst = append(dst, `{"level":`...)
	dst = AppendString(dst, string(lvl))
	if p.Code != "" {
		dst = append(dst, `,"code":`...)
		dst = AppendString(dst, string(p.Code))
	}
	if p.Field != "" {
		dst = append(dst, `,"field":`...)
		dst = AppendString(dst, p.Field)
	}
	dst = append(dst, `,"message":`...)
	dst = AppendString(dst, p.Message)
	return append(dst, '}')
}

// Bytes renders e as a problems body.
func (e *Error) Bytes() []byte { return Append(nil, e.Status, e.Problems) }

const hex = "0123456789abcdef"

// AppendString appends s as a JSON string literal. Invalid UTF-8 becomes
// U+FFFD; control characters and the characters HTML treats specially are
// escaped so a body is safe to embed anywhere.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
