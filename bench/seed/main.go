// Command seed fills a running tollgate's store for the scale benchmarks:
// it writes tenants and credentials (API keys, and with -users and
// -clients users and OAuth clients) straight into the NATS KV buckets
// (tollgate_tenants, tollgate_keys) in the record format of
// internal/store, with asynchronous JetStream publishes, which is far
// faster than one admin API call per key. tollgate must expose its
// embedded NATS (nats.listen in its config); its watchers pick the records
// up like any other change.
//
//	seed -nats nats://127.0.0.1:14222 -tenants 1000 -keys 1000 -plan bench -keys-out keys.txt
//
// Keys are spread round-robin over the tenants. The first -keys-out-max
// keys are written to -keys-out, one a line (the only copy of the secrets).
// With -gen N it only prints N fresh keys (for nginx's key map) and exits.
//
// Users (-users N) are named <prefix>-user-<n> (n from 0: a second run
// with the same -prefix rewrites the same users), of type api_only, each
// of one tenant (round-robin), and all have the password -user-password,
// whose argon2id hash is computed once at start with small parameters
// (t=1, m=64 KiB, p=1: a valid hash that is quick to check). Clients
// (-clients N) get a fresh client id and the digest of a fresh secret
// (not kept: no one can authenticate as them), the client_credentials
// grant, and tenants round-robin.
//
//	seed -nats nats://127.0.0.1:14222 -tenants 1000 -keys 800000 -users 100000 -clients 100000
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/store"
)

