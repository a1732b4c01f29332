package app

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
	"unsafe"

	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/store"
)

func keyRecord(t *testing.T, id, tenant, name string) ([]byte, [32]byte) {
	t.Helper()
	var d [32]byte
	copy(d[:], id+"-digest-of-the-key-0123456789abcdef")
	v, err := json.Marshal(&store.Key{ID: id, Tenant: tenant, Name: name, Prefix: "tg_" + id + "_",
		Digest: fmt.Sprintf("%x", d), Created: time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	return v, d
}

// TestKeyMirrorLoad: the initial state goes straight into the set's next
// table; until it is complete the set answers from what it had. A later
// value of a key replaces the earlier one, a deletion or a damaged value
// removes it, a record stored under another id is refused, and records
// that are not in json.Marshal's form are decoded by encoding/json.
func TestKeyMirrorLoad(t *testing.T) {
	set := authn.NewSet()
	old := &authn.Credential{ID: "old", Tenant: "t0", Method: authn.MethodAPIKey}
	set.Replace([]*authn.Credential{old})
	m := &keyMirror{sets: credSets{set, authn.NewSet(), authn.NewSet()}, hint: 8}

	a1, _ := keyRecord(t, "a", "acme", "default")
	a2, da := keyRecord(t, "a", "acme", "renamed")
	b, db := keyRecord(t, "b", "acme", "default")
	c, _ := keyRecord(t, "c", "beta", "x")
	d, dd := keyRecord(t, "d", "beta", "été") // not ASCII: encoding/json's path
	e, _ := keyRecord(t, "e", "beta", "x")
	x, _ := keyRecord(t, "x", "beta", "x")
	spaced := []byte(" " + string(b)) // whitespace: encoding/json's path

	m.BeginLoad()
	m.Load("a", a1)
	m.Load("b", b)
	m.Load("c", c)
	m.Load("c", nil) // deleted
	m.Load("e", e)   // then damaged: gone
	m.Load("e", []byte(`{"id":`))
	m.Load("y", x)  // stored under another id
	m.Load("a", a2) // a later value wins
	m.Load("d", d)
	m.Load("s", spaced) // id "b" under key "s": refused
	if set.Get([]byte("old")) != old || set.Get([]byte("a")) != nil {
		t.Fatal("the set changed before the initial state was complete")
	}
	m.Loaded()

	if set.Get([]byte("old")) != nil {
		t.Error("a credential absent from the loaded state is still in the set")
	}
	for _, id := range []string{"c", "e", "x", "y", "s"} {
		if set.Get([]byte(id)) != nil {
			t.Errorf("credential %q is in the set", id)
		}
	}
	want := []struct {
		id, tenant, name string
		digest           [32]byte
	}{{"a", "acme", "renamed", da}, {"b", "acme", "default", db}, {"d", "beta", "été", dd}}
	for _, w := range want {
		got := set.Get([]byte(w.id))
		if got == nil {
			t.Errorf("credential %q missing", w.id)
			continue
		}
		if got.Tenant != w.tenant || got.Name != w.name || got.Digest != w.digest || got.Method != authn.MethodAPIKey ||
			!got.CreatedAt().Equal(time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)) {
			t.Errorf("credential %q = %+v", w.id, got)
		}
	}
	if set.Len() != len(want) {
		t.Errorf("%d credentials in the set, want %d", set.Len(), len(want))
	}
	ga, gb := set.Get([]byte("a")), set.Get([]byte("b"))
	if ga != nil && gb != nil && unsafe.StringData(ga.Tenant) != unsafe.StringData(gb.Tenant) {
		t.Error("two keys of one tenant hold two copies of its id")
	}

	// After the load, changes go to the set directly.
	m.Update("b", nil)
	m.Update("c", c)
	m.Update("a", []byte(`not json`))
	if set.Get([]byte("b")) != nil || set.Get([]byte("c")) == nil || set.Get([]byte("a")) != nil {
		t.Errorf("after updates: b=%v c=%v a=%v, want nil, present, nil", set.Get([]byte("b")), set.Get([]byte("c")), set.Get([]byte("a")))
	}
}
