package limits_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/script"
	"github.com/verifyq/verifyq/limits"
)

func newSeal(t *testing.T, secret []byte) *codes.Seal {
	t.Helper()
	s, err := codes.NewSeal(secret, nil)
	require.NoError(t, err)
	return s
}

// A sealed resend cannot read the live code back: it mails a new one that
// replaces it, keeping its remaining lifetime and attempts.
func TestSealedResendReplacesTheCode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	seal := newSeal(t, []byte("a test secret of 32 bytes, 01234"))
	s, rdb := newStack(t, codes.Config{Seal: seal, MaxAttempts: 5}, limits.Config{})
	id := codes.ID{Email: "a@example.com"}

	first, err := s.GetOrCreate(ctx, limits.Request{Email: id.Email})
	require.NoError(t, err)
	require.NoError(t, rdb.PExpire(ctx, s.Key(id), 5*time.Second).Err())
	assert.ErrorIs(t, s.Verify(ctx, id, wrongFor(first.Code), ""), codes.ErrMismatch)

	var second limits.Admission
	for second.Code == "" || second.Code == first.Code {
		second, err = s.GetOrCreate(ctx, limits.Request{Email: id.Email})
		require.NoError(t, err)
	}
	assert.False(t, second.Created)
	assert.LessOrEqual(t, second.ExpiresIn, 5*time.Second, "not extended")
	assert.Equal(t, "1", rdb.Get(ctx, s.AttemptsKey(id)).Val(), "attempts kept")

	// Undo of the resend brings the first code back.
	require.NoError(t, s.Undo(ctx, second))
	assert.Equal(t, seal.MAC(id, first.Code), rdb.Get(ctx, s.Key(id)).Val())

	third, err := s.GetOrCreate(ctx, limits.Request{Email: id.Email})
	require.NoError(t, err)
	if third.Code != first.Code {
		assert.ErrorIs(t, s.Verify(ctx, id, first.Code, ""), codes.ErrMismatch, "the replaced code no longer verifies")
	}
	require.NoError(t, s.Verify(ctx, id, third.Code, ""))
}

// pipelineHook calls before ahead of each pipeline its client sends.
type pipelineHook struct{ before func() }

func (pipelineHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (pipelineHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h pipelineHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.before()
		return next(ctx, cmds)
	}
}

// A send that the limits refuse leaves a live code and its status alone,
// not only after its undo but while it runs: the code a user holds still
// verifies, and the status still names the send a worker may be mailing
// (a worker that found another task named would drop its mail as
// replaced), at every round trip of the refused send. An admitted resend
// then issues the code in a round trip of its own, its entry in the index
// of open sends again with it.
func TestRefusedSendLeavesTheLiveCodeAlone(t *testing.T) {
	t.Parallel()
	for _, sealed := range []bool{false, true} {
		t.Run(fmt.Sprintf("sealed=%v", sealed), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cc := codes.Config{MaxAttempts: 5}
			if sealed {
				cc.Seal = newSeal(t, []byte("a test secret of 32 bytes, 01234"))
			}
			s, rdb := newStack(t, cc, limits.Config{Cooldown: time.Minute})
			id := codes.ID{Email: "victim@example.com"}
			first, err := s.GetOrCreate(ctx, limits.Request{Email: id.Email, Send: codes.Send{Task: "t1", Queue: "mail"}})
			require.NoError(t, err)
			value := rdb.Get(ctx, s.Key(id)).Val()

			type seen struct{ value, task string }
			var trips []seen
			var before func()
			rdb.AddHook(pipelineHook{before: func() { before() }})
			before = func() {
				trips = append(trips, seen{rdb.Get(ctx, s.Key(id)).Val(), rdb.HGet(ctx, s.StatusKey(id), "task").Val()})
			}
			_, err = s.GetOrCreate(ctx, limits.Request{Email: id.Email, Send: codes.Send{Task: "t2", Queue: "mail"}})
			assert.Equal(t, limits.Cooldown, limitErr(t, err).Limit)
			assert.Equal(t, []seen{{value, "t1"}, {value, "t1"}}, trips,
				"before the admission and before the undo of its index entry")
			assert.Equal(t, value, rdb.Get(ctx, s.Key(id)).Val(), "the user's code")

			// Past the cooldown: admitted, issued in a second round trip. A
			// reconciler's run between the two that took the entry out (the
			// status did not name t3 yet) does not leave the send unindexed.
			s.Now = func() time.Time { return time.Now().Add(2 * time.Minute) }
			trips = nil
			open := delivery.OpenSend{Task: "t3", ID: id}
			count := func() { trips = append(trips, seen{}) }
			before = func() {
				count()
				if len(trips) == 2 {
					before = func() {} // the test's own pipeline
					_, err := script.Run(ctx, rdb, open.Remove())
					require.NoError(t, err)
					before = count
				}
			}
			third, err := s.GetOrCreate(ctx, limits.Request{Email: id.Email, Send: codes.Send{Task: "t3", Queue: "mail"}})
			require.NoError(t, err)
			before = func() {}
			assert.Len(t, trips, 2, "the admission, then the issue")
			assert.False(t, third.Created)
			assert.Positive(t, third.ExpiresIn)
			assert.Equal(t, "t3", rdb.HGet(ctx, s.StatusKey(id), "task").Val())
			sends, err := s.records.OpenSends(ctx, open.Shard(), time.Now(), 10)
			require.NoError(t, err)
			assert.Contains(t, sends, open)
			if sealed {
				assert.NotEqual(t, value, rdb.Get(ctx, s.Key(id)).Val(), "a new code replaced the first")
			} else {
				assert.Equal(t, first.Code, third.Code, "the same code")
			}
			require.NoError(t, s.Verify(ctx, id, third.Code, ""))
		})
	}
}
