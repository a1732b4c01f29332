package store_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// TestScanKeyMarshalled: a record as every writer stores it (json.Marshal
// of a Key) takes the fast path, with the same strings.
func TestScanKeyMarshalled(t *testing.T) {
	k := store.Key{ID: "k1Ab", Tenant: "acme", Name: "erp-prod", Prefix: "tg_k1Ab_",
		Digest:  "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		Created: time.Date(2026, 11, 24, 3, 4, 5, 123456789, time.UTC)}
	v, err := json.Marshal(&k)
	if err != nil {
		t.Fatal(err)
	}
	var f store.KeyFields
	if !store.ScanKey(v, &f) {
		t.Fatalf("ScanKey(%s) = false", v)
	}
	got := []string{string(f.ID), string(f.Tenant), string(f.Name), string(f.Prefix), string(f.Digest), string(f.Created)}
	want := []string{k.ID, k.Tenant, k.Name, k.Prefix, k.Digest, k.Created.Format(time.RFC3339Nano)}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("field %d = %q, want %q", i, got[i], want[i])
		}
	}
	if n := testing.AllocsPerRun(100, func() { store.ScanKey(v, &f) }); n != 0 {
		t.Errorf("ScanKey allocates %v times a record", n)
	}
}

// TestScanKeyDeclines: what the fast path leaves to encoding/json.
func TestScanKeyDeclines(t *testing.T) {
	for _, v := range []string{
		``, `{`, `[]`, `null`, ` {"id":"a"}`, `{"id": "a"}`, `{"id":"a",}`, `{"id":"a"`, `{"ID":"a"}`,
		`{"id":"a","extra":"b"}`, `{"id":null}`, `{"id":1}`, `{"id":"a\"b"}`, `{"id":"é"}`, `{"id":"a` + "\x01" + `"}`,
		`{"id":"a"}x`, `{"id":"a"},`, `{"id":"a""tenant":"b"}`, `{"id"}`, `{"id":}`,
	} {
		var f store.KeyFields
		if store.ScanKey([]byte(v), &f) {
			t.Errorf("ScanKey(%q) = true, want false", v)
		}
	}
}

// FuzzScanKey: whenever the fast path takes a record, encoding/json takes
// it too and reads the same strings.
func FuzzScanKey(f *testing.F) {
	f.Add([]byte(`{"id":"k1","tenant":"acme","name":"default","prefix":"tg_k1_","digest":"00ff","created":"2026-11-24T03:04:05Z"}`))
	f.Add([]byte(`{"id":"a","id":"b"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"name":"a b","tenant":""}`))
	f.Add([]byte(`{"id":"bob","kind":"user","tenants":["a","b"],"scopes":["READ"],"modules":[],"password":"$argon2id$v=19$m=64,t=1,p=1$x$y","type":"api_only"}`))
	f.Add([]byte(`{"id":"c","grants":["password","x"],"expires":"2027-01-01T00:00:00Z","prev_digest":"ab","prev_until":"2027-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, v []byte) {
		var fs store.KeyFields
		if !store.ScanKey(v, &fs) {
			return
		}
		var k struct {
			ID, Kind, Tenant, Name, Prefix, Digest, Created string
			Password, Type, Expires, PrevDigest, PrevUntil  string
			Updated                                         string
			Tenants, Scopes, Modules, Grants                []string
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(v, &raw); err != nil {
			t.Fatalf("ScanKey took %q, which encoding/json refuses: %v", v, err)
		}
		for name, f := range map[string]any{"id": &k.ID, "kind": &k.Kind, "tenant": &k.Tenant, "name": &k.Name, "prefix": &k.Prefix,
			"digest": &k.Digest, "created": &k.Created, "password": &k.Password, "type": &k.Type, "expires": &k.Expires,
			"prev_digest": &k.PrevDigest, "prev_until": &k.PrevUntil, "updated": &k.Updated,
			"tenants": &k.Tenants, "scopes": &k.Scopes, "modules": &k.Modules, "grants": &k.Grants} {
			if r, ok := raw[name]; ok {
				if err := json.Unmarshal(r, f); err != nil {
					t.Fatalf("%q: %s: %v", v, name, err)
				}
			}
		}
		list := func(arr []byte) string {
			var l []string
			store.Strings(arr, func(s []byte) { l = append(l, string(s)) })
			return strings.Join(l, "\x00")
		}
		got := []string{string(fs.ID), string(fs.Kind), string(fs.Tenant), string(fs.Name), string(fs.Prefix), string(fs.Digest), string(fs.Created),
			string(fs.Password), string(fs.Type), string(fs.Expires), string(fs.PrevDigest), string(fs.PrevUntil), string(fs.Updated),
			list(fs.Tenants), list(fs.Scopes), list(fs.Modules), list(fs.Grants)}
		want := []string{k.ID, k.Kind, k.Tenant, k.Name, k.Prefix, k.Digest, k.Created, k.Password, k.Type, k.Expires, k.PrevDigest,
			k.PrevUntil, k.Updated, strings.Join(k.Tenants, "\x00"), strings.Join(k.Scopes, "\x00"), strings.Join(k.Modules, "\x00"),
			strings.Join(k.Grants, "\x00")}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%q: field %d is %q by ScanKey, %q by encoding/json", v, i, got[i], want[i])
			}
		}
	})
}
