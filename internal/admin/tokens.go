package admin

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/access"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/internal/store"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// TokenView is an access token as the admin API shows it: whom it was
// issued to and what it may do; never the token or its digest.
type TokenView struct {
	ID string `json:"id"`
	// Client is the OAuth client, or the API key, the token was issued
	// to; User the user it acts for (the password grant).
	Client  string   `json:"client"`
	User    string   `json:"user,omitempty"`
	Tenant  string   `json:"tenant,omitempty"`
	Tenants []string `json:"tenants,omitempty"`
	// Scopes granted (all four when the token is not limited).
	Scopes []string `json:"scopes"`
	// Modules the token is limited to; absent: every module.
	Modules []string   `json:"modules,omitempty"`
	Issued  time.Time  `json:"issued"`
	Expires *time.Time `json:"expires,omitempty"`
}

// tokenView shows the token c.
func tokenView(c *authn.Credential) TokenView {
	v := TokenView{ID: c.ID, Tenant: c.Tenant, Tenants: c.Tenants(), Issued: c.CreatedAt()}
	if x := c.X; x != nil {
		v.Client, v.User = x.Client, x.User
	}
	s := c.Scopes
	if s == 0 {
		s = access.AllScopes
	}
	v.Scopes = strings.Fields(s.String())
	if v.Scopes == nil {
		v.Scopes = []string{}
	}
	if c.Modules != 0 {
		v.Modules = access.ModuleNames(c.Modules &^ access.ModuleNone)
		if v.Modules == nil {
			v.Modules = []string{}
		}
	}
	if c.Expires != 0 {
		t := time.Unix(0, c.Expires).UTC()
		v.Expires = &t
	}
	return v
}

// tokenFilter is what selects tokens: the client (or API key) they were
// issued to, the user they act for, or a tenant they may act for. Empty
// fields select every token.
type tokenFilter struct {
	Client *string `json:"client"`
	User   *string `json:"user"`
	Tenant *string `json:"tenant"`
}

func (f tokenFilter) match(c *authn.Credential) bool {
	if f.Client != nil && (c.X == nil || c.X.Client != *f.Client) {
		return false
	}
	if f.User != nil && (c.X == nil || c.X.User != *f.User) {
		return false
	}
	if f.Tenant != nil && c.Tenant != *f.Tenant && !slices.Contains(c.Tenants(), *f.Tenant) {
		return false
	}
	return true
}

var tokenOrder = map[string]func(a, b TokenView) bool{
	"id":      func(a, b TokenView) bool { return a.ID < b.ID },
	"created": func(a, b TokenView) bool { return a.Issued.Before(b.Issued) },
	"expires": func(a, b TokenView) bool {
		// A token without an expiry (none is issued so) sorts last.
		switch {
		case a.Expires == nil:
			return false
		case b.Expires == nil:
			return true
		}
		return a.Expires.Before(*b.Expires)
	},
}

// listTokens serves GET /v1/tokens: the tokens of this replica's set that
// have not expired, filtered by the query's client, user and tenant.
func (a *API) listTokens(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var f tokenFilter
	for _, p := range []struct {
		name string
		dst  **string
	}{{"client", &f.Client}, {"user", &f.User}, {"tenant", &f.Tenant}} {
		if q.Has(p.name) {
			v := q.Get(p.name)
			if v == "" {
				return problems.New(400, problems.CodeInvalidField, p.name, "must not be empty")
			}
			*p.dst = &v
		}
	}
	now := a.o.Now().UnixNano()
	var items []TokenView
	if a.o.Tokens != nil {
		a.o.Tokens.Range(func(c *authn.Credential) bool {
			if !c.Expired(now) && f.match(c) {
				items = append(items, tokenView(c))
			}
			return true
		})
	}
	// By id first, so that tokens issued at the same instant keep one
	// order from page to page (Paginate's sort is stable).
	slices.SortFunc(items, func(x, y TokenView) int { return strings.Compare(x.ID, y.ID) })
	l, err := Paginate(r, items, "created", tokenOrder)
	if err != nil {
		return err
	}
	writeJSON(w, 200, l)
	return nil
}

