package e2e

import (
	"context"
	"time"

	"github.com/tollgate/tollgate/internal/poll"
)

// checkFor is poll.CheckFor.
var checkFor = poll.CheckFor

// waitFor polls cond every interval until it holds or ctx ends, and
// reports whether it held: checkFor for a goroutine, which cannot fail the
// test.
func waitFor(ctx context.Context, every time.Duration, cond func() bool) bool {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}
