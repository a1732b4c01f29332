package admin_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/admin"
	"github.com/tollgate/tollgate/internal/problems"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// The tokens endpoints list the tokens of the set that have not expired,
// never showing a token or its digest, and revoke them one by one, by
// client, user or tenant, and with the user they act for: each revoked
// token is gone from the store and from the set.
func TestTokens(t *testing.T) {
	const adminToken = "tga_test_token_0123456789"
	s := storetest.Open(t)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tokens, users := authn.NewSet(), authn.NewSet()
	a := admin.New(admin.Options{Store: s, Tokens: tokens, Users: users, Credentials: authn.NewSet(), Clients: authn.NewSet(),
		TokenDigest: sha256.Sum256([]byte(adminToken)), Now: func() time.Time { return now }})
	ctx := context.Background()
	digest := sha256.Sum256([]byte("a token"))
	client := authn.NewClient()
	_, key, _ := authn.NewAPIKey()

	// put stores token i and puts it in the set.
	put := func(i int, client, user string, tenants []string, expires time.Duration) string {
		t.Helper()
		id := fmt.Sprintf("tok%013d", i)
		exp := now.Add(expires)
		if expires > 0 {
			exp = exp.Add(time.Duration(i) * time.Minute) // later tokens expire later
		}
		rec := store.Key{ID: id, Kind: store.KindToken, Tenants: tenants, Client: client, User: user,
			Scopes: []string{"READ"}, Digest: hex.EncodeToString(digest[:]), Created: now.Add(time.Duration(i) * time.Second), Expires: &exp}
		if _, err := store.Create(ctx, s.Tokens, id, &rec); err != nil {
			t.Fatal(err)
		}
		c := admin.CredentialOf(&rec)
		if c == nil {
			t.Fatal("the token record makes no credential")
		}
		tokens.Put(c)
		return id
	}
	t1 := put(1, client, "", []string{"acme"}, time.Hour)
	t2 := put(2, client, "bob", []string{"acme"}, time.Hour)
	t3 := put(3, key, "bob", []string{"acme", "beta"}, time.Hour)
	t4 := put(4, authn.NewClient(), "", []string{"beta"}, time.Hour)
	t5 := put(5, client, "", []string{"acme"}, -time.Minute) // expired
	t6 := put(6, key, "carol", []string{"beta"}, time.Hour)

	do := func(method, path, body string) (int, string) {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	list := func(query string) []string {
		t.Helper()
		code, body := do("GET", "/v1/tokens"+query, "")
		if code != 200 {
			t.Fatalf("GET /v1/tokens%s: %d %s", query, code, body)
		}
		if strings.Contains(body, hex.EncodeToString(digest[:])) || strings.Contains(body, "digest") {
			t.Errorf("the list shows a digest: %s", body)
		}
		var l admin.List[admin.TokenView]
		if err := json.Unmarshal([]byte(body), &l); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, v := range l.Items {
			ids = append(ids, v.ID)
		}
		return ids
	}
	want := func(query string, ids ...string) {
		t.Helper()
		if got := list(query); !slices.Equal(got, ids) {
			t.Errorf("GET /v1/tokens%s: %v, want %v", query, got, ids)
		}
	}
	want("", t1, t2, t3, t4, t6)
	want("?orderBy=expires&desc=true", t6, t4, t3, t2, t1)
	want("?client="+client, t1, t2)
	want("?user=bob", t2, t3)
	want("?tenant=beta&orderBy=id", t3, t4, t6)
	want("?client="+key+"&tenant=beta", t3, t6)

	// gone checks that the tokens are neither in the store nor in the set.
	gone := func(ids ...string) {
		t.Helper()
		for _, id := range ids {
			var k store.Key
			if _, err := store.Get(ctx, s.Tokens, id, &k); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("token %s in the store: %v", id, err)
			}
			if tokens.Get([]byte(id)) != nil {
				t.Errorf("token %s in the set", id)
			}
		}
	}
	field := func(body string) string {
		var pb problems.Body
		if err := json.Unmarshal([]byte(body), &pb); err != nil || len(pb.Problems) == 0 {
			t.Fatalf("not a problems body: %s", body)
		}
		return pb.Problems[0].Field
	}

	code, body := do("GET", "/v1/tokens/"+t2, "")
	var v admin.TokenView
	if err := json.Unmarshal([]byte(body), &v); code != 200 || err != nil || v.Client != client || v.User != "bob" || v.Tenant != "acme" ||
		!slices.Equal(v.Scopes, []string{"READ"}) || v.Expires == nil || !v.Expires.Equal(now.Add(time.Hour+2*time.Minute)) {
		t.Errorf("GET %s: %d %s", t2, code, body)
	}
	for _, id := range []string{t5, "tok9999999999999", "bad"} {
		if code, body := do("GET", "/v1/tokens/"+id, ""); code != 404 || field(body) != "token" {
			t.Errorf("GET %s: %d %s, want 404 naming token", id, code, body)
		}
	}

	for range 2 { // again: already gone is done too
		if code, body := do("DELETE", "/v1/tokens/"+t1, ""); code != 204 {
			t.Fatalf("DELETE %s: %d %s", t1, code, body)
		}
	}
	gone(t1)

	for _, tc := range []struct{ body, field string }{
		{`{}`, "body"},
		{`{"client":"` + client + `","user":"bob"}`, "user"},
		{`{"tenant":""}`, "tenant"},
		{`{"token":"x"}`, "token"},
	} {
		if code, body := do("POST", "/v1/tokens/revoke", tc.body); code != 400 || field(body) != tc.field {
			t.Errorf("revoke %s: %d %s, want 400 naming %s", tc.body, code, body, tc.field)
		}
	}
	revoke := func(body string, n int) {
		t.Helper()
		code, got := do("POST", "/v1/tokens/revoke", body)
		if want := fmt.Sprintf(`{"revoked":%d}`, n); code != 200 || strings.TrimSpace(got) != want {
			t.Errorf("revoke %s: %d %s, want %s", body, code, got, want)
		}
	}
	revoke(`{"client":"`+client+`"}`, 1) // t2; the expired t5 is deleted too, not counted
	gone(t2, t5)
	revoke(`{"user":"bob"}`, 1)
	gone(t3)
	revoke(`{"user":"bob"}`, 0)

	// Deleting a user revokes the tokens acting for it.
	urec := store.Key{ID: "carol", Kind: store.KindUser, Tenant: "beta", Password: "$argon2id$x", Created: now}
	if _, err := store.Create(ctx, s.Keys, store.CredentialKey(store.KindUser, "carol"), &urec); err != nil {
		t.Fatal(err)
	}
	if code, body := do("DELETE", "/v1/users/carol", ""); code != 204 {
		t.Fatalf("DELETE /v1/users/carol: %d %s", code, body)
	}
	gone(t6)

	revoke(`{"tenant":"beta"}`, 1)
	gone(t4)
	want("")
	if tokens.Len() != 0 {
		t.Errorf("%d tokens left in the set", tokens.Len())
	}
}
