package admin

import (
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unique"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/internal/store"
	"go.uber.org/zap"
)

// CredView is a credential of any kind as the admin API shows it: never
// the secret, except in the one answer that makes it.
type CredView struct {
	ID      string   `json:"id"`
	Kind    string   `json:"kind"`
	Tenant  string   `json:"tenant,omitempty"`
	Tenants []string `json:"tenants,omitempty"`
	Name    string   `json:"name,omitempty"`
	Prefix  string   `json:"prefix,omitempty"`
	// Type is a user's type: api_only or standard.
	Type string `json:"type,omitempty"`
	// Scopes granted (all four when the credential is not limited).
	Scopes []string `json:"scopes"`
	// Modules the credential is limited to; absent: every module.
	Modules []string `json:"modules,omitempty"`
	Grants  []string `json:"grants,omitempty"`
	// TokenLifetime of the access tokens issued to a client or key.
	TokenLifetime string     `json:"token_lifetime,omitempty"`
	Expires       *time.Time `json:"expires,omitempty"`
	// Previous is the secret a regeneration replaced, while it still
	// works (rotation with grace).
	Previous *Previous `json:"previous,omitempty"`
	Created  time.Time `json:"created"`
	// Key is set only in the answer that creates or regenerates an API
	// key; ClientSecret in the one that creates or regenerates a client.
	Key          string `json:"key,omitempty"`
	ClientSecret string `json:"client_secret,omitempty"`
}

// Previous is a replaced secret in its grace period.
type Previous struct {
	Expires time.Time `json:"expires"`
}

// KeyView is an API key as lists show it.
type KeyView = CredView

var kindNames = map[authn.Method]string{authn.MethodAPIKey: store.KindAPIKey, authn.MethodUser: store.KindUser, authn.MethodClient: store.KindClient}

// credView shows c as it is at now.
func credView(c *authn.Credential, now time.Time) CredView {
	v := CredView{ID: c.ID, Kind: kindNames[c.Method], Tenant: c.Tenant, Tenants: c.Tenants(), Name: c.Name,
		Created: c.CreatedAt(), Type: c.Type.String()}
	if c.Method == authn.MethodAPIKey {
		v.Prefix = authn.KeyPrefix + c.ID + "_"
	}
	p := c.Principal()
	v.Scopes = strings.Fields(p.Scopes.String())
	if v.Scopes == nil {
		v.Scopes = []string{}
	}
	if c.Modules != 0 {
		v.Modules = access.ModuleNames(c.Modules &^ access.ModuleNone)
		if v.Modules == nil {
			v.Modules = []string{}
		}
	}
	v.Grants = grantNames(c.Grants)
	if c.X != nil && c.X.TokenLifetime > 0 {
		v.TokenLifetime = c.X.TokenLifetime.String()
	}
	if c.Expires != 0 {
		t := time.Unix(0, c.Expires).UTC()
		v.Expires = &t
	}
	if x := c.X; x != nil && x.PrevUntil > now.UnixNano() {
		v.Previous = &Previous{Expires: time.Unix(0, x.PrevUntil).UTC()}
	}
	return v
}

func grantNames(g authn.Grants) []string {
	var out []string
	if g&authn.GrantPassword != 0 {
		out = append(out, "password")
	}
	if g&authn.GrantClientCredentials != 0 {
		out = append(out, "client_credentials")
	}
	return out
}

// credsOf lists the credentials of set that may act for tenant (all when
// tenant is empty).
func (a *API) credsOf(set *authn.Set, tenant string) []CredView {
	now := a.o.Now()
	var out []CredView
	set.Range(func(c *authn.Credential) bool {
		if tenant == "" || c.Tenant == tenant || slices.Contains(c.Tenants(), tenant) {
			out = append(out, credView(c, now))
		}
		return true
	})
	return out
}

// credInput is what every kind of credential takes at creation.
type credInput struct {
	Name    *string    `json:"name"`
	Scopes  []string   `json:"scopes"`
	Modules []string   `json:"modules"`
	Grants  []string   `json:"grants"`
	Expires *time.Time `json:"expires"`
	// TokenLifetime is how long access tokens issued to a client or API
	// key live ("10m", 1s to 24h).
	TokenLifetime *string `json:"token_lifetime"`
}

