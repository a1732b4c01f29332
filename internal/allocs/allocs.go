// Package allocs finds, for tests, the allocations made by tollgate's own
// code: it samples every allocation and attributes each to its site, the
// first frame outside the runtime.
package allocs

import (
	"runtime"
	"strings"
)

// Sites samples every allocation from now on and returns a function that
// reports, by function, how many allocations tollgate's non-test code
// made since Sites was called. Call the returned function once.
func Sites() func() map[string]int64 {
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	before := ours()
	return func() map[string]int64 {
		runtime.GC()
		runtime.GC()
		after := ours()
		runtime.MemProfileRate = old
		for k, v := range before {
			after[k] -= v
			if after[k] <= 0 {
				delete(after, k)
			}
		}
		return after
	}
}

func ours() map[string]int64 {
	runtime.GC()
	var recs []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, true)
	for {
		recs = make([]runtime.MemProfileRecord, n+100)
		var ok bool
		if n, ok = runtime.MemProfile(recs, true); ok {
			recs = recs[:n]
			break
		}
	}
	out := map[string]int64{}
	for _, r := range recs {
		frames := runtime.CallersFrames(r.Stack())
		for {
			f, more := frames.Next()
			if !strings.HasPrefix(f.Function, "runtime.") && !strings.HasPrefix(f.Function, "internal/") {
				if strings.HasPrefix(f.Function, "github.com/tollgate/tollgate/") && !strings.HasSuffix(f.File, "_test.go") &&
					!strings.HasPrefix(f.Function, "github.com/tollgate/tollgate/internal/allocs.") {
					out[f.Function] += r.AllocObjects
				}
				break
			}
			if !more {
				break
			}
		}
	}
	return out
}
