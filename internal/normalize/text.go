package normalize

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// ellipsis marks a message that was cut.
const ellipsis = "…"

// clean makes s fit to show: valid UTF-8, every run of white space and
// control characters turned into one space, trimmed, and at most max bytes
// (cut on a character boundary, with an ellipsis). It may return "".
func clean(s string, max int) string {
	if isClean(s, max) {
		return s
	}
	var b strings.Builder
	b.Grow(min(len(s), max+len(ellipsis)))
	space := false
	for _, r := range s { // range turns invalid bytes into U+FFFD
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
		if b.Len() > max {
			break // enough to know where to cut; no need to read 64 KiB
		}
	}
	return bound(b.String(), max)
}

// isClean reports whether clean would return s unchanged, without building
// anything: the common case for messages from JSON.
func isClean(s string, max int) bool {
	if len(s) == 0 {
		return true
	}
	if len(s) > max || s[0] == ' ' || s[len(s)-1] == ' ' {
		return false
	}
	prevSpace := false
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f || (c == ' ' && prevSpace) {
				return false
			}
			prevSpace = c == ' '
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || unicode.IsControl(r) {
			return false
		}
		prevSpace = false
		i += size
	}
	return true
}

// bound cuts s to at most max bytes on a character boundary, ending a cut
// text with an ellipsis when there is room for one.
func bound(s string, max int) string {
	if len(s) <= max {
		return s
	}
	if max <= len(ellipsis) {
		return strings.TrimRight(cutAt(s, max), " ")
	}
	return strings.TrimRight(cutAt(s, max-len(ellipsis)), " ") + ellipsis
}

// markCut ends msg with an ellipsis, within max bytes, to show that the text
// it came from was cut short.
func markCut(msg string, max int) string {
	if msg == "" || strings.HasSuffix(msg, ellipsis) || max <= len(ellipsis) {
		return msg
	}
	if len(msg)+len(ellipsis) <= max {
		return msg + ellipsis
	}
	return strings.TrimRight(cutAt(msg, max-len(ellipsis)), " ") + ellipsis
}

// cutAt returns the longest prefix of s of at most n bytes that ends on a
// character boundary.
func cutAt(s string, n int) string {
	if n >= len(s) {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
