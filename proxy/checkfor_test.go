package proxy_test

import "github.com/tollgate/tollgate/internal/poll"

// checkFor is poll.CheckFor.
var checkFor = poll.CheckFor
