package authn

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Throttle's clock in a test of one goroutine.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// throttleWithClock returns a throttle reading the returned clock.
func throttleWithClock[K comparable](limit int, window time.Duration, maxKeys int, hash func(K) uint64) (*Throttle[K], *fakeClock) {
	t := NewThrottle(limit, window, maxKeys, hash)
	c := &fakeClock{t: t.epoch.Add(time.Hour)}
	t.now = c.now
	return t, c
}

func TestThrottleBlocksAfterLimit(t *testing.T) {
	th, clk := throttleWithClock(3, time.Second, 100, HashString)
	for i := range 3 {
		if d, blocked := th.Blocked("alice"); blocked || d != 0 {
			t.Fatalf("after %d failures Blocked = %v, %v; want 0, false", i, d, blocked)
		}
		th.Fail("alice")
	}
	d, blocked := th.Blocked("alice")
	if !blocked || d <= 0 || d > time.Second {
		t.Fatalf("after 3 failures Blocked = %v, %v; want a wait in (0, 1s], true", d, blocked)
	}
	if _, blocked := th.Blocked("bob"); blocked {
		t.Error("bob is blocked by alice's failures")
	}
	clk.advance(d - 1)
	if _, blocked := th.Blocked("alice"); !blocked {
		t.Errorf("blocked %v, and no longer blocked 1ns before", d)
	}
	clk.advance(1)
	if d, blocked := th.Blocked("alice"); blocked {
		t.Fatalf("after the wait Blocked = %v, true; want false", d)
	}
	// The bucket holds one failure again, no more.
	th.Fail("alice")
	if _, blocked := th.Blocked("alice"); !blocked {
		t.Error("after the wait and one more failure, not blocked")
	}
	// Failing while blocked does not lengthen the block past a window.
	for range 100 {
		th.Fail("alice")
	}
	clk.advance(time.Second)
	if d, blocked := th.Blocked("alice"); blocked {
		t.Errorf("a window after 100 failures Blocked = %v, true; want false", d)
	}
	if got := th.Len(); got != 0 {
		t.Errorf("Len once the bucket refilled and Blocked saw it = %d, want 0", got)
	}
}

func TestThrottleRefillsGradually(t *testing.T) {
	th, clk := throttleWithClock(4, 4*time.Second, 100, HashString)
	for range 4 {
		th.Fail("k")
	}
	// One failure comes back every second.
	for i := range 3 {
		clk.advance(time.Second)
		th.Fail("k")
		if _, blocked := th.Blocked("k"); !blocked {
			t.Fatalf("second %d: one failure refilled and spent, not blocked", i+1)
		}
	}
	clk.advance(2 * time.Second)
	th.Fail("k")
	if _, blocked := th.Blocked("k"); blocked {
		t.Error("two failures refilled, one spent: blocked")
	}
}

func TestThrottleOff(t *testing.T) {
	var nilT *Throttle[string]
	nilT.Fail("a")
	if _, blocked := nilT.Blocked("a"); blocked || nilT.Len() != 0 {
		t.Error("a nil Throttle blocks")
	}
	for _, th := range []*Throttle[string]{
		NewThrottle(0, time.Second, 10, HashString),
		NewThrottle(-1, time.Second, 10, HashString),
		NewThrottle(3, 0, 10, HashString),
	} {
		for range 10 {
			th.Fail("a")
		}
		if _, blocked := th.Blocked("a"); blocked || th.Len() != 0 {
			t.Error("a Throttle with limit or window 0 blocks or tracks")
		}
	}
}

func TestThrottleBounded(t *testing.T) {
	for _, maxKeys := range []int{5, 64, 1000} {
		th, clk := throttleWithClock(2, time.Minute, maxKeys, HashString)
		for i := range 20 * maxKeys {
			th.Fail(fmt.Sprint("key", i))
			if i%97 == 0 && th.Len() > maxKeys {
				t.Fatalf("maxKeys %d: Len %d after %d keys", maxKeys, th.Len(), i+1)
			}
		}
		if got := th.Len(); got > maxKeys || (maxKeys >= 64 && got < maxKeys*3/4) {
			t.Errorf("maxKeys %d: Len = %d, want at most %[1]d and most of it used", maxKeys, got)
		}
		// Full of buckets that have not refilled: a new key is not
		// tracked (fail open).
		if maxKeys == 1000 {
			untracked := 0
			for i := range 100 {
				k := fmt.Sprint("new", i)
				th.Fail(k)
				th.Fail(k)
				if _, blocked := th.Blocked(k); !blocked {
					untracked++
				}
			}
			if untracked == 0 {
				t.Errorf("maxKeys %d: all new keys tracked in a full throttle", maxKeys)
			}
		}
		// Once the buckets refilled, new keys take their place.
		clk.advance(time.Minute)
		for i := range 100 {
			k := fmt.Sprint("later", i)
			th.Fail(k)
			th.Fail(k)
			if maxKeys >= 1000 { // room for 100 keys in every shard
				if _, blocked := th.Blocked(k); !blocked {
					t.Fatalf("maxKeys %d: key %q not tracked after the others refilled", maxKeys, k)
				}
			}
		}
		if got := th.Len(); got > maxKeys {
			t.Errorf("maxKeys %d: Len = %d", maxKeys, got)
		}
	}
}

