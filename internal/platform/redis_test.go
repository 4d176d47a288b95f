package platform_test

import (
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/platform"
)

func TestNewRedisPoolSize(t *testing.T) {
	t.Parallel()
	opt, err := platform.ParseRedisURL("redis://127.0.0.1:1/0")
	require.NoError(t, err)
	c := platform.NewRedis(opt)
	t.Cleanup(func() { _ = c.Close() })
	assert.GreaterOrEqual(t, c.Options().PoolSize, platform.MinPoolSize, "at least MinPoolSize by default")

	opt, err = platform.ParseRedisURL("redis://127.0.0.1:1/0?pool_size=5")
	require.NoError(t, err)
	c = platform.NewRedis(opt)
	t.Cleanup(func() { _ = c.Close() })
	assert.Equal(t, 5, c.Options().PoolSize, "REDIS_URL's pool_size wins")

	c = platform.NewRedis(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = c.Close() })
	assert.NotZero(t, c.Options().ReadTimeout)
}
