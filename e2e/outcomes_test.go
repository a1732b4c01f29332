package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// outcomesReplica is one of three replicas sharing NATS, with the plans of
// issue 18: refunds of 503s, shadow mode and overage. Access logs are on
// so that the test can count what they say.
func outcomesReplica(t *testing.T, upstream, natsAddr string, embedded bool) *instance {
	t.Helper()
	return configured(t, sharedNATS(natsAddr, embedded), fmt.Sprintf(`quota: {max_lease: 50, lease_idle: 2s, lease_ttl: 3s}
auth: {failures: {per_address: 0}}
plans:
  refunding: {monthly_requests: 100000, refund_on: [503, upstream_timeout]}
  trial: {monthly_requests: 50, mode: shadow}
  soft: {monthly_requests: 100, over_limit: {allow: 10%%}}
routes:
  - {path_prefix: /, upstream: http://%s, auth: [api_key]}
`, upstream))
}

type outcomeUsage struct {
	Used, Remaining, Refunded, Overage, Limit int64
	OverageAllowed                            int64 `json:"overage_allowed"`
}

func (u outcomeUsage) String() string {
	return fmt.Sprintf("used %d of %d, remaining %d, refunded %d, overage %d of %d", u.Used, u.Limit, u.Remaining, u.Refunded, u.Overage, u.OverageAllowed)
}

func usageOf(t *testing.T, in *instance, tenant string) outcomeUsage {
	t.Helper()
	var u outcomeUsage
	if code := adminCall(t, in, "GET", "/v1/tenants/"+tenant+"/usage", nil, &u); code != 200 {
		t.Fatalf("usage of %s: %d", tenant, code)
	}
	return u
}

// outcome is what the test keeps of one proxied outcome.
type outcome struct {
	status                        int
	remaining, overage, shadowHdr string
}

func sendKey(hc *http.Client, in *instance, key, path string) (outcome, error) {
	req, _ := http.NewRequest("GET", "http://"+in.proxy+path, nil)
	req.Header.Set("X-API-Key", key)
	resp, err := hc.Do(req)
	if err != nil {
		return outcome{}, err
	}
	resp.Body.Close()
	return outcome{resp.StatusCode, resp.Header.Get("X-RateLimit-Remaining"), resp.Header.Get("X-RateLimit-Overage"),
		resp.Header.Get("Tollgate-Shadow")}, nil
}

// spread sends n requests over the replicas from 24 clients; path(i) is
// the i-th request's path. It returns every outcome.
func spread(t *testing.T, reps []*instance, key string, n int, path func(i int) string) []outcome {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second}
	out := make([]outcome, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for c := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				a, err := sendKey(hc, reps[(c+i)%len(reps)], key, path(i))
				if err != nil {
					t.Errorf("request %d: %v", i, err)
					return
				}
				out[i] = a
			}
		}()
	}
	wg.Wait()
	return out
}