// TestThrottleSweepsOnlyWhenDue checks that a full shard is not scanned
// again before one of its buckets can have refilled.
func TestThrottleSweepsOnlyWhenDue(t *testing.T) {
	th, clk := throttleWithClock(1, time.Minute, 64, func(int) uint64 { return 0 }) // all in shard 0, which holds 1
	th.Fail(1)
	sh := &th.shards[0]
	if sh.max != 1 || len(sh.m) != 1 {
		t.Fatalf("shard 0 holds %d of %d", len(sh.m), sh.max)
	}
	clk.advance(time.Second)
	th.Fail(2)
	if _, blocked := th.Blocked(2); blocked {
		t.Error("key 2 tracked in a full shard")
	}
	if want := int64(clk.t.Sub(th.epoch)) + int64(time.Minute) - int64(time.Second); sh.sweep != want {
		t.Errorf("next sweep at %d, want when key 1 refills, %d", sh.sweep, want)
	}
	clk.advance(time.Minute)
	th.Fail(2)
	if _, blocked := th.Blocked(2); !blocked {
		t.Error("key 2 not tracked once key 1 refilled")
	}
	if _, ok := sh.m[1]; ok {
		t.Error("key 1 kept after its bucket refilled")
	}
}

func TestThrottleRace(t *testing.T) {
	const maxKeys = 128
	th := NewThrottle(5, 50*time.Millisecond, maxKeys, HashAddr)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				a := netip.AddrFrom4([4]byte{10, 0, byte(g), byte(i % 300)})
				if i%3 == 0 {
					th.Fail(a)
				} else {
					th.Blocked(a)
				}
				if i%500 == 0 {
					if n := th.Len(); n > maxKeys {
						t.Errorf("Len = %d, over %d", n, maxKeys)
					}
				}
			}
		})
	}
	wg.Wait()
	if n := th.Len(); n > maxKeys {
		t.Errorf("Len = %d, over %d", n, maxKeys)
	}
}

func TestThrottleDoesNotAllocate(t *testing.T) {
	th := NewThrottle(3, time.Minute, 1000, HashAddr)
	hit, miss := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("192.0.2.1")
	for range 3 {
		th.Fail(hit)
	}
	for _, c := range []struct {
		name string
		f    func()
	}{
		{"HashAddr", func() { HashAddr(miss) }},
		{"HashString", func() { HashString("alice") }},
		{"Blocked miss", func() { th.Blocked(miss) }},
		{"Blocked hit", func() { th.Blocked(hit) }},
		{"Fail of a tracked key", func() { th.Fail(hit) }},
	} {
		if n := testing.AllocsPerRun(100, c.f); n != 0 {
			t.Errorf("%s allocates %v times, want 0", c.name, n)
		}
	}
}

func TestThrottleHashes(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	a2 := netip.AddrFrom4([4]byte{192, 0, 2, 1})
	if HashAddr(a) != HashAddr(a2) || HashAddr(a) == HashAddr(b) {
		t.Error("HashAddr is not a hash")
	}
	s := "a"
	if HashString(s) != HashString(string([]byte{'a'})) || HashString(s) == HashString("b") {
		t.Error("HashString is not a hash")
	}
}

func BenchmarkThrottleBlockedMiss(b *testing.B) {
	th := NewThrottle(5, time.Minute, 1<<16, HashAddr)
	for i := range 1000 {
		th.Fail(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))
	}
	a := netip.MustParseAddr("192.0.2.1")
	b.ReportAllocs()
	for b.Loop() {
		if _, blocked := th.Blocked(a); blocked {
			b.Fatal("blocked")
		}
	}
}

func BenchmarkThrottleBlockedHit(b *testing.B) {
	th := NewThrottle(5, time.Minute, 1<<16, HashAddr)
	a := netip.MustParseAddr("192.0.2.1")
	for range 5 {
		th.Fail(a)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, blocked := th.Blocked(a); !blocked {
			b.Fatal("not blocked")
		}
	}
}

// BenchmarkThrottleParallel is Blocked on every request from 4096
// addresses, a quarter of which fail now and then.
func BenchmarkThrottleParallel(b *testing.B) {
	th := NewThrottle(5, time.Minute, 1<<16, HashAddr)
	addrs := make([]netip.Addr, 4096)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			a := addrs[i%len(addrs)]
			if _, blocked := th.Blocked(a); !blocked && i%64 == 0 && i%4096 < 1024 {
				th.Fail(a)
			}
			i += 7
		}
	})
}

// BenchmarkThrottleOneAddressParallel: every core asks about the same
// address (clients behind one load balancer) while nothing has failed:
// no shard lock is taken.
func BenchmarkThrottleOneAddressParallel(b *testing.B) {
	th := NewThrottle[netip.Addr](30, time.Minute, 0, HashAddr)
	a := netip.MustParseAddr("192.0.2.1")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, blocked := th.Blocked(a); blocked {
				b.Fatal("blocked")
			}
		}
	})
}
