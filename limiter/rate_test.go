package limiter

import (
	"sync"
	"testing"
	"time"
)

func TestGCRA(t *testing.T) {
	now := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	r := NewRates(clock)
	rate := Rate{Requests: 10, Per: time.Second, Burst: 5}
	// A burst of 5 at once, then refused.
	for i := 0; i < 5; i++ {
		d := r.Allow("k", rate, 1)
		if !d.Allowed || d.Remaining != int64(4-i) || d.Limit != 5 {
			t.Fatalf("burst request %d: %+v, want allowed with %d remaining", i, d, 4-i)
		}
	}
	d := r.Allow("k", rate, 1)
	if d.Allowed || d.RetryAfter != 1 || d.Remaining != 0 {
		t.Fatalf("6th request: %+v, want refused, retry after 1s", d)
	}
	// 100ms later one more request fits (10 per second).
	now = now.Add(100 * time.Millisecond)
	if d := r.Allow("k", rate, 1); !d.Allowed || d.Remaining != 0 || d.Window != 1 {
		t.Fatalf("after 100ms: %+v, want allowed with 0 remaining", d)
	}
	if d := r.Allow("k", rate, 1); d.Allowed {
		t.Fatalf("right after: %+v, want refused", d)
	}
	// Keys are independent.
	if d := r.Allow("other", rate, 1); !d.Allowed {
		t.Fatalf("other key refused: %+v", d)
	}
	// After a quiet second the bucket is full again.
	now = now.Add(time.Second)
	if d := r.Allow("k", rate, 1); !d.Allowed || d.Remaining != 4 {
		t.Fatalf("after a second: %+v, want 4 remaining", d)
	}
	// A zero rate allows everything.
	if d := r.Allow("k", Rate{}, 1); !d.Allowed {
		t.Fatal("zero rate refused")
	}
}

func TestGCRASteadyRateUnderConcurrency(t *testing.T) {
	now := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r := NewRates(clock)
	rate := Rate{Requests: 100, Per: time.Second, Burst: 10}
	allowed := 0
	var amu sync.Mutex
	for step := 0; step < 100; step++ { // one simulated second in 10ms steps
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 5; i++ {
					if r.Allow("k", rate, 1).Allowed {
						amu.Lock()
						allowed++
						amu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		mu.Lock()
		now = now.Add(10 * time.Millisecond)
		mu.Unlock()
	}
	// 100/s for one second plus the burst of 10, give or take the edge.
	if allowed < 100 || allowed > 111 {
		t.Errorf("allowed %d in one second at 100/s with burst 10", allowed)
	}
}

func TestConcurrency(t *testing.T) {
	c := NewConcurrency()
	for i := 1; i <= 3; i++ {
		if n, ok := c.Acquire("t", 3); !ok || n != int64(i) {
			t.Fatalf("acquire %d: %d %v", i, n, ok)
		}
	}
	if _, ok := c.Acquire("t", 3); ok {
		t.Fatal("4th acquire allowed")
	}
	if c.InFlight("t") != 3 {
		t.Fatalf("in flight %d after a refusal, want 3", c.InFlight("t"))
	}
	c.Release("t")
	if _, ok := c.Acquire("t", 3); !ok {
		t.Fatal("acquire after release refused")
	}
}

func BenchmarkRateAllow(b *testing.B) {
	r := NewRates(nil)
	rate := Rate{Requests: 1 << 40, Per: time.Second, Burst: 1 << 20}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Allow("key", rate, 1)
		}
	})
}
