package redistest

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// The deployments, named as the service's REDIS_MODE names them.
const (
	ModeSingle   = "single"   // one redis-server: Start
	ModeSentinel = "sentinel" // a primary, a replica and three sentinels: StartSentinel
	ModeCluster  = "cluster"  // a Redis Cluster of three masters: StartCluster
)

// Modes lists every mode, ModeSingle first.
var Modes = []string{ModeSingle, ModeSentinel, ModeCluster}

// EnvMode is the environment variable that picks the deployment StartMode
// starts: single (the default, when unset or empty), sentinel or cluster.
const EnvMode = "VERIFYQ_TEST_REDIS_MODE"

// Deployment is a running Redis deployment of any mode, as a suite that
// runs against each mode sees it.
type Deployment interface {
	// URL is what the service's REDIS_URL takes in this mode: redis://host:port/0
	// (single), go-redis's failover URL (sentinel) or its cluster URL (cluster).
	URL() string
	// Mode is the value for the service's REDIS_MODE: single, sentinel or cluster.
	Mode() string
	// UniversalClient is a go-redis client for the deployment, closed when
	// the test ends.
	UniversalClient(t testing.TB) redis.UniversalClient
	// Close stops every process and removes the deployment's directories.
	Close()
}

// Mode is the mode EnvMode names, trimmed and lower-cased, or ModeSingle
// when it is unset or empty. A value that is not a mode is returned as it
// is; StartMode fails the test on it.
func Mode() string {
	m := strings.ToLower(strings.TrimSpace(os.Getenv(EnvMode)))
	if m == "" {
		return ModeSingle
	}
	return m
}

// StartMode starts the deployment EnvMode names (see Mode) and closes it
// when the test ends: one suite runs against single, sentinel and cluster
// by setting the variable. The options go to the starter of that mode.
func StartMode(t testing.TB, opts ...Option) Deployment {
	t.Helper()
	return StartDeployment(t, Mode(), opts...)
}

// StartDeployment starts the deployment of the given mode (one of Modes)
// and closes it when the test ends. Any other mode fails the test.
func StartDeployment(t testing.TB, mode string, opts ...Option) Deployment {
	t.Helper()
	switch mode {
	case ModeSingle:
		return Start(t, opts...)
	case ModeSentinel:
		return StartSentinel(t, opts...)
	case ModeCluster:
		return StartCluster(t, opts...)
	}
	t.Fatalf("redistest: %v", CheckMode(mode))
	return nil
}

// CheckMode returns nil for one of Modes and an error naming them for any
// other value.
func CheckMode(mode string) error {
	if slices.Contains(Modes, mode) {
		return nil
	}
	return fmt.Errorf("redis mode %q (%s): want one of %s", mode, EnvMode, strings.Join(Modes, ", "))
}

// Keys lists the keys matching pattern on every master of rdb's deployment:
// KEYS through a cluster client asks one node, which knows only its own
// slots.
func Keys(ctx context.Context, t testing.TB, rdb redis.UniversalClient, pattern string) []string {
	t.Helper()
	c, ok := rdb.(*redis.ClusterClient)
	if !ok {
		keys, err := rdb.Keys(ctx, pattern).Result()
		if err != nil {
			t.Fatalf("redistest: KEYS %s: %v", pattern, err)
		}
		return keys
	}
	var mu sync.Mutex
	var all []string
	err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		keys, err := m.Keys(ctx, pattern).Result()
		mu.Lock()
		all = append(all, keys...)
		mu.Unlock()
		return err
	})
	if err != nil {
		t.Fatalf("redistest: KEYS %s on every master: %v", pattern, err)
	}
	return all
}