// TestRefundsShadowAndOverage: three replicas of the real binary on one
// NATS server.
//
//   - Refunds: a third of 1,500 requests are answered 503 by the backend;
//     each is given back to the quota, its own outcome's limit headers show
//     it, and once the replicas have closed the ledger holds exactly the
//     requests served 2xx, usage shows the 503s as refunded, and access
//     logs and metrics counted them.
//   - Shadow: a trial plan of 50 serves all of 150 requests; those past
//     the limit say Tollgate-Shadow: quota_exceeded and the metrics count
//     them, and the ledger holds no more than the limit.
//   - Overage: a plan of 100 that allows 10 % over serves exactly 110
//     requests, the last 10 with remaining 0 and an overage count.
func TestRefundsShadowAndOverage(t *testing.T) {
	up := backend(t)
	natsAddr := freeAddr(t)
	a := outcomesReplica(t, up, natsAddr, true)
	a.start()
	b, c := outcomesReplica(t, up, natsAddr, false), outcomesReplica(t, up, natsAddr, false)
	b.spawn()
	c.spawn()
	b.waitReady()
	c.waitReady()
	reps := []*instance{a, b, c}
	hc := &http.Client{Timeout: 10 * time.Second}

	// Refunds. On one replica, sequentially: a 503's own outcome already
	// shows its refund.
	key := tenantKeyOn(t, a, replicaToken, "acme", "refunding")
	first, err := sendKey(hc, a, key, "/x")
	if err != nil || first.status != 200 {
		t.Fatalf("first request: %+v %v", first, err)
	}
	failed, _ := sendKey(hc, a, key, "/status/503")
	next, _ := sendKey(hc, a, key, "/x")
	r0, _ := strconv.Atoi(first.remaining)
	if failed.status != 503 || failed.remaining != strconv.Itoa(r0) || next.remaining != strconv.Itoa(r0-1) {
		t.Errorf("remaining: %s after a 200, %s on the 503 that follows (want the same), %s after the next 200 (want one less)",
			first.remaining, failed.remaining, next.remaining)
	}
	answers := spread(t, reps, key, 1500, func(i int) string {
		if i%3 == 0 {
			return "/status/503"
		}
		return "/x"
	})
	ok, unavailable := 2, 1 // the three sequential ones
	for _, x := range answers {
		switch x.status {
		case 200:
			ok++
		case 503:
			unavailable++
		default:
			t.Errorf("unexpected status %d", x.status)
		}
	}
	// Refunds show in the usage before the replicas close: each flushes
	// its count within a few seconds.
	checkFor(t, 15*time.Second, 200*time.Millisecond, func() error {
		if u := usageOf(t, a, "acme"); u.Refunded != int64(unavailable) {
			return fmt.Errorf("usage %s; want %d refunded", u, unavailable)
		}
		return nil
	})
	refundedLines := 0
	for _, in := range reps {
		refundedLines += strings.Count(in.logs(), `"refunded":true`)
	}
	if refundedLines != unavailable {
		t.Errorf("access logs say %d requests were refunded, want %d", refundedLines, unavailable)
	}
	refundMetric := 0.0
	for _, in := range reps {
		refundMetric += metric(t, in, "tollgate_lease_refunds_total")
	}
	if int(refundMetric) != unavailable {
		t.Errorf("tollgate_lease_refunds_total adds up to %v over the replicas, want %d", refundMetric, unavailable)
	}

	// Shadow.
	trial := tenantKeyOn(t, a, replicaToken, "trial", "trial")
	before := 0.0
	for _, in := range reps {
		before += metricLabeled(t, in, "tollgate_quota_decisions_total", `decision="shadow_quota"`)
	}
	shadowAnswers := spread(t, reps, trial, 150, func(int) string { return "/x" })
	shadowed := 0
	for _, x := range shadowAnswers {
		if x.status != 200 {
			t.Errorf("shadow mode answered %d", x.status)
		}
		if x.shadowHdr == "quota_exceeded" {
			shadowed++
			if x.remaining != "0" {
				t.Errorf("an outcome past the limit says remaining %s", x.remaining)
			}
		} else if x.shadowHdr != "" {
			t.Errorf("Tollgate-Shadow: %q", x.shadowHdr)
		}
	}
	after := 0.0
	for _, in := range reps {
		after += metricLabeled(t, in, "tollgate_quota_decisions_total", `decision="shadow_quota"`)
	}
	// Past the limit of 50, at least 100 answers say what enforcing would
	// have done (more while other replicas hold unspent tokens).
	if shadowed < 100 || int(after-before) != shadowed {
		t.Errorf("%d answers said quota_exceeded (want at least 100), metrics counted %v", shadowed, after-before)
	}

	// Overage.
	soft := tenantKeyOn(t, a, replicaToken, "soft", "soft")
	softAnswers := spread(t, reps, soft, 240, func(int) string { return "/x" })
	served, sawOverage := 0, false
	for _, x := range softAnswers {
		if x.status == 200 {
			served++
		}
		if x.overage != "" && x.overage != "0" {
			sawOverage = true
			if x.remaining != "0" {
				t.Errorf("an overage outcome says remaining %s", x.remaining)
			}
		}
	}
	if served > 110 {
		t.Errorf("served %d, over the limit and its 10%% overage", served)
	}
	if !sawOverage {
		t.Error("no outcome carried an overage count")
	}

	// Close b and c (their leases and refund counts go back), then finish
	// on a: the ledgers are exact.
	b.stop(syscall.SIGTERM)
	c.stop(syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for served < 110 && ctx.Err() == nil {
		x, err := sendKey(hc, a, soft, "/x")
		if err != nil {
			t.Fatal(err)
		}
		if x.status != 200 {
			break
		}
		served++
	}
	if served != 110 {
		t.Errorf("overage plan served %d in all, want exactly 110", served)
	}
	if u := usageOf(t, a, "soft"); u.Used != 110 || u.Overage != 10 || u.OverageAllowed != 10 || u.Remaining != 0 {
		t.Errorf("overage usage: %s; want 110 used, 10 overage of 10", u)
	}
	u := usageOf(t, a, "acme")
	if u.Used != int64(ok) || u.Refunded != int64(unavailable) {
		t.Errorf("refunds: %d served 200 and %d 503; usage %s; want used = 200s and refunded = 503s exactly", ok, unavailable, u)
	}
	if u := usageOf(t, a, "trial"); u.Used > 50 {
		t.Errorf("shadow usage %s: over the limit", u)
	}
	t.Logf("refunds: %d ok, %d refunded, usage %s; shadow: %d of 150 past the limit; overage: %d served", ok, unavailable, u, shadowed, served)
}

// metricLabeled sums the samples of name whose labels contain label.
func metricLabeled(t *testing.T, in *instance, name, label string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + in.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	var sum float64
	for _, line := range strings.Split(sb.String(), "\n") {
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, label) {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			sum += v
		}
	}
	return sum
}
