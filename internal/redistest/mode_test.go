package redistest_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/redistest"
)

func TestModeReadsTheEnvironment(t *testing.T) {
	for _, tc := range []struct{ env, want string }{
		{"", redistest.ModeSingle},
		{"single", redistest.ModeSingle},
		{" Sentinel ", redistest.ModeSentinel},
		{"CLUSTER", redistest.ModeCluster},
		{"replicated", "replicated"},
	} {
		t.Setenv(redistest.EnvMode, tc.env)
		assert.Equal(t, tc.want, redistest.Mode(), "%s=%q", redistest.EnvMode, tc.env)
	}
	for _, m := range redistest.Modes {
		assert.NoError(t, redistest.CheckMode(m))
	}
	err := redistest.CheckMode("replicated")
	require.Error(t, err)
	assert.Contains(t, err.Error(), redistest.EnvMode)
	assert.Contains(t, err.Error(), "single, sentinel, cluster")
}

// Every mode's deployment takes writes through its universal client, and
// its URL, read by the go-redis parser of that mode, reaches the same data.
func TestStartDeploymentEveryMode(t *testing.T) {
	t.Parallel()
	for _, mode := range redistest.Modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			d := redistest.StartDeployment(t, mode)
			assert.Equal(t, mode, d.Mode())
			require.NoError(t, d.UniversalClient(t).Set(ctx, "k", mode, 0).Err())

			var c redis.UniversalClient
			switch mode {
			case redistest.ModeSingle:
				opts, err := redis.ParseURL(d.URL())
				require.NoError(t, err)
				c = redis.NewClient(opts)
			case redistest.ModeSentinel:
				opts, err := redis.ParseFailoverURL(d.URL())
				require.NoError(t, err)
				c = redis.NewFailoverClient(opts)
			case redistest.ModeCluster:
				opts, err := redis.ParseClusterURL(d.URL())
				require.NoError(t, err)
				c = redis.NewClusterClient(opts)
			}
			t.Cleanup(func() { _ = c.Close() })
			assert.Equal(t, mode, c.Get(ctx, "k").Val())
		})
	}
}

// StartMode starts what the environment names.
func TestStartModeFollowsTheEnvironment(t *testing.T) {
	t.Setenv(redistest.EnvMode, redistest.ModeCluster)
	d := redistest.StartMode(t)
	_, ok := d.(*redistest.Cluster)
	assert.True(t, ok, "a %T", d)
	assert.Equal(t, redistest.ModeCluster, d.Mode())
}

func TestServerStopAndRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := redistest.Start(t, redistest.WithAOF())
	rdb := s.Client(t)
	require.NoError(t, rdb.Set(ctx, "kept", "1", 0).Err())
	s.Stop()
	require.Error(t, rdb.Ping(ctx).Err())
	require.NoError(t, s.Restart())
	assert.Equal(t, "1", rdb.Get(ctx, "kept").Val(), "the AOF kept the key")
	require.Error(t, s.Restart(), "it runs already")
}

// A shared deployment comes back to the next test empty, and in sentinel
// and cluster mode it is the same deployment: one start-up for the two.
func TestSharedIsEmptiedAndReused(t *testing.T) {
	for _, mode := range redistest.Modes {
		t.Run(mode, func(t *testing.T) {
			t.Setenv(redistest.EnvMode, mode)
			ctx := context.Background()
			var first string
			t.Run("writes", func(t *testing.T) {
				d := redistest.Shared(t)
				assert.Equal(t, mode, d.Mode())
				first = d.URL()
				c := d.UniversalClient(t)
				for i := range 20 { // keys on every master of a cluster
					require.NoError(t, c.Set(ctx, fmt.Sprintf("k%d", i), "v", 0).Err())
				}
			})
			t.Run("reads", func(t *testing.T) {
				d := redistest.Shared(t)
				if mode == redistest.ModeSingle {
					assert.NotEqual(t, first, d.URL(), "single mode: a fresh server")
				} else {
					assert.Equal(t, first, d.URL(), "the pooled deployment again")
				}
				c := d.UniversalClient(t)
				for i := range 20 {
					n, err := c.Exists(ctx, fmt.Sprintf("k%d", i)).Result()
					require.NoError(t, err)
					assert.Zero(t, n, "k%d is gone", i)
				}
			})
		})
	}
	redistest.ClosePool()
}
