package redistest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/redistest"
)

// The primary is killed: the sentinels promote the replica, the failover
// client writes on it with what was written before, and the old primary
// comes back as the new primary's replica. The sentinels wait 3 s, not 1:
// with the old primary back, a second failover would make it the primary
// again (see WithDownAfter).
func TestSentinelFailoverToReplica(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := redistest.StartSentinel(t, redistest.WithDownAfter(3*time.Second))
	rdb := s.Client(t)

	old, err := s.PrimaryAddr()
	require.NoError(t, err)
	assert.Equal(t, s.DataAddrs()[0], old, "the first data node starts as the primary")
	assert.Equal(t, "master", role(ctx, t, old))
	assert.Equal(t, "slave", role(ctx, t, s.DataAddrs()[1]))

	require.NoError(t, rdb.Set(ctx, "before", "1", 0).Err())
	require.Equal(t, int64(1), nodeClient(t, old).Wait(ctx, 1, time.Second).Val(), "the key reached the replica")

	killed, err := s.KillPrimary()
	require.NoError(t, err)
	assert.Equal(t, old, killed)
	require.Error(t, nodeClient(t, old).Ping(ctx).Err(), "the old primary is gone")

	primary, err := s.WaitFailover(30 * time.Second)
	require.NoError(t, err)
	assert.Equal(t, s.DataAddrs()[1], primary, "the replica was promoted")
	now, err := s.PrimaryAddr()
	require.NoError(t, err)
	assert.Equal(t, primary, now)

	// The failover client finds the new primary through the sentinels; a
	// request or two may still meet the dead connection.
	require.Eventually(t, func() bool { return rdb.Set(ctx, "after", "2", 0).Err() == nil },
		10*time.Second, 50*time.Millisecond, "the failover client writes on the new primary")
	assert.Equal(t, "1", rdb.Get(ctx, "before").Val(), "what was written before survived")
	direct := nodeClient(t, primary)
	assert.Equal(t, "2", direct.Get(ctx, "after").Val(), "the write landed on the promoted replica")
	assert.Equal(t, []string{switchLine(old, primary)}, switches(t, s), "one failover, from the killed primary to the replica")

	require.NoError(t, s.Restart(old))
	require.NoError(t, s.WaitHealthy(30*time.Second))
	assert.Equal(t, "slave", role(ctx, t, old), "the old primary is a replica now")
	assert.Len(t, switches(t, s), 1, "and stays one")
	assert.Eventually(t, func() bool { return nodeClient(t, old).Get(ctx, "after").Val() == "2" },
		10*time.Second, 50*time.Millisecond, "and it copied the new primary")
}

func TestSentinelURLIsGoRedisFailoverURL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := redistest.StartSentinel(t)
	require.Len(t, s.SentinelAddrs(), redistest.SentinelCount)

	opts, err := redis.ParseFailoverURL(s.URL())
	require.NoError(t, err)
	assert.Equal(t, s.MasterName(), opts.MasterName)
	assert.Equal(t, s.SentinelAddrs(), opts.SentinelAddrs)
	assert.Zero(t, opts.DB)
	rdb := redis.NewFailoverClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	require.NoError(t, rdb.Set(ctx, "via-url", "1", 0).Err())
	primary, err := s.PrimaryAddr()
	require.NoError(t, err)
	assert.Equal(t, "1", nodeClient(t, primary).Get(ctx, "via-url").Val())
	assert.Equal(t, redistest.ModeSentinel, s.Mode())
}

func TestSentinelWaitFailoverWithoutKillFails(t *testing.T) {
	t.Parallel()
	s, err := redistest.NewSentinel()
	require.NoError(t, err)
	defer s.Close()
	_, err = s.WaitFailover(time.Second)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "KillPrimary")
}

// role is the first field of ROLE of the node at addr: master or slave.
func role(ctx context.Context, t *testing.T, addr string) string {
	t.Helper()
	v, err := nodeClient(t, addr).Do(ctx, "ROLE").Slice()
	require.NoError(t, err)
	require.NotEmpty(t, v)
	r, _ := v[0].(string)
	return r
}