// limits checks in's scopes, modules, grants and expiry and writes them
// into rec.
func (a *API) limits(in *credInput, rec *store.Key) error {
	if in.Scopes != nil {
		if len(in.Scopes) == 0 {
			return problems.New(400, problems.CodeInvalidField, "scopes", "list at least one scope (leave scopes out for all four)")
		}
		for i, s := range in.Scopes {
			if config.ScopeNamed(s) == 0 {
				return problems.Newf(400, problems.CodeInvalidField, "scopes["+strconv.Itoa(i)+"]", "%q: want CREATE, READ, UPDATE or DELETE", s)
			}
		}
		rec.Scopes = dedup(in.Scopes)
	}
	if in.Modules != nil {
		if len(in.Modules) == 0 {
			return problems.New(400, problems.CodeInvalidField, "modules", "list at least one module (leave modules out for every module)")
		}
		known := knownModules(a.o.Config())
		for i, m := range in.Modules {
			if !known[m] {
				return problems.Newf(400, problems.CodeInvalidField, "modules["+strconv.Itoa(i)+"]", "%q: no such module in the configuration (modules, or module on a route)", m)
			}
		}
		rec.Modules = dedup(in.Modules)
	}
	for i, g := range in.Grants {
		if g != "password" && g != "client_credentials" {
			return problems.Newf(400, problems.CodeInvalidField, "grants["+strconv.Itoa(i)+"]", "%q: want password or client_credentials", g)
		}
	}
	if len(in.Grants) > 0 {
		rec.Grants = dedup(in.Grants)
	}
	if in.TokenLifetime != nil {
		d, err := config.ParseDuration(*in.TokenLifetime)
		if err != nil || d < time.Second || d > store.MaxTokenLifetime {
			return problems.New(400, problems.CodeInvalidField, "token_lifetime", "want a duration from 1s to 24h")
		}
		rec.TokenLifetime = *in.TokenLifetime
	}
	if in.Expires != nil {
		if !in.Expires.After(a.o.Now()) {
			return problems.New(400, problems.CodeInvalidField, "expires", "must be in the future")
		}
		t := in.Expires.UTC()
		rec.Expires = &t
	}
	return nil
}

// knownModules are the modules c names: in modules and on routes.
func knownModules(c *config.Config) map[string]bool {
	m := map[string]bool{}
	for name := range c.Modules {
		m[name] = true
	}
	for _, r := range c.Routes {
		if r.Module != "" {
			m[r.Module] = true
		}
	}
	return m
}

