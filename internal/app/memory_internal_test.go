package app

import (
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tollgate/tollgate/authn"
	"github.com/tollgate/tollgate/internal/store"
)

// BenchmarkCredentialMemory measures what one credential costs in memory
// once loaded: the keys bucket's JSON records of n credentials (10 per
// tenant) go through the same decoding as at startup into an authn.Set,
// the raw records are dropped, and the live heap is compared with the
// heap before. It reports B/credential (issue 5: "memory per cached
// credential reported"). The embedded NATS server's own copy of the
// bucket is not included: with an external NATS it lives elsewhere.
func BenchmarkCredentialMemory(b *testing.B) {
	const n = 200_000
	for b.Loop() {
		entries := make(map[string][]byte, n)
		for i := range n {
			_, id, digest := authn.NewAPIKey()
			k := store.Key{ID: id, Tenant: fmt.Sprintf("tenant-%06d", i/10), Name: "default",
				Prefix: "tg_" + id + "_abc", Digest: fmt.Sprintf("%x", digest), Created: time.Now()}
			v, err := json.Marshal(&k)
			if err != nil {
				b.Fatal(err)
			}
			entries[id] = v
		}
		before := liveHeap()
		set := authn.NewSet()
		(&keyMirror{set: set, hint: n}).Snapshot(entries) // hint: as app.Run sizes it from the bucket
		after := liveHeap()
		if set.Len() != n {
			b.Fatalf("%d credentials loaded, want %d", set.Len(), n)
		}
		b.ReportMetric(float64(int64(after)-int64(before))/n, "B/credential")
		runtime.KeepAlive(set)
		runtime.KeepAlive(entries)
	}
}

func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
