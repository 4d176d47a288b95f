package script_test

import (
	"context"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/internal/script"
)

// TestMain closes the deployments redistest.Shared pooled.
func TestMain(m *testing.M) { os.Exit(redistest.Run(m)) }

var incr = redis.NewScript(`return redis.call('INCR', KEYS[1])`)

// A script Redis does not know (never loaded on this server, as after a
// restart) is loaded and run again; a call that did run is not run twice.
func TestRunLoadsUnknownScripts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	known := redis.NewScript(`return redis.call('INCR', KEYS[1]) + 0`)
	require.NoError(t, known.Load(ctx, rdb).Err())

	cmds, err := script.Run(ctx, rdb,
		script.Call{Script: known, Keys: []string{"a"}},
		script.Call{Command: []any{"INCR", "c"}},
		script.Call{Script: incr, Keys: []string{"b"}})
	require.NoError(t, err)
	replies := make([]int64, len(cmds))
	for i, c := range cmds {
		replies[i], err = c.Int64()
		require.NoError(t, err)
	}
	assert.Equal(t, []int64{1, 1, 1}, replies)
	assert.Equal(t, "1", rdb.Get(ctx, "a").Val(), "the call that ran is not run again")
	assert.Equal(t, "1", rdb.Get(ctx, "c").Val(), "nor the plain command")
	assert.Equal(t, "1", rdb.Get(ctx, "b").Val())
}

// A call that failed otherwise in the pipeline where a script was unknown
// (a plain command refused, here one of the wrong type) still fails Run:
// running the unknown script again does not hide it.
func TestRunReportsOtherFailuresBesideUnknownScripts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	require.NoError(t, rdb.Set(ctx, "s", "a string", 0).Err())
	unknown := redis.NewScript(`return redis.call('INCR', KEYS[1]) + 1`)

	cmds, err := script.Run(ctx, rdb,
		script.Call{Script: unknown, Keys: []string{"b"}},
		script.Call{Command: []any{"ZADD", "s", 1, "m"}})
	require.Error(t, err)
	assert.True(t, redis.HasErrorPrefix(err, "WRONGTYPE"), "%v", err)
	require.Len(t, cmds, 2)
	n, cerr := cmds[0].Int64()
	require.NoError(t, cerr, "the unknown script was loaded and run")
	assert.Equal(t, int64(2), n)
}

// Replies reads each reply as a list and names the place of a bad one.
func TestReplies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Shared(t).UniversalClient(t)
	list := redis.NewScript(`return {'ok', 1}`)
	empty := redis.NewScript(`return {}`)
	cmds, err := script.Run(ctx, rdb, script.Call{Script: list, Keys: []string{"x"}}, script.Call{Script: empty, Keys: []string{"y"}})
	require.NoError(t, err)
	_, err = script.Replies(cmds)
	require.ErrorIs(t, err, script.ErrEmptyReply)
	assert.Contains(t, err.Error(), "reply 1")
	replies, err := script.Replies(cmds[:1])
	require.NoError(t, err)
	assert.Equal(t, [][]any{{"ok", int64(1)}}, replies)
}