func dedup(l []string) []string {
	out := make([]string, 0, len(l))
	for _, s := range l {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// name checks a credential's name: required, 1–128 characters.
func name(in *credInput) (string, error) {
	if in.Name == nil || strings.TrimSpace(*in.Name) == "" || len(*in.Name) > 128 {
		return "", problems.New(400, problems.CodeInvalidField, "name", "required: 1-128 characters")
	}
	return strings.TrimSpace(*in.Name), nil
}

func (a *API) createKey(w http.ResponseWriter, r *http.Request) error {
	return a.createOfTenant(w, r, store.KindAPIKey, func() (string, string, [32]byte) {
		key, id, digest := authn.NewAPIKey()
		return id, key, digest
	})
}

// createOfTenant creates a key or a client of the tenant in the path:
// draw gives a fresh id, the secret shown once and its digest.
func (a *API) createOfTenant(w http.ResponseWriter, r *http.Request, kind string, draw func() (id, secret string, digest [32]byte)) error {
	t, err := a.tenant(r)
	if err != nil {
		return err
	}
	var in credInput
	if err := decode(w, r, &in); err != nil {
		return err
	}
	name, err := name(&in)
	if err != nil {
		return err
	}
	var base store.Key
	if err := a.limits(&in, &base); err != nil {
		return err
	}
	word := kindWord(kind)
	if slices.ContainsFunc(a.credsOf(a.setOf(kind), t.ID), func(v CredView) bool { return v.Name == name }) {
		return problems.Newf(409, problems.CodeConflict, "name", "tenant %q already has a %s named %q", t.ID, word, name)
	}
	if kind == store.KindClient {
		base.Kind = store.KindClient
		if base.Grants == nil {
			base.Grants = []string{"client_credentials"}
		}
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	for try := 0; try < 3; try++ {
		id, secret, digest := draw()
		rec := base
		rec.ID, rec.Tenant, rec.Name = id, t.ID, name
		if kind == store.KindAPIKey {
			rec.Prefix = authn.KeyPrefix + id + "_"
		}
		rec.Digest, rec.Created = hexDigest(digest), a.o.Now().UTC()
		if _, err := store.Create(ctx, a.o.Store.Keys, store.CredentialKey(kind, id), &rec); errors.Is(err, store.ErrExists) {
			continue // a random id collided; draw again
		} else if err != nil {
			return storeErr(err)
		}
		a.warnGrants(kind, id, rec.Grants)
		c := CredentialOf(&rec)
		a.setOf(kind).Put(c)
		return a.showSecret(w, 201, kind, c, secret)
	}
	return problems.Newf(500, problems.CodeInternal, "", "could not draw a unique %s id", word)
}

// showSecret answers with credential c of kind and, this once, its
// secret.
func (a *API) showSecret(w http.ResponseWriter, status int, kind string, c *authn.Credential, secret string) error {
	v := credView(c, a.o.Now())
	if kind == store.KindClient {
		v.ClientSecret = secret
	} else {
		v.Key = secret
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, v)
	return nil
}

// warnGrants logs the creation of a credential allowed the password
// grant, which RFC 9700 says new clients must not use.
func (a *API) warnGrants(kind, id string, grants []string) {
	if slices.Contains(grants, "password") {
		a.o.Log.Warn("credential allowed the OAuth2 password grant (RFC 9700: legacy clients only)", zap.String("kind", kind), zap.String("id", id))
	}
}

var credOrder = map[string]func(a, b CredView) bool{
	"id":      func(a, b CredView) bool { return a.ID < b.ID },
	"name":    func(a, b CredView) bool { return a.Name < b.Name },
	"created": func(a, b CredView) bool { return a.Created.Before(b.Created) },
}

func (a *API) listKeys(w http.ResponseWriter, r *http.Request) error {
	return a.listOfTenant(w, r, a.o.Credentials)
}

// listOfTenant answers the list of the credentials of set that may act
// for the tenant in the path.
func (a *API) listOfTenant(w http.ResponseWriter, r *http.Request, set *authn.Set) error {
	t, err := a.tenant(r)
	if err != nil {
		return err
	}
	l, err := Paginate(r, a.credsOf(set, t.ID), "created", credOrder)
	if err != nil {
		return err
	}
	writeJSON(w, 200, l)
	return nil
}

// keyRecord reads the stored record of the key in the path and checks
// that it belongs to the tenant in the path.
func (a *API) keyRecord(r *http.Request) (*store.Key, uint64, error) {
	return a.tenantRecord(r, store.KindAPIKey, "key", authn.ValidID)
}

// tenantRecord reads the stored credential of kind whose id is the path
// value name, and checks that it belongs to the tenant in the path.
func (a *API) tenantRecord(r *http.Request, kind, name string, valid func(string) bool) (*store.Key, uint64, error) {
	t, err := a.tenant(r)
	if err != nil {
		return nil, 0, err
	}
	id := r.PathValue(name)
	notFound := problems.Newf(404, problems.CodeNotFound, name, "tenant %q has no %s %q", t.ID, name, id)
	if !valid(id) {
		return nil, 0, notFound
	}
	return a.record(r, kind, id, t.ID, notFound)
}

// record reads the stored credential of kind with id; notFound when there
// is none, or when tenant is set and the credential is not its.
func (a *API) record(r *http.Request, kind, id, tenant string, notFound error) (*store.Key, uint64, error) {
	ctx, cancel := a.ctx(r)
	defer cancel()
	var k store.Key
	key := store.CredentialKey(kind, id)
	rev, err := store.Get(ctx, a.o.Store.Keys, key, &k)
	if errors.Is(err, store.ErrNotFound) {
		// A follower may not have applied the write that made it yet:
		// the leader decides before the answer is 404.
		k = store.Key{}
		rev, err = a.o.Store.GetAtLeader(ctx, a.o.Store.Keys, key, &k)
	}
	if errors.Is(err, store.ErrNotFound) || err == nil && (setKind(k.Kind) != kind || tenant != "" && k.Tenant != tenant) {
		return nil, 0, notFound
	}
	if err != nil {
		return nil, 0, storeErr(err)
	}
	return &k, rev, nil
}

func setKind(k string) string {
	if k == "" {
		return store.KindAPIKey
	}
	return k
}

func (a *API) getKey(w http.ResponseWriter, r *http.Request) error {
	k, _, err := a.keyRecord(r)
	if err != nil {
		return err
	}
	return a.showRecord(w, k)
}

func (a *API) showRecord(w http.ResponseWriter, k *store.Key) error {
	c := CredentialOf(k)
	if c == nil {
		return problems.New(500, problems.CodeInternal, "", "the stored credential is damaged")
	}
	writeJSON(w, 200, credView(c, a.o.Now()))
	return nil
}

func (a *API) deleteKey(w http.ResponseWriter, r *http.Request) error {
	k, _, err := a.keyRecord(r)
	if err != nil {
		return err
	}
	return a.deleteRecord(w, r, store.KindAPIKey, k.ID)
}

// deleteRecord deletes a credential from the store, and from this
// replica's set at once, then revokes the access tokens issued to it (or
// acting for the user).
func (a *API) deleteRecord(w http.ResponseWriter, r *http.Request, kind, id string) error {
	ctx, cancel := a.ctx(r)
	defer cancel()
	if err := store.Delete(ctx, a.o.Store.Keys, store.CredentialKey(kind, id)); err != nil && !errors.Is(err, store.ErrNotFound) {
		return storeErr(err)
	}
	a.setOf(kind).Delete(id)
	if err := a.revokeIssued(r, kind, id, "the "+kindWord(kind)+" was deleted, but not all of its access tokens could be revoked now: revoke them with POST /v1/tokens/revoke"); err != nil {
		return err
	}
	w.WriteHeader(204)
	return nil
}

func (a *API) setOf(kind string) *authn.Set {
	switch kind {
	case store.KindUser:
		return a.o.Users
	case store.KindClient:
		return a.o.Clients
	}
	return a.o.Credentials
}

type regenerateInput struct {
	// Grace keeps the old secret working this long ("24h"); without it
	// the old secret stops at once.
	Grace *string `json:"grace"`
}

// maxGrace bounds a rotation's grace period.
const maxGrace = 30 * 24 * time.Hour

// regenerate gives rec a new secret digest, keeping the old one for the
// grace the request asks for.
func (a *API) regenerate(w http.ResponseWriter, r *http.Request, rec *store.Key, digest [32]byte) error {
	var in regenerateInput
	if r.ContentLength != 0 {
		if err := decode(w, r, &in); err != nil {
			return err
		}
	}
	rec.PrevDigest, rec.PrevUntil = "", nil
	if in.Grace != nil {
		g, err := config.ParseDuration(*in.Grace)
		if err != nil || g < 0 || g > maxGrace {
			return problems.New(400, problems.CodeInvalidField, "grace", "want a duration from 0s to 30d")
		}
		if g > 0 {
			until := a.o.Now().Add(g).UTC()
			rec.PrevDigest, rec.PrevUntil = rec.Digest, &until
		}
	}
	rec.Digest = hexDigest(digest)
	now := a.o.Now().UTC()
	rec.Updated = &now
	return nil
}

// regenerateKey gives a key a new secret: the new one is shown once, the
// old one stops working at once or when the grace asked for ends.
func (a *API) regenerateKey(w http.ResponseWriter, r *http.Request) error {
	k, rev, err := a.keyRecord(r)
	if err != nil {
		return err
	}
	key, digest := authn.WithID(k.ID)
	return a.regenerateSecret(w, r, store.KindAPIKey, k, rev, key, digest)
}

// regenerateSecret gives the key or client k the secret whose digest is
// given, keeping the old one for the grace the request asks for, and
// revokes the access tokens issued to it (grace or not).
func (a *API) regenerateSecret(w http.ResponseWriter, r *http.Request, kind string, k *store.Key, rev uint64, secret string, digest [32]byte) error {
	if err := a.regenerate(w, r, k, digest); err != nil {
		return err
	}
	c, err := a.update(r, kind, k, rev)
	if err != nil {
		return err
	}
	if err := a.revokeIssued(r, kind, k.ID, "the "+kindWord(kind)+" was given a new secret, but not all of the access tokens issued to it could be revoked now: regenerate it again (the new secret is not shown)"); err != nil {
		return err
	}
	return a.showSecret(w, 200, kind, c, secret)
}

// update writes rec over revision rev and puts its credential in this
// replica's set at once: an old secret must stop working here when the
// answer says so, not when the watcher delivers.
func (a *API) update(r *http.Request, kind string, rec *store.Key, rev uint64) (*authn.Credential, error) {
	c := CredentialOf(rec)
	if c == nil {
		return nil, problems.New(500, problems.CodeInternal, "", "the credential could not be built")
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	if _, err := store.Update(ctx, a.o.Store.Keys, store.CredentialKey(kind, rec.ID), rec, rev); err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, store.ErrNotFound) {
			return nil, problems.New(409, problems.CodeConflict, "", "the credential changed meanwhile; retry").Wrap(err)
		}
		return nil, storeErr(err)
	}
	a.setOf(kind).Put(c)
	return c, nil
}

func hexDigest(d [32]byte) string { return hex.EncodeToString(d[:]) }

// Intern returns the canonical copy of s (unique.Make), so that a string
// many credentials carry is held once.
func Intern(s string) string { return unique.Make(s).Value() }
