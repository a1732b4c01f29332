package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// verifyWebhook is the README's example of checking a webhook, as a
// receiver writes it.
func verifyWebhook(secret string, r *http.Request, body []byte) error {
	var ts string
	var sigs []string
	for _, part := range strings.Split(r.Header.Get("Tollgate-Signature"), ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("no timestamp")
	}
	if age := time.Since(time.Unix(sec, 0)); age > 5*time.Minute || age < -5*time.Minute {
		return errors.New("timestamp too far from now")
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range sigs {
		if got, err := hex.DecodeString(s); err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("bad signature")
}

// startSoloNATS runs one nats-server process with JetStream, fsyncing
// every write, that can be killed and started again on its port and store.
func startSoloNATS(t *testing.T) *natsNode {
	t.Helper()
	dir := t.TempDir()
	nd := &natsNode{t: t, name: "solo", port: freePort(t), conf: filepath.Join(dir, "nats.conf")}
	conf := fmt.Sprintf("server_name: solo\nlisten: 127.0.0.1:%d\njetstream { store_dir: %q, sync_interval: always, max_memory_store: 64MB, max_file_store: 1GB }\n",
		nd.port, filepath.Join(dir, "js"))
	if err := os.WriteFile(nd.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	nd.start(natsServerBinary(t))
	t.Cleanup(func() { nd.stop(syscall.SIGKILL) })
	return nd
}

// TestNotificationsExactlyOnce: three replicas of the real binary share
// one NATS server; a tenant on a plan of 200 requests with webhooks at
// 80% and 100% is driven past both while one replica is killed with -9
// and the NATS server is killed and restarted around the crossing. The
// receiver acknowledges exactly one 80% and one 100% webhook, each with a
// valid signature.
func TestNotificationsExactlyOnce(t *testing.T) {
	const secret = "whsec_e2e_0123456789abcdef"
	t.Setenv("E2E_HOOK_SECRET", secret)
	var (
		mu      sync.Mutex
		acked   = map[string]int{}
		tries   = map[string]int{}
		firstAt = map[string]time.Time{}
		bad     []string
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id := r.Header.Get("Tollgate-Notification-Id")
		mu.Lock()
		defer mu.Unlock()
		tries[id]++
		if err := verifyWebhook(secret, r, body); err != nil {
			bad = append(bad, id+": "+err.Error())
			w.WriteHeader(401)
			return
		}
		var b struct {
			ID, Kind, Tenant string
			Threshold, Limit int64
		}
		if err := json.Unmarshal(body, &b); err != nil || b.ID != id || b.Kind != "usage_threshold" || b.Tenant != "acme" || b.Limit != 200 {
			bad = append(bad, fmt.Sprintf("%s: body %s", id, body))
			w.WriteHeader(400)
			return
		}
		acked[id]++
		if _, ok := firstAt[id]; !ok {
			firstAt[id] = time.Now()
		}
		w.WriteHeader(200)
	}))
	defer hook.Close()

	up := backend(t)
	nd := startSoloNATS(t)
	natsURL := fmt.Sprintf(`{url: "nats://127.0.0.1:%d"}`, nd.port)
	var reps []*instance
	for range 3 {
		in := configured(t, natsURL, fmt.Sprintf(`quota: {max_lease: 20, lease_idle: 2s, lease_ttl: 3s}
log: {access: false}
plans:
  pro:
    monthly_requests: 200
    notify: {at: ["80%%", "100%%"], url: "%s/hooks/tollgate", secret: "${E2E_HOOK_SECRET}"}
routes:
  - {path_prefix: /, upstream: http://%s, auth: [api_key]}
`, hook.URL, up))
		in.spawn()
		reps = append(reps, in)
	}
	for _, in := range reps {
		in.waitReady()
	}
	a, b, c := reps[0], reps[1], reps[2]
	key := newTenantKey(t, a, replicaToken, "acme")
	period := time.Now().UTC().Format("2006-01")
	id80, id100 := "usage.acme."+period+".80.200", "usage.acme."+period+".100.200"

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var served, refused atomic.Int64
	var killed, restarted atomic.Bool
	var downAt, upAt time.Time // written before restarted is set
	var faults sync.WaitGroup
	faults.Add(1)
	go func() {
		defer faults.Done()
		// kill -9 of a replica holding leases, then the NATS server,
		// killed too, while usage nears 80% (the ledger total, which
		// counts what leases reserve, runs ahead of what is served).
		if !waitFor(ctx, 2*time.Millisecond, func() bool { return served.Load() >= 60 }) {
			return
		}
		c.kill()
		killed.Store(true)
		if !waitFor(ctx, 2*time.Millisecond, func() bool { return served.Load() >= 130 }) {
			return
		}
		nd.stop(syscall.SIGKILL)
		downAt = time.Now()
		time.Sleep(time.Second) // the server stays down: the fault, not a synchronization
		nd.start(natsServerBinary(t))
		upAt = time.Now()
		restarted.Store(true)
	}()
	// Paced clients, one per replica (c's stop when it dies), until the
	// limit answers 429 after the restart.
	var wg sync.WaitGroup
	hc := &http.Client{Timeout: 5 * time.Second}
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			target := reps[i%3]
			for n := 0; n < 3000 && ctx.Err() == nil && !(restarted.Load() && refused.Load() >= 30); n++ {
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+target.proxy+"/x", nil)
				req.Header.Set("X-API-Key", key)
				resp, err := hc.Do(req)
				if err != nil {
					if target == c && killed.Load() {
						return
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case 200:
					served.Add(1)
				case 429:
					refused.Add(1)
				}
				time.Sleep(15 * time.Millisecond) // pacing: ~400 requests/s in all
			}
		}()
	}
	wg.Wait()
	faults.Wait()
	if !restarted.Load() {
		t.Fatalf("the faults did not happen: %d served, %d refused", served.Load(), refused.Load())
	}
	crossedBy := time.Now()
	t.Logf("%d served, %d refused; replica killed, NATS restarted", served.Load(), refused.Load())

	// Both webhooks arrive, and both records are delivered on every
	// surviving replica's view (none pending: nothing more will be sent).
	checkFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		mu.Lock()
		n80, n100 := acked[id80], acked[id100]
		mu.Unlock()
		if n80 == 0 || n100 == 0 {
			return fmt.Errorf("acknowledged %d × 80%%, %d × 100%%", n80, n100)
		}
		for _, in := range []*instance{a, b} {
			for status, want := range map[string]int{"delivered": 2, "pending": 0} {
				code, body := clusterAdmin(ctx, hc, in, "GET", "/v1/notifications?tenant=acme&status="+status, "")
				var l struct{ Total int }
				if err := json.Unmarshal(body, &l); code != 200 || err != nil || l.Total != want {
					return fmt.Errorf("%s: GET /v1/notifications?status=%s: %d %s, want %d", in.admin, status, code, body, want)
				}
			}
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if acked[id80] != 1 || acked[id100] != 1 || len(acked) != 2 {
		t.Errorf("acknowledged %v, want %s and %s once each", acked, id80, id100)
	}
	if len(bad) > 0 {
		t.Errorf("webhooks refused by the receiver: %v", bad)
	}
	t.Logf("webhooks received: %v (attempts %v); last one %v before the load ended", acked, tries,
		crossedBy.Sub(maxTime(firstAt[id80], firstAt[id100])).Round(time.Millisecond))
	t.Logf("NATS down at 0, up at %v; 80%% received at %v, 100%% at %v", upAt.Sub(downAt).Round(time.Millisecond),
		firstAt[id80].Sub(downAt).Round(time.Millisecond), firstAt[id100].Sub(downAt).Round(time.Millisecond))
	if t.Failed() {
		t.Logf("replica a:\n%s", grepLines(a.logs(), "notif", "nats"))
	}
}

func maxTime(ts ...time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if t.After(m) {
			m = t
		}
	}
	return m
}
