package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// FieldError is one configuration problem.
type FieldError struct {
	File string
	Line int // 0 when unknown
	Path string
	Msg  string
}

func (e FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteByte(':')
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "%d:", e.Line)
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Error lists every problem found in a configuration.
type Error struct{ Problems []FieldError }

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	return Parse(f, path, os.Getenv)
}

// Parse reads a configuration from r over the defaults. name is used in
// error messages. getenv expands ${VAR}; nil means os.Getenv.
func Parse(r io.Reader, name string, getenv func(string) string) (*Config, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w", name, err)
	}
	text := Expand(string(raw), getenv)
	c := Default()
	c.File = name
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(text), &root); err != nil {
		return nil, &Error{Problems: yamlErrors(name, err)}
	}
	lines := map[string]int{}
	indexLines(&root, "", lines)
	var all []FieldError
	if len(bytes.TrimSpace([]byte(text))) > 0 {
		dec := yaml.NewDecoder(strings.NewReader(text))
		dec.KnownFields(true)
		if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
			all = yamlErrors(name, err)
			for i := range all {
				all[i].Path = pathAtLine(lines, all[i].Line, all[i].Msg)
			}
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				// A syntax error or a bad value: nothing more to check.
				return nil, &Error{Problems: all}
			}
			// Type errors (unknown keys among them) leave the rest
			// decoded: validate it too, to report everything at once.
		}
	}
	errs := c.validate()
	for i := range errs {
		errs[i].File = name
		errs[i].Line = lookupLine(lines, errs[i].Path)
	}
	all = append(all, errs...)
	if len(all) > 0 {
		sort.SliceStable(all, func(i, j int) bool { return all[i].Line < all[j].Line })
		return nil, &Error{Problems: all}
	}
	return c, nil
}

var lineRE = regexp.MustCompile(`^line (\d+): (.*)$`)

// yamlErrors turns yaml.v3's errors, which already name lines, into
// FieldErrors, one per problem.
func yamlErrors(name string, err error) []FieldError {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	out := make([]FieldError, 0, len(msgs))
	for _, m := range msgs {
		fe := FieldError{File: name, Msg: m}
		if sm := lineRE.FindStringSubmatch(m); sm != nil {
			fe.Line, _ = strconv.Atoi(sm[1])
			fe.Msg = sm[2]
		}
		// "field foo not found in type config.Route" → name the field.
		if f, ok := strings.CutPrefix(fe.Msg, "field "); ok {
			if k, _, ok := strings.Cut(f, " not found"); ok {
				fe.Msg = fmt.Sprintf("unknown key %q", k)
			}
		}
		out = append(out, fe)
	}
	return out
}

// indexLines records the line of every mapping key and sequence item under
// its field path (routes[0].upstream).
func indexLines(n *yaml.Node, path string, lines map[string]int) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			indexLines(c, path, lines)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			lines[p] = k.Line
			indexLines(v, p, lines)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			lines[p] = c.Line
			indexLines(c, p, lines)
		}
	}
}

// pathAtLine names the field a decoder error on line is about: the key
// named in msg if there is one on that line, else the deepest field that
// starts on it.
func pathAtLine(lines map[string]int, line int, msg string) string {
	best := ""
	for p, l := range lines {
		if l != line {
			continue
		}
		last := p[strings.LastIndexAny(p, ".]")+1:]
		if strings.Contains(msg, strconv.Quote(last)) {
			return p
		}
		if len(p) > len(best) {
			best = p
		}
	}
	return best
}

// lookupLine finds the line of path or of its nearest ancestor present in
// the file.
func lookupLine(lines map[string]int, path string) int {
	for path != "" {
		if l, ok := lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// Duration is a time.Duration written as "5m", "1h30m" or "30d".
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML accepts Go durations plus a "d" (day) unit.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		// A TypeError lets the decoder go on and report every problem.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*d = Duration(v)
	return nil
}

// ParseDuration parses "30d", "12h", "1d12h", "500ms".
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	if s == "" || strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("%q is not a duration (examples: 500ms, 5m, 1h30m, 30d)", s)
	}
	var days int64
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseInt(s[:i], 10, 32)
		if err == nil {
			if n > int64(math.MaxInt64/(24*time.Hour)) {
				return 0, fmt.Errorf("%q is too long", s)
			}
			days = n
			s = s[i+1:]
		}
	}
	var rest time.Duration
	if s != "" {
		var err error
		if rest, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q is not a duration (examples: 500ms, 5m, 1h30m, 30d)", s)
		}
	}
	return time.Duration(days)*24*time.Hour + rest, nil
}

// ByteSize is a size written as 1048576, "64KiB", "10MiB", "1GB".
type ByteSize int64

// UnmarshalYAML accepts plain integers and sizes with a unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*b = ByteSize(v)
	return nil
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"B", 1}}

// ParseByteSize parses "64KiB", "10MB" or a plain number of bytes.
func ParseByteSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (examples: 65536, 64KiB, 10MiB)", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * mult, nil
}

// Validate checks and pre-parses a configuration built in code (the demo,
// tests) as Parse does for a file.
func Validate(c *Config) error {
	if errs := c.validate(); len(errs) > 0 {
		return &Error{Problems: errs}
	}
	return nil
}
