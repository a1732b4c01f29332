package shardmap

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"
)

func TestShardsArePadded(t *testing.T) {
	cases := []struct {
		name string
		got  uintptr
	}{
		{"pointer", unsafe.Sizeof(shard[*int]{})},
		{"int64", unsafe.Sizeof(shard[int64]{})},
		{"struct", unsafe.Sizeof(shard[struct{ a, b, c, d int64 }]{})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.got != stride {
				t.Errorf("shard size = %d, want %d", c.got, stride)
			}
		})
	}
}

func TestStoreGetDelete(t *testing.T) {
	m := New[int](0)
	steps := []struct {
		name   string
		do     func()
		key    string
		want   int
		wantOK bool
	}{
		{name: "missing", do: func() {}, key: "a"},
		{name: "stored", do: func() { m.Store("a", 1) }, key: "a", want: 1, wantOK: true},
		{name: "replaced", do: func() { m.Store("a", 2) }, key: "a", want: 2, wantOK: true},
		{name: "other key", do: func() { m.Store("b", 3) }, key: "b", want: 3, wantOK: true},
		{name: "deleted", do: func() { m.Delete("a") }, key: "a"},
		{name: "delete of missing", do: func() { m.Delete("zzz") }, key: "b", want: 3, wantOK: true},
		{name: "empty key", do: func() { m.Store("", 4) }, key: "", want: 4, wantOK: true},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.do()
			got, ok := m.Get(s.key)
			if got != s.want || ok != s.wantOK {
				t.Errorf("Get(%q) = %d, %v; want %d, %v", s.key, got, ok, s.want, s.wantOK)
			}
			got, ok = m.GetBytes([]byte(s.key))
			if got != s.want || ok != s.wantOK {
				t.Errorf("GetBytes(%q) = %d, %v; want %d, %v", s.key, got, ok, s.want, s.wantOK)
			}
		})
	}
}

func TestGetBytesFindsEveryKey(t *testing.T) {
	m := New[int](1000)
	for i := range 1000 {
		m.Store(fmt.Sprintf("key-%d", i), i)
	}
	for i := range 1000 {
		k := fmt.Sprintf("key-%d", i)
		if got, ok := m.GetBytes([]byte(k)); !ok || got != i {
			t.Fatalf("GetBytes(%q) = %d, %v; want %d, true", k, got, ok, i)
		}
	}
	if got := m.Len(); got != 1000 {
		t.Errorf("Len = %d, want 1000", got)
	}
}

// Concurrent GetOrCreate of the same keys creates each value once and
// hands every caller that one.
func TestGetOrCreateOnce(t *testing.T) {
	m := New[*int](0)
	const keys, goroutines = 100, 8
	var made atomic.Int64
	got := make([][keys]*int, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range keys {
				got[g][k] = m.GetOrCreate(fmt.Sprint(k), func() *int { made.Add(1); return new(int) })
			}
		}()
	}
	wg.Wait()
	if n := made.Load(); n != keys {
		t.Errorf("mk called %d times, want %d", n, keys)
	}
	for g := 1; g < goroutines; g++ {
		if got[g] != got[0] {
			t.Fatalf("goroutine %d got other values than goroutine 0", g)
		}
	}
	if n := m.Len(); n != keys {
		t.Errorf("Len = %d, want %d", n, keys)
	}
}

func TestRange(t *testing.T) {
	m := New[int](0)
	want := map[string]int{}
	for i := range 500 {
		k := fmt.Sprint(i)
		m.Store(k, i)
		want[k] = i
	}
	t.Run("all", func(t *testing.T) {
		seen := map[string]int{}
		m.Range(func(k string, v int) bool {
			if _, dup := seen[k]; dup {
				t.Errorf("key %q seen twice", k)
			}
			seen[k] = v
			return true
		})
		if len(seen) != len(want) {
			t.Fatalf("Range saw %d keys, want %d", len(seen), len(want))
		}
		for k, v := range want {
			if seen[k] != v {
				t.Errorf("Range gave %q = %d, want %d", k, seen[k], v)
			}
		}
	})
	t.Run("stops", func(t *testing.T) {
		calls := 0
		m.Range(func(string, int) bool { calls++; return calls < 3 })
		if calls != 3 {
			t.Errorf("f called %d times after returning false on the 3rd, want 3", calls)
		}
		// Every shard's lock was released: writes go through.
		m.Store("after", 1)
		m.Delete("after")
	})
	t.Run("empty", func(t *testing.T) {
		New[int](0).Range(func(string, int) bool { t.Error("f called on an empty map"); return true })
	})
}

// The hot paths look up known keys on every request: no allocation.
func TestLookupsDoNotAllocate(t *testing.T) {
	m := New[*int](0)
	v := new(int)
	m.Store("known", v)
	key := []byte("known")
	owner := "someone" // captured, as the limiter's constructors capture their receiver
	cases := []struct {
		name string
		f    func()
	}{
		{"Get", func() { m.Get("known") }},
		{"GetBytes", func() { m.GetBytes(key) }},
		{"GetOrCreate", func() { m.GetOrCreate("known", func() *int { return new(int) }) }},
		{"GetOrCreate capturing", func() {
			m.GetOrCreate("known", func() *int { n := len(owner); return &n })
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(1000, c.f); got != 0 {
				t.Errorf("allocs = %v, want 0", got)
			}
		})
	}
}

func BenchmarkGet(b *testing.B) {
	m := benchMap()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, ok := m.Get("key-42"); !ok {
				b.Fatal("missing")
			}
		}
	})
}

func BenchmarkGetBytes(b *testing.B) {
	m := benchMap()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		key := []byte("key-42")
		for pb.Next() {
			if _, ok := m.GetBytes(key); !ok {
				b.Fatal("missing")
			}
		}
	})
}

func BenchmarkGetOrCreateExisting(b *testing.B) {
	m := benchMap()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if m.GetOrCreate("key-42", func() *int64 { return new(int64) }) == nil {
				b.Fatal("nil")
			}
		}
	})
}

// BenchmarkGetSpread looks up many keys from every goroutine, so that the
// shards' locks are taken on several cores at once.
func BenchmarkGetSpread(b *testing.B) {
	m := benchMap()
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
	}
	b.ReportAllocs()
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(97))
		for pb.Next() {
			m.Get(keys[i%len(keys)])
			i++
		}
	})
}

func benchMap() *Map[*int64] {
	m := New[*int64](1024)
	for i := range 1024 {
		m.Store(fmt.Sprintf("key-%d", i), new(int64))
	}
	return m
}
