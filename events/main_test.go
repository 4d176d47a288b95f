package events_test

import (
	"os"
	"testing"

	"github.com/verifyq/verifyq/internal/redistest"
)

// TestMain closes the deployments redistest.Shared pooled.
func TestMain(m *testing.M) { os.Exit(redistest.Run(m)) }
