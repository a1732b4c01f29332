package admin

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/internal/store"
)

// userInput creates or changes a user.
type userInput struct {
	credInput
	Username *string  `json:"username"`
	Password *string  `json:"password"`
	Type     *string  `json:"type"`
	Tenants  []string `json:"tenants"`
}

// Passwords are 8–128 bytes: at least what NIST SP 800-63B asks of a
// chosen secret, at most what a Basic header is read with.
const minPassword = 8

func checkPassword(p *string) error {
	if p == nil || len(*p) < minPassword || len(*p) > authn.MaxPassword {
		return problems.Newf(400, problems.CodeInvalidField, "password", "required: %d-%d bytes", minPassword, authn.MaxPassword)
	}
	return nil
}

// hashPassword hashes p with the configured argon2id parameters.
func (a *API) hashPassword(r *http.Request, p string) (string, error) {
	if a.o.Hasher == nil {
		return "", problems.New(500, problems.CodeInternal, "", "no password hasher")
	}
	h, err := a.o.Hasher.Hash(r.Context(), []byte(p))
	if err != nil {
		return "", problems.New(503, problems.CodeUnavailable, "", "the password could not be hashed now; retry").Wrap(err)
	}
	return h, nil
}

// userFields checks the fields a user's creation or change sets.
func (a *API) userFields(in *userInput, rec *store.Key) error {
	if in.Type != nil {
		if *in.Type != "api_only" && *in.Type != "standard" {
			return problems.Newf(400, problems.CodeInvalidField, "type", "%q: want api_only or standard", *in.Type)
		}
		rec.Type = *in.Type
	}
	if in.Tenants != nil {
		if len(in.Tenants) == 0 {
			return problems.New(400, problems.CodeInvalidField, "tenants", "list at least one tenant")
		}
		for i, t := range in.Tenants {
			if _, err := a.tenants.Tenant(t); err != nil {
				return problems.Newf(400, problems.CodeInvalidField, "tenants["+strconv.Itoa(i)+"]", "no tenant %q", t)
			}
		}
		rec.Tenant, rec.Tenants = "", dedup(in.Tenants)
		if len(rec.Tenants) == 1 {
			rec.Tenant, rec.Tenants = rec.Tenants[0], nil
		}
	}
	if in.Name != nil {
		if len(*in.Name) > 128 {
			return problems.New(400, problems.CodeInvalidField, "name", "at most 128 characters")
		}
		rec.Name = *in.Name
	}
	return a.limits(&in.credInput, rec)
}

func (a *API) createUser(w http.ResponseWriter, r *http.Request) error {
	var in userInput
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if in.Username == nil || !authn.ValidUsername(*in.Username) {
		return problems.Newf(400, problems.CodeInvalidField, "username", "required: 1-%d letters, digits or ._@+-", authn.MaxUsername)
	}
	if err := checkPassword(in.Password); err != nil {
		return err
	}
	if in.Tenants == nil {
		return problems.New(400, problems.CodeInvalidField, "tenants", "required: the tenants the user may act for")
	}
	if in.Type == nil {
		in.Type = new(string)
		*in.Type = "standard"
	}
	rec := store.Key{ID: *in.Username, Kind: store.KindUser, Created: a.o.Now().UTC()}
	if err := a.userFields(&in, &rec); err != nil {
		return err
	}
	if a.o.Users.Get([]byte(rec.ID)) != nil {
		return problems.Newf(409, problems.CodeConflict, "username", "user %q exists", rec.ID)
	}
	h, err := a.hashPassword(r, *in.Password)
	if err != nil {
		return err
	}
	rec.Password = h
	a.warnGrants(store.KindUser, rec.ID, rec.Grants)
	ctx, cancel := a.ctx(r)
	defer cancel()
	if _, err := store.Create(ctx, a.o.Store.Keys, store.CredentialKey(store.KindUser, rec.ID), &rec); errors.Is(err, store.ErrExists) {
		return problems.Newf(409, problems.CodeConflict, "username", "user %q exists", rec.ID)
	} else if err != nil {
		return storeErr(err)
	}
	c := CredentialOf(&rec)
	a.o.Users.Put(c)
	writeJSON(w, 201, credView(c, a.o.Now()))
	return nil
}

