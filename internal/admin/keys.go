package admin

import (
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"time"
	"unique"

	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/internal/store"
)

// KeyView is an API key as lists show it: never the secret.
type KeyView struct {
	ID      string    `json:"id"`
	Tenant  string    `json:"tenant"`
	Name    string    `json:"name"`
	Prefix  string    `json:"prefix"`
	Created time.Time `json:"created"`
	// Key is set only in the answer that creates or regenerates the key.
	Key string `json:"key,omitempty"`
}

func keyView(c *authn.Credential) KeyView {
	return KeyView{ID: c.ID, Tenant: c.Tenant, Name: c.Name, Prefix: authn.KeyPrefix + c.ID + "_", Created: c.CreatedAt()}
}

func (a *API) keysOf(tenant string) []KeyView {
	var out []KeyView
	a.o.Credentials.Range(func(c *authn.Credential) bool {
		if c.Tenant == tenant && c.Method == authn.MethodAPIKey {
			out = append(out, keyView(c))
		}
		return true
	})
	return out
}

type keyInput struct {
	Name *string `json:"name"`
}

func (a *API) createKey(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenant(r)
	if err != nil {
		return err
	}
	var in keyInput
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if in.Name == nil || strings.TrimSpace(*in.Name) == "" || len(*in.Name) > 128 {
		return problems.New(400, problems.CodeInvalidField, "name", "required: 1-128 characters")
	}
	name := strings.TrimSpace(*in.Name)
	for _, k := range a.keysOf(t.ID) {
		if k.Name == name {
			return problems.Newf(409, problems.CodeConflict, "name", "tenant %q already has a key named %q", t.ID, name)
		}
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	for try := 0; try < 3; try++ {
		key, id, digest := authn.NewAPIKey()
		rec := &store.Key{ID: id, Tenant: t.ID, Name: name, Prefix: authn.KeyPrefix + id + "_",
			Digest: hex.EncodeToString(digest[:]), Created: a.o.Now().UTC()}
		if _, err := store.Create(ctx, a.o.Store.Keys, id, rec); errors.Is(err, store.ErrExists) {
			continue // a 71-bit id collided; draw again
		} else if err != nil {
			return storeErr(err)
		}
		v := KeyView{ID: id, Tenant: t.ID, Name: name, Prefix: rec.Prefix, Created: rec.Created, Key: key}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, 201, v)
		return nil
	}
	return problems.New(500, problems.CodeInternal, "", "could not draw a unique key id")
}

var keyOrder = map[string]func(a, b KeyView) bool{
	"id":      func(a, b KeyView) bool { return a.ID < b.ID },
	"name":    func(a, b KeyView) bool { return a.Name < b.Name },
	"created": func(a, b KeyView) bool { return a.Created.Before(b.Created) },
}

func (a *API) listKeys(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenant(r)
	if err != nil {
		return err
	}
	l, err := Paginate(r, a.keysOf(t.ID), "created", keyOrder)
	if err != nil {
		return err
	}
	writeJSON(w, 200, l)
	return nil
}

// keyRecord reads the stored record of the key in the path and checks
// that it belongs to the tenant in the path.
func (a *API) keyRecord(r *http.Request) (*store.Key, uint64, error) {
	t, err := a.tenant(r)
	if err != nil {
		return nil, 0, err
	}
	id := r.PathValue("key")
	notFound := problems.Newf(404, problems.CodeNotFound, "key", "tenant %q has no key %q", t.ID, id)
	if !authn.ValidID(id) {
		return nil, 0, notFound
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	var k store.Key
	rev, err := store.Get(ctx, a.o.Store.Keys, id, &k)
	if errors.Is(err, store.ErrNotFound) || err == nil && k.Tenant != t.ID {
		return nil, 0, notFound
	}
	if err != nil {
		return nil, 0, storeErr(err)
	}
	return &k, rev, nil
}

func (a *API) deleteKey(w http.ResponseWriter, r *http.Request) error {
	k, _, err := a.keyRecord(r)
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	if err := store.Delete(ctx, a.o.Store.Keys, k.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return storeErr(err)
	}
	a.o.Credentials.Delete(k.ID)
	w.WriteHeader(204)
	return nil
}

// regenerateKey gives a key a new secret: the old key stops working and
// the new one is shown once.
func (a *API) regenerateKey(w http.ResponseWriter, r *http.Request) error {
	k, rev, err := a.keyRecord(r)
	if err != nil {
		return err
	}
	key, digest := authn.WithID(k.ID)
	k.Digest = hex.EncodeToString(digest[:])
	ctx, cancel := a.ctx(r)
	defer cancel()
	if _, err := store.Update(ctx, a.o.Store.Keys, k.ID, k, rev); err != nil {
		return problems.New(409, problems.CodeConflict, "key", "the key changed meanwhile; retry").Wrap(err)
	}
	// The old digest must stop working here at once, not when the watcher
	// delivers: replace the local credential now.
	a.o.Credentials.Put(CredentialOf(k))
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, 200, KeyView{ID: k.ID, Tenant: k.Tenant, Name: k.Name, Prefix: k.Prefix, Created: k.Created, Key: key})
	return nil
}

// CredentialOf converts a stored key record into a credential; nil when
// the record is damaged.
func CredentialOf(k *store.Key) *authn.Credential {
	// A tenant's keys share its id, and most names repeat ("default"):
	// interned, each is held once however many credentials carry it.
	return NewCredential(authn.MethodAPIKey, k.ID, Intern(k.Tenant), Intern(k.Name), []byte(k.Digest), k.Created)
}

// Intern returns the canonical copy of s (unique.Make), so that a string
// many credentials carry is held once.
func Intern(s string) string { return unique.Make(s).Value() }

// NewCredential makes the credential of method of a stored record's fields
// (digest in hex); nil when the digest is not a SHA-256. The keys bucket
// holds API keys only so far.
func NewCredential(method authn.Method, id, tenant, name string, digest []byte, created time.Time) *authn.Credential {
	c := &authn.Credential{ID: id, Tenant: tenant, Name: name, Method: method, Created: authn.UnixNano(created)}
	if len(digest) != 2*len(c.Digest) {
		return nil
	}
	if _, err := hex.Decode(c.Digest[:], digest); err != nil {
		return nil
	}
	return c
}