func main() {
	var (
		url      = flag.String("nats", "nats://127.0.0.1:4222", "NATS URL of tollgate's embedded server (nats.listen)")
		tenants  = flag.Int("tenants", 1, "tenants to create")
		keys     = flag.Int("keys", 1, "API keys to create, spread round-robin over the tenants")
		plan     = flag.String("plan", "bench", "plan of the tenants (must exist in tollgate's config)")
		prefix   = flag.String("prefix", "bench", "tenant id prefix: <prefix>-<n>")
		keysOut  = flag.String("keys-out", "", "write keys to this file, one a line")
		keysMax  = flag.Int("keys-out-max", 1<<30, "write at most this many keys to -keys-out")
		pending  = flag.Int("max-pending", 8192, "asynchronous publishes in flight")
		deadline = flag.Duration("timeout", 10*time.Minute, "give up after this long")
		writeTen = flag.Bool("write-tenants", true, "write the tenant records (false: only keys, for tenants seeded before)")
		gen      = flag.Int("gen", 0, "only print this many fresh keys, one a line, and exit (no NATS)")
		users    = flag.Int("users", 0, "users to create (type api_only, one tenant each, round-robin)")
		userPass = flag.String("user-password", "bench-password", "the password of every user")
		clients  = flag.Int("clients", 0, "OAuth clients to create (random secret digest), spread round-robin over the tenants")
	)
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("seed: ")
	if *gen > 0 {
		w := bufio.NewWriterSize(os.Stdout, 1<<20)
		for range *gen {
			key, _, _ := authn.NewAPIKey()
			w.WriteString(key)
			w.WriteByte('\n')
		}
		if err := w.Flush(); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *tenants < 1 || *keys < 0 || *users < 0 || *clients < 0 {
		log.Fatal("want -tenants >= 1 and -keys, -users, -clients >= 0")
	}
	var phc string
	if *users > 0 {
		if len(*userPass) < 8 || len(*userPass) > authn.MaxPassword {
			log.Fatalf("-user-password: want 8-%d bytes", authn.MaxPassword)
		}
		var err error
		phc, err = authn.NewHasher(authn.Argon2Params{Time: 1, Memory: 64, Threads: 1}, 1).Hash(context.Background(), []byte(*userPass))
		if err != nil {
			log.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *deadline)
	defer cancel()

	nc, err := nats.Connect(*url, nats.Name("tollgate-bench-seed"), nats.Timeout(10*time.Second))
	if err != nil {
		log.Fatalf("connect %s: %v", *url, err)
	}
	defer nc.Close()
	var failed atomic.Int64
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(*pending),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			if failed.Add(1) <= 5 {
				log.Printf("publish %s: %v", m.Subject, err)
			}
		}))
	if err != nil {
		log.Fatal(err)
	}
	for _, b := range []string{store.BucketTenants, store.BucketKeys} {
		if _, err := js.KeyValue(ctx, b); err != nil {
			log.Fatalf("bucket %s: %v (is tollgate running with this store?)", b, err)
		}
	}

	var out *bufio.Writer
	if *keysOut != "" {
		f, err := os.Create(*keysOut)
		if err != nil {
			log.Fatal(err)
		}
		defer func() {
			if err := out.Flush(); err != nil {
				log.Fatal(err)
			}
			if err := f.Close(); err != nil {
				log.Fatal(err)
			}
		}()
		out = bufio.NewWriterSize(f, 1<<20)
	}

	start := time.Now()
	now := start.UTC()
	tenantID := func(i int) string { return fmt.Sprintf("%s-%07d", *prefix, i) }
	publish := func(bucket, key string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			log.Fatal(err)
		}
		for {
			_, err = js.PublishAsync("$KV."+bucket+"."+key, b)
			if err == nil {
				return
			}
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				log.Fatalf("publish %s: %v", key, err)
			}
		}
	}
	for i := 0; i < *tenants && *writeTen; i++ {
		id := tenantID(i)
		publish(store.BucketTenants, id, &store.Tenant{ID: id, Plan: *plan, Created: now, Updated: now})
	}
	for j := 0; j < *keys; j++ {
		key, id, digest := authn.NewAPIKey()
		publish(store.BucketKeys, id, &store.Key{
			ID: id, Tenant: tenantID(j % *tenants), Name: fmt.Sprintf("bench-%d", j),
			Prefix: authn.KeyPrefix + id + "_", Digest: hex.EncodeToString(digest[:]), Created: now,
		})
		if out != nil && j < *keysMax {
			out.WriteString(key)
			out.WriteByte('\n')
		}
		if ctx.Err() != nil {
			log.Fatal("timed out")
		}
	}
	for j := 0; j < *users; j++ {
		name := fmt.Sprintf("%s-user-%07d", *prefix, j)
		publish(store.BucketKeys, store.CredentialKey(store.KindUser, name), &store.Key{
			ID: name, Kind: store.KindUser, Type: "api_only", Tenant: tenantID(j % *tenants),
			Password: phc, Created: now,
		})
		if ctx.Err() != nil {
			log.Fatal("timed out")
		}
	}
	for j := 0; j < *clients; j++ {
		id := authn.NewClient()
		_, digest := authn.NewClientSecret()
		publish(store.BucketKeys, store.CredentialKey(store.KindClient, id), &store.Key{
			ID: id, Kind: store.KindClient, Tenant: tenantID(j % *tenants), Name: fmt.Sprintf("bench-client-%d", j),
			Digest: hex.EncodeToString(digest[:]), Grants: []string{"client_credentials"}, Created: now,
		})
		if ctx.Err() != nil {
			log.Fatal("timed out")
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		log.Fatalf("timed out waiting for %d acknowledgements", js.PublishAsyncPending())
	}
	el := time.Since(start)
	if n := failed.Load(); n > 0 {
		log.Fatalf("%d publishes failed", n)
	}
	nt := *tenants
	if !*writeTen {
		nt = 0
	}
	if *users == 0 && *clients == 0 {
		fmt.Printf("seeded %d tenants and %d keys in %.1fs (%.0f records/s)\n",
			nt, *keys, el.Seconds(), float64(nt+*keys)/el.Seconds())
		return
	}
	fmt.Printf("seeded %d tenants, %d keys, %d users and %d clients in %.1fs (%.0f records/s)\n",
		nt, *keys, *users, *clients, el.Seconds(), float64(nt+*keys+*users+*clients)/el.Seconds())
}
