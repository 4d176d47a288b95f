package redistest_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/redistest"
)

func TestClusterSpreadsKeysOverThreeMasters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := redistest.StartCluster(t)
	rdb := c.Client(t)

	masters, err := c.Masters()
	require.NoError(t, err)
	require.Len(t, masters, redistest.ClusterMasters)
	assert.ElementsMatch(t, c.Addrs(), masters, "no replicas asked for: every node is a master")

	const keys = 1000
	for i := range keys {
		require.NoError(t, rdb.Set(ctx, fmt.Sprintf("key-%d", i), i, 0).Err())
	}
	total := int64(0)
	for _, m := range masters {
		n, err := nodeClient(t, m).DBSize(ctx).Result()
		require.NoError(t, err)
		assert.Positive(t, n, "master %s holds some of the keys", m)
		total += n
	}
	assert.Equal(t, int64(keys), total, "every key is on exactly one master")

	// A hash tag puts keys on one slot, so one script may use them together;
	// keys of different slots may not be.
	require.NoError(t, rdb.Set(ctx, "{user1}:code", "123456", 0).Err())
	require.NoError(t, rdb.Set(ctx, "{user1}:attempts", "0", 0).Err())
	slot := rdb.ClusterKeySlot(ctx, "{user1}:code").Val()
	assert.Equal(t, slot, rdb.ClusterKeySlot(ctx, "{user1}:attempts").Val())
	holders := 0
	for _, m := range masters {
		// KEYS lists the keys of one node and, unlike EXISTS, never
		// redirects to another.
		local, err := nodeClient(t, m).Keys(ctx, "{user1}:*").Result()
		require.NoError(t, err)
		if len(local) > 0 {
			assert.ElementsMatch(t, []string{"{user1}:code", "{user1}:attempts"}, local, "on %s", m)
			holders++
		}
	}
	assert.Equal(t, 1, holders, "the tagged pair lives on one master")
	const both = `return redis.call("GET", KEYS[1]) .. "/" .. redis.call("GET", KEYS[2])`
	got, err := rdb.Eval(ctx, both, []string{"{user1}:code", "{user1}:attempts"}).Text()
	require.NoError(t, err)
	assert.Equal(t, "123456/0", got)
	err = rdb.Eval(ctx, both, []string{"key-1", "key-2"}).Err()
	require.Error(t, err, "key-1 and key-2 hash to different slots")
	assert.Contains(t, err.Error(), "CROSSSLOT")

	require.NoError(t, c.FlushAll(ctx))
	for _, m := range masters {
		n, err := nodeClient(t, m).DBSize(ctx).Result()
		require.NoError(t, err)
		assert.Zero(t, n, "FlushAll emptied %s", m)
	}
}

func TestClusterURLIsGoRedisClusterURL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := redistest.StartCluster(t)

	opts, err := redis.ParseClusterURL(c.URL())
	require.NoError(t, err)
	assert.Equal(t, c.Addrs(), opts.Addrs)
	rdb := redis.NewClusterClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	require.NoError(t, rdb.Set(ctx, "via-url", "1", 0).Err())
	assert.Equal(t, "1", c.Client(t).Get(ctx, "via-url").Val())
	assert.Equal(t, redistest.ModeCluster, c.Mode())
}

// A master with a replica is killed: the replica takes over its slots, the
// client goes on, and the old master rejoins as a replica.
func TestClusterReplicaTakesOverFromKilledMaster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := redistest.StartCluster(t, redistest.WithReplicas(1))
	require.Len(t, c.Addrs(), 2*redistest.ClusterMasters)
	masters, err := c.Masters()
	require.NoError(t, err)
	require.Len(t, masters, redistest.ClusterMasters)

	rdb := c.Client(t)
	require.NoError(t, rdb.Set(ctx, "survivor", "yes", 0).Err())
	victim := masterOf(ctx, t, c, "survivor")
	// Make sure the replica has the key before its master dies.
	require.Equal(t, int64(1), nodeClient(t, victim).Wait(ctx, 1, time.Second).Val(), "the key reached the replica")

	require.NoError(t, c.Kill(victim))
	require.NoError(t, c.WaitHealthy(20*time.Second))
	// go-redis reloads its slot map on MOVED but not when a node stops
	// answering; until ClusterStateReloadInterval (60 s by default) passes,
	// it is told to.
	rdb.ReloadState(ctx)
	after, err := c.Masters()
	require.NoError(t, err)
	assert.Len(t, after, redistest.ClusterMasters)
	assert.NotContains(t, after, victim)

	assert.Eventually(t, func() bool { return rdb.Get(ctx, "survivor").Val() == "yes" },
		10*time.Second, 50*time.Millisecond, "the client reads the key from the promoted replica")
	require.NoError(t, rdb.Set(ctx, "after-failover", "1", 0).Err())

	require.NoError(t, c.Restart(victim))
	require.NoError(t, c.WaitHealthy(20*time.Second))
	again, err := c.Masters()
	require.NoError(t, err)
	assert.Equal(t, after, again, "the old master came back as a replica")
	assert.Equal(t, "yes", rdb.Get(ctx, "survivor").Val())
}

func TestClusterRejectsTooManyReplicas(t *testing.T) {
	t.Parallel()
	_, err := redistest.NewCluster(redistest.WithReplicas(redistest.MaxReplicas + 1))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "WithReplicas")
}

// masterOf is the address of the master that holds key.
func masterOf(ctx context.Context, t *testing.T, c *redistest.Cluster, key string) string {
	t.Helper()
	masters, err := c.Masters()
	require.NoError(t, err)
	var holders []string
	for _, m := range masters {
		local, err := nodeClient(t, m).Keys(ctx, key).Result()
		require.NoError(t, err)
		if len(local) == 1 {
			holders = append(holders, m)
		}
	}
	require.Len(t, holders, 1, "one master holds %s", key)
	require.True(t, slices.Contains(c.Addrs(), holders[0]))
	return holders[0]
}

// nodeClient is a client of the one node at addr, closed when the test ends.
func nodeClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}
