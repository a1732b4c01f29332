package notify

import (
	"math"
	"testing"
)

func TestReached(t *testing.T) {
	for _, tt := range []struct {
		total, limit, percent int64
		want                  bool
	}{
		{160, 200, 80, true},
		{159, 200, 80, false},
		{160, 201, 80, false}, // 160.8
		{161, 201, 80, true},
		{200, 200, 100, true},
		{219, 200, 110, false},
		{220, 200, 110, true},
		{math.MaxInt64 / 2, math.MaxInt64 / 2, 100, true},
		{math.MaxInt64 / 4, math.MaxInt64 / 2, 80, false},
	} {
		if got := reached(tt.total, tt.limit, tt.percent); got != tt.want {
			t.Errorf("reached(%d, %d, %d%%) = %v, want %v", tt.total, tt.limit, tt.percent, got, tt.want)
		}
	}
}
