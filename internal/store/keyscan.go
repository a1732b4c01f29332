package store

import "bytes"

// KeyFields are the string fields of a key record, as slices of the
// record's bytes.
type KeyFields struct {
	ID, Tenant, Name, Prefix, Digest, Created []byte
}

// ScanKey reads a key record in the form json.Marshal writes it: one
// object whose members are Key's JSON names, spelt exactly, each with a
// string of printable ASCII without escapes, and no other member. It is
// what loading a million keys at startup spends its time on, and it does
// not allocate; encoding/json costs about seven allocations a record.
//
// It reports false for anything else (whitespace, escapes, other bytes,
// other members, null), which json.Unmarshal must then decode or refuse:
// when ScanKey reports true, json.Unmarshal into a Key gives the same
// strings (FuzzScanKey).
func ScanKey(v []byte, f *KeyFields) bool {
	*f = KeyFields{}
	if len(v) < 2 || v[0] != '{' || v[len(v)-1] != '}' {
		return false
	}
	v = v[1 : len(v)-1]
	for len(v) > 0 {
		name, rest, ok := scanString(v)
		if !ok || len(rest) == 0 || rest[0] != ':' {
			return false
		}
		val, rest, ok := scanString(rest[1:])
		if !ok {
			return false
		}
		switch string(name) {
		case "id":
			f.ID = val
		case "tenant":
			f.Tenant = val
		case "name":
			f.Name = val
		case "prefix":
			f.Prefix = val
		case "digest":
			f.Digest = val
		case "created":
			f.Created = val
		default:
			// encoding/json matches names without regard to case and
			// skips unknown ones: leave both to it.
			return false
		}
		if len(rest) == 0 {
			break
		}
		if rest[0] != ',' || len(rest) == 1 {
			return false
		}
		v = rest[1:]
	}
	return true
}

// scanString reads a JSON string of printable ASCII without escapes at the
// start of v and returns its contents and what follows it.
func scanString(v []byte) (s, rest []byte, ok bool) {
	if len(v) == 0 || v[0] != '"' {
		return nil, nil, false
	}
	end := bytes.IndexByte(v[1:], '"')
	if end < 0 {
		return nil, nil, false
	}
	s = v[1 : 1+end]
	for _, c := range s {
		if c < 0x20 || c > 0x7e || c == '\\' {
			return nil, nil, false
		}
	}
	return s, v[2+end:], true
}
