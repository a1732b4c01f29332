package store_test

import (
	"testing"

	"github.com/tollgate/tollgate/internal/leaktest"
)

// TestMain fails the package's tests if they leave a goroutine running.
func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }
