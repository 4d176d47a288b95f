package platform_test

import (
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/platform"
)

// Each mode takes go-redis's URL form and builds its kind of client, with
// the pool and timeouts verifyq wants unless the URL says otherwise.
func TestParseRedis(t *testing.T) {
	t.Parallel()
	r, err := platform.ParseRedis(platform.RedisSingle, "redis://127.0.0.1:1/0")
	require.NoError(t, err)
	c := r.Client()
	t.Cleanup(func() { _ = c.Close() })
	single, ok := c.(*redis.Client)
	require.True(t, ok)
	assert.GreaterOrEqual(t, single.Options().PoolSize, platform.MinPoolSize, "at least MinPoolSize by default")
	assert.NotZero(t, single.Options().ReadTimeout)

	r, err = platform.ParseRedis(platform.RedisSingle, "redis://127.0.0.1:1/0?pool_size=5")
	require.NoError(t, err)
	c = r.Client()
	t.Cleanup(func() { _ = c.Close() })
	assert.Equal(t, 5, c.(*redis.Client).Options().PoolSize, "REDIS_URL's pool_size wins")

	r, err = platform.ParseRedis(platform.RedisSentinel, "redis://127.0.0.1:26379?master_name=primary&addr=127.0.0.1:26380")
	require.NoError(t, err)
	c = r.Client()
	t.Cleanup(func() { _ = c.Close() })
	_, ok = c.(*redis.Client) // a failover client is a *redis.Client that asks the sentinels
	assert.True(t, ok)

	r, err = platform.ParseRedis(platform.RedisCluster, "redis://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002")
	require.NoError(t, err)
	c = r.Client()
	t.Cleanup(func() { _ = c.Close() })
	cc, ok := c.(*redis.ClusterClient)
	require.True(t, ok)
	assert.Equal(t, []string{"127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"}, cc.Options().Addrs)
	assert.GreaterOrEqual(t, cc.Options().PoolSize, platform.MinPoolSize)
}

func TestParseRedisErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ mode, url, want string }{
		{"primary", "redis://127.0.0.1:6379", "REDIS_MODE"},
		{platform.RedisSingle, "http://user:hunter2@redis:6379", "REDIS_URL"},
		{platform.RedisSentinel, "redis://user:hunter2@127.0.0.1:26379", "REDIS_URL"}, // no master_name
		{platform.RedisCluster, "mysql://x", "REDIS_URL"},
	} {
		_, err := platform.ParseRedis(tt.mode, tt.url)
		require.Error(t, err, "%s %s", tt.mode, tt.url)
		assert.Contains(t, err.Error(), tt.want)
		assert.NotContains(t, err.Error(), "hunter2", "no secret")
	}
}