// With a replication delay the replica gets the primary's writes that much
// later, and a kill loses the writes it had not received: the link drops
// them with the primary. The clients, the sentinels and the failover work
// through the link as without it.
func TestSentinelReplicationDelay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const delay = 500 * time.Millisecond
	s := redistest.StartSentinel(t, redistest.WithReplicationDelay(delay))
	rdb := s.Client(t)
	primary, err := s.PrimaryAddr()
	require.NoError(t, err)
	assert.Equal(t, s.LinkAddr(), primary, "everyone knows the primary by its link")
	replica := nodeClient(t, s.DataAddrs()[1])

	start := time.Now()
	require.NoError(t, rdb.Set(ctx, "early", "1", 0).Err())
	assert.Equal(t, redis.Nil, replica.Get(ctx, "early").Err(), "not on the replica yet")
	require.Eventually(t, func() bool { return replica.Get(ctx, "early").Val() == "1" }, 5*time.Second, 10*time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(start), delay, "the replica got it the delay late")

	require.NoError(t, rdb.Set(ctx, "late", "1", 0).Err())
	_, err = s.KillPrimary()
	require.NoError(t, err)
	promoted, err := s.WaitFailover(30 * time.Second)
	require.NoError(t, err)
	assert.Equal(t, s.DataAddrs()[1], promoted)
	require.Eventually(t, func() bool { return rdb.Set(ctx, "after", "1", 0).Err() == nil }, 10*time.Second, 50*time.Millisecond)
	assert.Equal(t, "1", rdb.Get(ctx, "early").Val(), "what the replica had survived")
	assert.Equal(t, redis.Nil, rdb.Get(ctx, "late").Err(), "what it had not was lost with the primary")
}

// switches is the changes of primary s's sentinels logged.
func switches(t *testing.T, s *redistest.Sentinel) []string {
	t.Helper()
	log, err := s.FailoverLog()
	require.NoError(t, err)
	return redistest.Switches(log)
}

// switchLine is how a sentinel logs the change of primary from one
// address to another.
func switchLine(from, to string) string {
	return strings.Join([]string{"+switch-master", redistest.SentinelMasterName,
		strings.Replace(from, ":", " ", 1), strings.Replace(to, ":", " ", 1)}, " ")
}

func TestSentinelWithDownAfter(t *testing.T) {
	for _, c := range []struct {
		opts []redistest.Option
		want string
	}{
		{nil, "1000"},
		{[]redistest.Option{redistest.WithDownAfter(3 * time.Second)}, "3000"},
	} {
		s := redistest.StartSentinel(t, c.opts...)
		for _, addr := range s.SentinelAddrs() {
			sc := redis.NewSentinelClient(&redis.Options{Addr: addr})
			m, err := sc.Master(context.Background(), redistest.SentinelMasterName).Result()
			_ = sc.Close()
			require.NoError(t, err)
			assert.Equal(t, c.want, m["down-after-milliseconds"], "sentinel %s", addr)
		}
	}
}

// The pool's Sentinel deployments, which no test fails over, wait longer
// than a second before they count a slow primary down.
func TestSharedSentinelWaitsLongerBeforeAFailover(t *testing.T) {
	t.Setenv(redistest.EnvMode, redistest.ModeSentinel)
	o, err := redis.ParseFailoverURL(redistest.Shared(t).URL())
	require.NoError(t, err)
	require.Len(t, o.SentinelAddrs, redistest.SentinelCount)
	for _, addr := range o.SentinelAddrs {
		sc := redis.NewSentinelClient(&redis.Options{Addr: addr})
		m, err := sc.Master(context.Background(), redistest.SentinelMasterName).Result()
		_ = sc.Close()
		require.NoError(t, err)
		assert.Equal(t, "5000", m["down-after-milliseconds"], "sentinel %s", addr)
	}
}
