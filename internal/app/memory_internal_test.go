package app

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/store"
)

// BenchmarkCredentialMemory measures what one credential costs in memory
// once loaded, for each kind: the keys bucket's JSON records of n
// credentials (10 per tenant) go through the same decoding as at startup
// into the credential sets, the raw records are dropped, and the live
// heap is compared with the heap before. It reports B/credential (issue
// 5: "memory per cached credential reported"). The embedded NATS
// server's own copy of the bucket is not included: with an external NATS
// it lives elsewhere.
//
// The kinds: api_key (no limits), api_key+limits (scopes and modules
// listed), client (a secret's digest, the client_credentials grant),
// user (one tenant, an argon2id hash) and user-3-tenants. Each also
// reports B/credential-own-set: the same without the (empty) sets of the
// other kinds.
func BenchmarkCredentialMemory(b *testing.B) {
	const n = 200_000
	phc := phcMaker(b)
	tenant := func(i int) string { return fmt.Sprintf("tenant-%06d", i/10) }
	kinds := []struct {
		name, kind string
		rec        func(i int) store.Key
	}{
		{"api_key", store.KindAPIKey, func(i int) store.Key {
			_, id, digest := authn.NewAPIKey()
			return store.Key{ID: id, Tenant: tenant(i), Name: "default",
				Prefix: authn.KeyPrefix + id + "_", Digest: hex.EncodeToString(digest[:]), Created: time.Now()}
		}},
		{"api_key+limits", store.KindAPIKey, func(i int) store.Key {
			_, id, digest := authn.NewAPIKey()
			return store.Key{ID: id, Tenant: tenant(i), Name: "default",
				Prefix: authn.KeyPrefix + id + "_", Digest: hex.EncodeToString(digest[:]), Created: time.Now(),
				Scopes: []string{"READ", "CREATE"}, Modules: []string{"invoices"}}
		}},
		{"client", store.KindClient, func(i int) store.Key {
			_, digest := authn.NewClientSecret()
			return store.Key{ID: authn.NewClient(), Kind: store.KindClient, Tenant: tenant(i), Name: "default",
				Digest: hex.EncodeToString(digest[:]), Grants: []string{"client_credentials"}, Created: time.Now()}
		}},
		{"user", store.KindUser, func(i int) store.Key {
			return store.Key{ID: fmt.Sprintf("user-%07d@example.com", i), Kind: store.KindUser, Type: "api_only",
				Tenant: tenant(i), Password: phc(), Created: time.Now()}
		}},
		{"user-3-tenants", store.KindUser, func(i int) store.Key {
			return store.Key{ID: fmt.Sprintf("user-%07d@example.com", i), Kind: store.KindUser, Type: "api_only",
				Tenants: []string{tenant(i), tenant(i + 10), tenant(i + 20)}, Password: phc(), Created: time.Now()}
		}},
	}
	for _, k := range kinds {
		b.Run(k.name, func(b *testing.B) {
			for b.Loop() {
				entries := make(map[string][]byte, n)
				for i := range n {
					rec := k.rec(i)
					v, err := json.Marshal(&rec)
					if err != nil {
						b.Fatal(err)
					}
					var f store.KeyFields
					if i == 0 && !store.ScanKey(v, &f) {
						b.Fatalf("%s records take the encoding/json path: %s", k.name, v)
					}
					entries[store.CredentialKey(k.kind, rec.ID)] = v
				}
				before := liveHeap()
				sets := credSets{authn.NewSet(), authn.NewSet(), authn.NewSet()}
				(&keyMirror{sets: sets, hint: n}).Snapshot(entries) // hint: as app.Run sizes it from the bucket
				after := liveHeap()
				if got := sets[setOf(k.kind)].Len(); got != n {
					b.Fatalf("%d credentials loaded, want %d", got, n)
				}
				b.ReportMetric(float64(int64(after)-int64(before))/n, "B/credential")
				// The mirror sizes the API key set for the whole bucket
				// (hint) and the others for none, so with n users the
				// figure above includes an empty API key set sized for n.
				// Without the sets of the other kinds:
				for i := range sets {
					if i != setOf(k.kind) {
						sets[i] = nil
					}
				}
				own := liveHeap()
				b.ReportMetric(float64(int64(own)-int64(before))/n, "B/credential-own-set")
				runtime.KeepAlive(sets)
				runtime.KeepAlive(entries)
			}
		})
	}
}

// phcMaker returns a function that gives a distinct argon2id PHC string
// per call, of the length the default parameters (m=65536,t=3,p=4) give:
// a real hash is computed once (small parameters, for speed) and its form
// is kept, with the default parameters and random salt and tag bytes.
func phcMaker(b *testing.B) func() string {
	h, err := authn.NewHasher(authn.Argon2Params{Time: 1, Memory: 64, Threads: 1}, 0).Hash(context.Background(), []byte("correct horse"))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Split(h, "$") // "", argon2id, v=19, m=64,t=1,p=1, salt, tag
	if len(f) != 6 || f[1] != "argon2id" {
		b.Fatalf("unexpected PHC string %q", h)
	}
	salt, err := base64.RawStdEncoding.DecodeString(f[4])
	if err != nil {
		b.Fatal(err)
	}
	tag, err := base64.RawStdEncoding.DecodeString(f[5])
	if err != nil {
		b.Fatal(err)
	}
	p := authn.DefaultArgon2
	head := fmt.Sprintf("$%s$%s$m=%d,t=%d,p=%d$", f[1], f[2], p.Memory, p.Time, p.Threads)
	return func() string {
		_, _ = rand.Read(salt)
		_, _ = rand.Read(tag)
		return head + base64.RawStdEncoding.EncodeToString(salt) + "$" + base64.RawStdEncoding.EncodeToString(tag)
	}
}

func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