func (a *API) listUsers(w http.ResponseWriter, r *http.Request) error {
	tenant := r.URL.Query().Get("tenant")
	l, err := Paginate(r, a.credsOf(a.o.Users, tenant), "id", credOrder)
	if err != nil {
		return err
	}
	writeJSON(w, 200, l)
	return nil
}

func (a *API) userRecord(r *http.Request) (*store.Key, uint64, error) {
	name := r.PathValue("username")
	notFound := problems.Newf(404, problems.CodeNotFound, "username", "no user %q", name)
	if !authn.ValidUsername(name) {
		return nil, 0, notFound
	}
	return a.record(r, store.KindUser, name, "", notFound)
}

func (a *API) getUser(w http.ResponseWriter, r *http.Request) error {
	k, _, err := a.userRecord(r)
	if err != nil {
		return err
	}
	return a.showRecord(w, k)
}

func (a *API) patchUser(w http.ResponseWriter, r *http.Request) error {
	k, rev, err := a.userRecord(r)
	if err != nil {
		return err
	}
	var in userInput
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if in.Username != nil && *in.Username != k.ID {
		return problems.New(400, problems.CodeInvalidField, "username", "a user cannot be renamed: create another")
	}
	if in.Password != nil {
		return problems.New(400, problems.CodeInvalidField, "password", "change it with POST /v1/users/{username}/password")
	}
	if err := a.userFields(&in, k); err != nil {
		return err
	}
	// Tokens carry what the user held when they were issued: a change of
	// tenants, scopes or modules ends them, and the next login gets the new.
	return a.changeUser(w, r, k, rev, "the user was changed")
}

// changeUser writes a changed user, revokes the access tokens that act
// for it, and answers with the user; what says what changed.
func (a *API) changeUser(w http.ResponseWriter, r *http.Request, k *store.Key, rev uint64, what string) error {
	now := a.o.Now().UTC()
	k.Updated = &now
	c, err := a.update(r, store.KindUser, k, rev)
	if err != nil {
		return err
	}
	if err := a.revokeIssued(r, store.KindUser, k.ID, what+", but not all of the user's access tokens could be revoked now: revoke them with POST /v1/tokens/revoke"); err != nil {
		return err
	}
	writeJSON(w, 200, credView(c, a.o.Now()))
	return nil
}

func (a *API) deleteUser(w http.ResponseWriter, r *http.Request) error {
	k, _, err := a.userRecord(r)
	if err != nil {
		return err
	}
	return a.deleteRecord(w, r, store.KindUser, k.ID)
}

// setPassword replaces a user's password: the old one stops working on
// every replica as the change arrives there.
func (a *API) setPassword(w http.ResponseWriter, r *http.Request) error {
	k, rev, err := a.userRecord(r)
	if err != nil {
		return err
	}
	var in struct {
		Password *string `json:"password"`
	}
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if err := checkPassword(in.Password); err != nil {
		return err
	}
	if k.Password, err = a.hashPassword(r, *in.Password); err != nil {
		return err
	}
	// Sessions of the old password end with it.
	return a.changeUser(w, r, k, rev, "the password was changed")
}

// Clients.

func (a *API) createClient(w http.ResponseWriter, r *http.Request) error {
	return a.createOfTenant(w, r, store.KindClient, func() (string, string, [32]byte) {
		secret, digest := authn.NewClientSecret()
		return authn.NewClient(), secret, digest
	})
}

func (a *API) listClients(w http.ResponseWriter, r *http.Request) error {
	return a.listOfTenant(w, r, a.o.Clients)
}

func (a *API) clientRecord(r *http.Request) (*store.Key, uint64, error) {
	return a.tenantRecord(r, store.KindClient, "client", authn.ValidClientID[string])
}

func (a *API) getClient(w http.ResponseWriter, r *http.Request) error {
	k, _, err := a.clientRecord(r)
	if err != nil {
		return err
	}
	return a.showRecord(w, k)
}

func (a *API) deleteClient(w http.ResponseWriter, r *http.Request) error {
	k, _, err := a.clientRecord(r)
	if err != nil {
		return err
	}
	return a.deleteRecord(w, r, store.KindClient, k.ID)
}

func (a *API) regenerateClient(w http.ResponseWriter, r *http.Request) error {
	k, rev, err := a.clientRecord(r)
	if err != nil {
		return err
	}
	secret, digest := authn.NewClientSecret()
	return a.regenerateSecret(w, r, store.KindClient, k, rev, secret, digest)
}
