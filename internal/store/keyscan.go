package store

import (
	"bytes"
	"encoding/json"
	"time"
)

// KeyFields are the fields of a credential record (Key), as slices of
// the record's bytes: strings without their quotes, and the lists
// (Tenants, Scopes, Modules, Grants) as their raw JSON arrays, whose
// strings Strings yields.
type KeyFields struct {
	ID, Kind, Tenant, Name, Prefix, Digest, Created         []byte
	Password, Type, Expires, PrevDigest, PrevUntil, Updated []byte
	Client, User, TokenLifetime                             []byte
	Tenants, Scopes, Modules, Grants                        []byte
}

// Strings calls f with each string of a raw array that ScanKey accepted.
func Strings(arr []byte, f func(s []byte)) {
	if len(arr) < 2 {
		return
	}
	v := arr[1 : len(arr)-1]
	for len(v) > 0 {
		s, rest, ok := scanString(v)
		if !ok {
			return
		}
		f(s)
		if len(rest) == 0 || rest[0] != ',' {
			return
		}
		v = rest[1:]
	}
}

// KeyFieldsOf returns the fields of k as ScanKey would find them in its
// JSON, so that records encoding/json had to decode are converted by the
// same code as scanned ones.
func KeyFieldsOf(k *Key) KeyFields {
	str := func(s string) []byte {
		if s == "" {
			return nil
		}
		return []byte(s)
	}
	tm := func(t *time.Time) []byte {
		if t == nil {
			return nil
		}
		b, _ := t.MarshalText()
		return b
	}
	arr := func(l []string) []byte {
		if l == nil {
			return nil
		}
		b, _ := json.Marshal(l)
		return b
	}
	created, _ := k.Created.MarshalText()
	return KeyFields{ID: []byte(k.ID), Kind: str(k.Kind), Tenant: str(k.Tenant), Name: []byte(k.Name), Prefix: str(k.Prefix),
		Digest: str(k.Digest), Created: created, Password: str(k.Password), Type: str(k.Type), Expires: tm(k.Expires),
		PrevDigest: str(k.PrevDigest), PrevUntil: tm(k.PrevUntil), Updated: tm(k.Updated), Client: str(k.Client), User: str(k.User), TokenLifetime: str(k.TokenLifetime),
		Tenants: arr(k.Tenants), Scopes: arr(k.Scopes), Modules: arr(k.Modules), Grants: arr(k.Grants)}
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
		rest = rest[1:]
		if len(rest) > 0 && rest[0] == '[' {
			arr, after, ok := scanArray(rest)
			if !ok {
				return false
			}
			switch string(name) {
			case "tenants":
				f.Tenants = arr
			case "scopes":
				f.Scopes = arr
			case "modules":
				f.Modules = arr
			case "grants":
				f.Grants = arr
			default:
				return false
			}
			rest = after
			if len(rest) == 0 {
				break
			}
			if rest[0] != ',' || len(rest) == 1 {
				return false
			}
			v = rest[1:]
			continue
		}
		val, rest, ok := scanString(rest)
		if !ok {
			return false
		}
		switch string(name) {
		case "kind":
			f.Kind = val
		case "password":
			f.Password = val
		case "type":
			f.Type = val
		case "expires":
			f.Expires = val
		case "prev_digest":
			f.PrevDigest = val
		case "prev_until":
			f.PrevUntil = val
		case "updated":
			f.Updated = val
		case "token_lifetime":
			f.TokenLifetime = val
		case "client":
			f.Client = val
		case "user":
			f.User = val
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

// scanArray reads an array of strings as scanString reads them at the
// start of v and returns it whole, brackets included, and what follows.
func scanArray(v []byte) (arr, rest []byte, ok bool) {
	i := 1
	if i < len(v) && v[i] == ']' {
		return v[:2], v[2:], true
	}
	for i < len(v) {
		_, r, ok := scanString(v[i:])
		if !ok || len(r) == 0 {
			return nil, nil, false
		}
		i = len(v) - len(r)
		switch v[i] {
		case ',':
			i++
		case ']':
			return v[:i+1], v[i+1:], true
		default:
			return nil, nil, false
		}
	}
	return nil, nil, false
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
