package replication_test

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/internal/slot"
	"github.com/verifyq/verifyq/replication"
)

// TestMain closes the deployments redistest.Shared pooled.
func TestMain(m *testing.M) { os.Exit(redistest.Run(m)) }

// A wait covers the writes other connections made before it: with the
// replica a delay behind, a write by one client is not on the replica
// after it returns, and is once another client's wait returned.
func TestWaitCoversOtherConnectionsWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := redistest.StartSentinel(t, redistest.WithReplicationDelay(300*time.Millisecond))
	writer, waiter := s.Client(t), s.Client(t) // two clients, two pools: no connection shared
	replica := redis.NewClient(&redis.Options{Addr: s.DataAddrs()[1]})
	t.Cleanup(func() { _ = replica.Close() })

	require.NoError(t, writer.Set(ctx, "unwaited", "1", 0).Err())
	assert.Equal(t, redis.Nil, replica.Get(ctx, "unwaited").Err(), "a write alone is not on the replica at once")

	require.NoError(t, writer.Set(ctx, "waited", "1", 0).Err())
	w := replication.New(waiter, 1, 2*time.Second)
	start := time.Now()
	require.NoError(t, w.Wait(ctx, "waited"))
	assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "the wait took the replica's delay")
	assert.Equal(t, "1", replica.Get(ctx, "waited").Val(), "the other client's write is on the replica")
}

// With fewer replicas than wanted, the wait ends at its timeout with a
// *TooFewError.
func TestWaitTooFew(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t) // no replica
	w := replication.New(rdb, 1, 50*time.Millisecond)
	err := w.Wait(ctx, "k")
	require.ErrorIs(t, err, replication.ErrTooFew)
	var few *replication.TooFewError
	require.ErrorAs(t, err, &few)
	assert.Equal(t, 0, few.Acked)
	assert.Equal(t, 1, few.Want)
}

// On a cluster the wait runs on each primary that holds one of the keys;
// a primary whose replica is down fails it, by its address, and the
// others do not.
func TestWaitOnEachClusterPrimary(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cl := redistest.StartCluster(t, redistest.WithReplicas(1))
	rdb := cl.Client(t)
	// Two keys on two primaries.
	a, b := "{a}:k", ""
	pa, err := rdb.MasterForKey(ctx, a)
	require.NoError(t, err)
	for i := 0; b == ""; i++ {
		k := "{b" + string(rune('0'+i%10)) + strings.Repeat("x", i/10) + "}:k"
		pk, err := rdb.MasterForKey(ctx, k)
		require.NoError(t, err)
		if pk.Options().Addr != pa.Options().Addr {
			b = k
		}
	}
	pb, err := rdb.MasterForKey(ctx, b)
	require.NoError(t, err)
	require.NoError(t, rdb.Set(ctx, a, "1", 0).Err())
	require.NoError(t, rdb.Set(ctx, b, "1", 0).Err())

	w := replication.New(rdb, 1, 500*time.Millisecond)
	require.NoError(t, w.Wait(ctx, a, b))
	for p, k := range map[*redis.Client]string{pa: a, pb: b} {
		n, err := p.Exists(ctx, replication.MarkerKey(k)).Result()
		require.NoError(t, err)
		assert.Equal(t, int64(1), n, "%s holds the marker of %s", p.Options().Addr, k)
	}
	assert.Equal(t, slot.Of(a), slot.Of(replication.MarkerKey(a)), "a marker is in its key's slot")

	require.NoError(t, cl.Kill(replicaOf(ctx, t, pa)))
	err = w.Wait(ctx, a, b)
	require.ErrorIs(t, err, replication.ErrTooFew)
	assert.Contains(t, err.Error(), pa.Options().Addr)
	assert.NotContains(t, err.Error(), pb.Options().Addr)
}

// replicaOf is the address of the replica of the primary p.
func replicaOf(ctx context.Context, t *testing.T, p *redis.Client) string {
	t.Helper()
	info, err := p.Info(ctx, "replication").Result()
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\r\n") {
		if !strings.HasPrefix(line, "slave0:") {
			continue
		}
		var ip, port string
		for _, f := range strings.Split(strings.TrimPrefix(line, "slave0:"), ",") {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "ip":
				ip = v
			case "port":
				port = v
			}
		}
		return net.JoinHostPort(ip, port)
	}
	t.Fatalf("%s has no replica:\n%s", p.Options().Addr, info)
	return ""
}
