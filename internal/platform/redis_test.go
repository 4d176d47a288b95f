package platform_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/redistest"
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
	assert.Equal(t, platform.BufferSize, single.Options().ReadBufferSize)
	assert.Equal(t, platform.BufferSize, single.Options().WriteBufferSize)
	assert.Equal(t, platform.BufferSize, single.Options().PipelineReadBufferSize)
	assert.Equal(t, platform.BufferSize, single.Options().PipelineWriteBufferSize)

	r, err = platform.ParseRedis(platform.RedisSingle, "redis://127.0.0.1:1/0?pool_size=5")
	require.NoError(t, err)
	c = r.Client()
	t.Cleanup(func() { _ = c.Close() })
	assert.Equal(t, 5, c.(*redis.Client).Options().PoolSize, "REDIS_URL's pool_size wins")

	r, err = platform.ParseRedis(platform.RedisSentinel, "redis://127.0.0.1:26379?master_name=primary&addr=127.0.0.1:26380")
	require.NoError(t, err)
	c = r.Client()
	t.Cleanup(func() { _ = c.Close() })
	failover, ok := c.(*redis.Client) // a failover client is a *redis.Client that asks the sentinels
	require.True(t, ok)
	assert.Equal(t, platform.BufferSize, failover.Options().WriteBufferSize)

	// Sentinel's URL: user:password@ are the sentinels' credentials, the
	// primary's are username= and password= (docs/CONFIGURATION.md).
	for url, want := range map[string][2]string{
		"redis://s:sentinels@127.0.0.1:26379?master_name=primary":                          {"", ""},
		"redis://s:sentinels@127.0.0.1:26379?master_name=primary&username=u&password=p%40": {"u", "p@"},
	} {
		r, err = platform.ParseRedis(platform.RedisSentinel, url)
		require.NoError(t, err)
		c = r.Client()
		t.Cleanup(func() { _ = c.Close() })
		o := c.(*redis.Client).Options()
		assert.Equal(t, want, [2]string{o.Username, o.Password}, "the primary's credentials of %s", url)
	}

	r, err = platform.ParseRedis(platform.RedisCluster, "redis://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002")
	require.NoError(t, err)
	c = r.Client()
	t.Cleanup(func() { _ = c.Close() })
	cc, ok := c.(*redis.ClusterClient)
	require.True(t, ok)
	assert.Equal(t, []string{"127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"}, cc.Options().Addrs)
	assert.GreaterOrEqual(t, cc.Options().PoolSize, platform.MinPoolSize)
	assert.Equal(t, platform.BufferSize, cc.Options().ReadBufferSize)
	assert.Equal(t, platform.BufferSize, cc.Options().PipelineWriteBufferSize)
}

// A command, a reply and a pipeline many times BufferSize go through the
// client's small buffers whole, on a real Redis.
func TestClientCarriesValuesLargerThanItsBuffers(t *testing.T) {
	t.Parallel()
	r, err := platform.ParseRedis(platform.RedisSingle, redistest.Start(t).URL())
	require.NoError(t, err)
	c := r.Client()
	t.Cleanup(func() { _ = c.Close() })
	ctx := t.Context()
	big := strings.Repeat("0123456789abcdef", 100*platform.BufferSize/16)
	require.NoError(t, c.Set(ctx, "big", big, 0).Err())
	got, err := c.Get(ctx, "big").Result()
	require.NoError(t, err)
	assert.Equal(t, big, got)

	cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range 10 {
			p.Set(ctx, fmt.Sprint("big", i), big, 0)
			p.Get(ctx, fmt.Sprint("big", i))
		}
		return nil
	})
	require.NoError(t, err)
	for i := 1; i < len(cmds); i += 2 {
		assert.Equal(t, big, cmds[i].(*redis.StringCmd).Val())
	}
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

// Redis Cluster has database 0 alone: a cluster REDIS_URL that names
// another (a single URL's /2 kept on a switch to cluster) is refused, not
// served from database 0 beside whatever else the cluster holds.
func TestParseRedisClusterDatabase(t *testing.T) {
	t.Parallel()
	for _, url := range []string{
		"redis://127.0.0.1:7000?addr=127.0.0.1:7001",
		"redis://127.0.0.1:7000/?addr=127.0.0.1:7001",
		"redis://127.0.0.1:7000/0?addr=127.0.0.1:7001",
		"rediss://user:hunter2@127.0.0.1:7000/0",
	} {
		_, err := platform.ParseRedis(platform.RedisCluster, url)
		assert.NoError(t, err, url)
	}
	for _, url := range []string{
		"redis://127.0.0.1:7000/2?addr=127.0.0.1:7001",
		"redis://user:hunter2@127.0.0.1:7000/15",
		"redis://127.0.0.1:7000/0/1",
		"redis://127.0.0.1:7000/x",
	} {
		_, err := platform.ParseRedis(platform.RedisCluster, url)
		require.Error(t, err, url)
		assert.True(t, strings.HasPrefix(err.Error(), "REDIS_URL: "), err.Error())
		assert.NotContains(t, err.Error(), "hunter2", "no secret")
	}
}

// A pipeline's buffers that REDIS_URL sizes (go-redis takes
// pipeline_read_buffer_size= and pipeline_write_buffer_size= in every mode)
// are the URL's, as its pool_size and timeouts are; the others BufferSize.
func TestParseRedisPipelineBuffers(t *testing.T) {
	t.Parallel()
	const q = "pipeline_read_buffer_size=65536&pipeline_write_buffer_size=32768"
	for _, tt := range []struct{ mode, url string }{
		{platform.RedisSingle, "redis://127.0.0.1:1/0?" + q},
		{platform.RedisSentinel, "redis://127.0.0.1:26379?master_name=primary&" + q},
		{platform.RedisCluster, "redis://127.0.0.1:7000?" + q},
	} {
		r, err := platform.ParseRedis(tt.mode, tt.url)
		require.NoError(t, err, tt.mode)
		c := r.Client()
		t.Cleanup(func() { _ = c.Close() })
		var read, write, conn int
		switch c := c.(type) {
		case *redis.Client:
			read, write, conn = c.Options().PipelineReadBufferSize, c.Options().PipelineWriteBufferSize, c.Options().ReadBufferSize
		case *redis.ClusterClient:
			read, write, conn = c.Options().PipelineReadBufferSize, c.Options().PipelineWriteBufferSize, c.Options().ReadBufferSize
		}
		assert.Equal(t, 65536, read, tt.mode)
		assert.Equal(t, 32768, write, tt.mode)
		assert.Equal(t, platform.BufferSize, conn, tt.mode)
	}
}