// token finds the token in the path that has not expired: in this
// replica's set, else in the store (a token issued on another replica a
// moment ago may not have arrived here yet).
func (a *API) token(r *http.Request) (*authn.Credential, error) {
	id := r.PathValue("token")
	notFound := problems.Newf(404, problems.CodeNotFound, "token", "no token %q (or it has expired)", id)
	if !authn.ValidTokenID(id) {
		return nil, notFound
	}
	now := a.o.Now().UnixNano()
	if a.o.Tokens != nil {
		if c := a.o.Tokens.Get([]byte(id)); c != nil {
			if c.Expired(now) {
				return nil, notFound
			}
			return c, nil
		}
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	var k store.Key
	_, err := store.Get(ctx, a.o.Store.Tokens, id, &k)
	if errors.Is(err, store.ErrNotFound) {
		k = store.Key{}
		_, err = a.o.Store.GetAtLeader(ctx, a.o.Store.Tokens, id, &k)
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, storeErr(err)
	}
	c := CredentialOf(&k)
	if c == nil || c.Method != authn.MethodToken || c.ID != id || c.Expired(now) {
		return nil, notFound
	}
	return c, nil
}

func (a *API) getToken(w http.ResponseWriter, r *http.Request) error {
	c, err := a.token(r)
	if err != nil {
		return err
	}
	writeJSON(w, 200, tokenView(c))
	return nil
}

// deleteToken serves DELETE /v1/tokens/{token}: the token stops working
// here at once, and on every replica as the deletion arrives there. A
// token already gone is answered the same.
func (a *API) deleteToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("token")
	if !authn.ValidTokenID(id) {
		return problems.Newf(404, problems.CodeNotFound, "token", "no token %q", id)
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	if err := store.Delete(ctx, a.o.Store.Tokens, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		return storeErr(err)
	}
	if a.o.Tokens != nil {
		a.o.Tokens.Delete(id)
	}
	w.WriteHeader(204)
	return nil
}

// revokeTokens serves POST /v1/tokens/revoke: the body names exactly one
// of client, user or tenant, and every token issued to that client (or
// API key), acting for that user, or able to act for that tenant is
// revoked. The answer counts the tokens revoked that had not expired.
func (a *API) revokeTokens(w http.ResponseWriter, r *http.Request) error {
	var in tokenFilter
	if err := decode(w, r, &in); err != nil {
		return err
	}
	given := ""
	for _, p := range []struct {
		name string
		v    *string
	}{{"client", in.Client}, {"user", in.User}, {"tenant", in.Tenant}} {
		if p.v == nil {
			continue
		}
		if given != "" {
			return problems.Newf(400, problems.CodeInvalidField, p.name, "give exactly one of client, user or tenant (%s is given)", given)
		}
		if *p.v == "" {
			return problems.New(400, problems.CodeInvalidField, p.name, "must not be empty")
		}
		given = p.name
	}
	if given == "" {
		return problems.New(400, problems.CodeInvalidField, "body", "give exactly one of client, user or tenant")
	}
	n, err := a.RevokeTokens(r, in.match)
	if err != nil {
		return err
	}
	writeJSON(w, 200, map[string]int{"revoked": n})
	return nil
}

// revokeParallel bounds the store deletions RevokeTokens has in flight.
const revokeParallel = 8

// RevokeTokens revokes every token of this replica's set that match
// selects, expired or not: each is deleted from the store (one already
// gone counts as deleted) and, once deleted, from the set at once; the
// other replicas drop it as the deletion arrives. It returns how many of
// those deleted had not expired, and the first failure to delete one
// (a 503 problem): the tokens not deleted keep working, and a retry
// finds them again.
func (a *API) RevokeTokens(r *http.Request, match func(c *authn.Credential) bool) (int, error) {
	if a.o.Tokens == nil {
		return 0, nil
	}
	var ids []string
	var live []bool
	now := a.o.Now().UnixNano()
	a.o.Tokens.Range(func(c *authn.Credential) bool {
		if c.Method == authn.MethodToken && match(c) {
			ids = append(ids, c.ID)
			live = append(live, !c.Expired(now))
		}
		return true
	})
	if len(ids) == 0 {
		return 0, nil
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	var revoked atomic.Int64
	var g errgroup.Group
	g.SetLimit(revokeParallel)
	for i, id := range ids {
		g.Go(func() error {
			if err := store.Delete(ctx, a.o.Store.Tokens, id); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			a.o.Tokens.Delete(id)
			if live[i] {
				revoked.Add(1)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return int(revoked.Load()), storeErr(err)
	}
	return int(revoked.Load()), nil
}

// revokeIssued revokes the tokens of the credential of kind with id,
// which has just been deleted or given a new secret: those issued to a
// client or an API key, or acting for a user. The credential's change is
// already made, so a failure is logged and answered 503 with msg, which
// says so and what to do.
func (a *API) revokeIssued(r *http.Request, kind, id, msg string) error {
	match := func(c *authn.Credential) bool { return c.X != nil && c.X.Client == id }
	if kind == store.KindUser {
		match = func(c *authn.Credential) bool { return c.X != nil && c.X.User == id }
	}
	n, err := a.RevokeTokens(r, match)
	if err == nil {
		return nil
	}
	a.o.Log.Warn("the tokens of a changed credential were not all revoked", zap.String("kind", kind), zap.String("id", id),
		zap.Int("revoked", n), zap.Error(err))
	return problems.New(503, problems.CodeStoreUnavailable, "", msg).Wrap(err)
}

// kindWord names a credential of kind in a message.
func kindWord(kind string) string {
	switch kind {
	case store.KindUser:
		return "user"
	case store.KindClient:
		return "client"
	}
	return "API key"
}
