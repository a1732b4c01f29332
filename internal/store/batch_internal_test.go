package store

import "testing"

func TestBatchSupport(t *testing.T) {
	for v, want := range map[string]bool{
		"2.15.2": true, "2.12.12": true, "2.12.11": false, "2.12.0": false, "2.11.9": false,
		"2.14.0-beta.1": true, "3.0.0": true, "1.9.9": false, "": false, "garbage": false,
	} {
		if got := batchSupport(v); got != want {
			t.Errorf("batchSupport(%q) = %v, want %v", v, got, want)
		}
	}
}
