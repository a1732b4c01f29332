package proxy

import "unsafe"

// b2s and s2b convert without copying. They are used only where the
// result does not outlive, and is not modified during, the source's life.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

func s2b(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
