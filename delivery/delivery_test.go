package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/mail"
)

// The status follows a code from its send to its mail: queued by the send
// step, sending, retrying with the failure's class, sent; a re-run of a
// task that sent finds it did; verify clears it; a gone code is expired.
func TestDeliveryStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, limits.Config{})
	now := time.Unix(time.Now().Unix(), 0) // asynq keeps whole seconds
	status := func(email string) delivery.Status {
		t.Helper()
		st, err := s.Status(ctx, codes.ID{Email: email}, now)
		require.NoError(t, err)
		return st
	}
	assert.Equal(t, delivery.Status{State: delivery.StateNone}, status("d@example.com"))

	issued, err := s.GetOrCreate(ctx, limits.Request{Email: "d@example.com"})
	require.NoError(t, err)
	st := status("d@example.com")
	assert.Equal(t, delivery.StateQueued, st.State)
	assert.Greater(t, st.ExpiresIn, 590*time.Second)

	at, err := s.Begin(ctx, codes.ID{Email: "d@example.com"}, "task-1", codes.DefaultTTL)
	require.NoError(t, err)
	require.False(t, at.Done)
	assert.Equal(t, issued.Code, at.Live.Code)
	assert.Equal(t, delivery.StateSending, status("d@example.com").State)

	// The next attempt's time is asynq's: the task, as asynq holds it
	// scheduled, answers "next attempt in".
	_, err = asynq.NewClientFromRedisClient(rdb).EnqueueContext(ctx, asynq.NewTask("code:send", nil),
		asynq.TaskID("task-1"), asynq.Queue(testQueue), asynq.ProcessAt(now.Add(3*time.Second)))
	require.NoError(t, err)
	temp := fmt.Errorf("send: %w", &mail.SMTPError{Code: 451, Msg: "4.7.1 greylisted, user d@example.com"})
	require.NoError(t, s.Retrying(ctx, codes.ID{Email: "d@example.com"}, temp))
	st = status("d@example.com")
	assert.Equal(t, delivery.StateRetrying, st.State)
	assert.Equal(t, 1, st.Attempts)
	assert.Equal(t, 3*time.Second, st.NextAttemptIn)
	assert.Equal(t, delivery.FailureTemporary, st.LastFailure)
	assert.Equal(t, 451, st.Reply)
	raw, err := rdb.HGetAll(ctx, s.StatusKey(codes.ID{Email: "d@example.com"})).Result()
	require.NoError(t, err)
	assert.Equal(t, "task-1", raw["task"])
	assert.Equal(t, testQueue, raw["queue"])
	assert.NotContains(t, raw, "next_at", "the time is asynq's, not kept twice")
	require.NoError(t, asynq.NewInspectorFromRedisClient(rdb).DeleteTask(testQueue, "task-1"))
	assert.Zero(t, status("d@example.com").NextAttemptIn, "no task: no next attempt")

	_, err = s.Begin(ctx, codes.ID{Email: "d@example.com"}, "task-1", codes.DefaultTTL)
	require.NoError(t, err)
	sentAt := time.UnixMilli(now.UnixMilli())
	require.NoError(t, s.Sent(ctx, codes.ID{Email: "d@example.com"}, "task-1", sentAt))
	st = status("d@example.com")
	assert.Equal(t, delivery.StateSent, st.State)
	assert.Equal(t, 2, st.Attempts)
	assert.True(t, sentAt.Equal(st.SentAt))
	assert.Empty(t, st.LastFailure)
	assert.Zero(t, st.Reply)

	again, err := s.Begin(ctx, codes.ID{Email: "d@example.com"}, "task-1", codes.DefaultTTL)
	require.NoError(t, err)
	assert.True(t, again.Done && again.AlreadySent, "the task ran again: no second mail")
	other, err := s.Begin(ctx, codes.ID{Email: "d@example.com"}, "task-2", codes.DefaultTTL)
	require.NoError(t, err)
	assert.False(t, other.Done, "another task of the address still mails")

	raw, err = rdb.HGetAll(ctx, s.StatusKey(codes.ID{Email: "d@example.com"})).Result()
	require.NoError(t, err)
	for _, v := range raw {
		assert.NotEqual(t, issued.Code, v, "the status never holds the code")
		assert.NotContains(t, v, "greylisted", "nor the server's text")
	}

	require.NoError(t, s.Verify(ctx, codes.ID{Email: "d@example.com"}, issued.Code))
	assert.Equal(t, delivery.StateNone, status("d@example.com").State, "a verified code leaves no status")

	_, err = s.GetOrCreate(ctx, limits.Request{Email: "e@example.com"})
	require.NoError(t, err)
	require.NoError(t, rdb.Del(ctx, "code_e@example.com").Err())
	assert.Equal(t, delivery.StateExpired, status("e@example.com").State)
	gone, err := s.Begin(ctx, codes.ID{Email: "e@example.com"}, "task-3", codes.DefaultTTL)
	require.NoError(t, err)
	assert.True(t, gone.Done)
	assert.False(t, gone.AlreadySent)
	ttl, err := rdb.PTTL(ctx, s.StatusKey(codes.ID{Email: "e@example.com"})).Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, delivery.StatusLinger, "the status outlives its code")
}

// A permanent failure makes the status undeliverable; on the suppression
// list, the mailbox (any spelling) is refused new sends until lifted.
func TestSuppression(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, limits.Config{Identity: plusTags})
	sup := delivery.NewSuppressions(rdb, plusTags)
	now := time.Now()

	_, err := s.GetOrCreate(ctx, limits.Request{Email: "Gone+x@example.com"})
	require.NoError(t, err)
	_, err = s.Begin(ctx, codes.ID{Email: "Gone+x@example.com"}, "t1", codes.DefaultTTL)
	require.NoError(t, err)
	perm := fmt.Errorf("send: %w", &mail.SMTPError{Code: 550, Msg: "5.1.1 no such user"})
	require.NoError(t, s.Failed(ctx, codes.ID{Email: "Gone+x@example.com"}, perm))
	st, err := s.Status(ctx, codes.ID{Email: "Gone+x@example.com"}, now)
	require.NoError(t, err)
	assert.Equal(t, delivery.StateUndeliverable, st.State)
	assert.Equal(t, 550, st.Reply)
	assert.Equal(t, delivery.FailurePermanent, st.LastFailure)

	require.NoError(t, sup.Add(ctx, "Gone+x@example.com", 550, time.Hour, now))
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "gone@example.com"})
	var se *delivery.SuppressedError
	require.ErrorAs(t, err, &se)
	assert.ErrorIs(t, err, delivery.ErrSuppressed)
	assert.Greater(t, se.For, 59*time.Minute)

	list, err := sup.List(ctx, 100)
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, "G***@example.com", list[0].Masked, "only masked")
	assert.Equal(t, 550, list[0].Reply)
	assert.Equal(t, delivery.MailboxID("gone@example.com"), list[0].ID)
	keys := redistest.Keys(ctx, t, rdb, delivery.SuppressPrefix+"*")
	for _, k := range keys {
		v, _ := rdb.Get(ctx, k).Result()
		assert.NotContains(t, k+v, "Gone+x@example.com", "no full address in the list")
		assert.NotContains(t, k+v, "gone@example.com")
	}

	lifted, err := sup.Lift(ctx, "GONE@example.com")
	require.NoError(t, err)
	assert.True(t, lifted)
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "gone@example.com"})
	require.NoError(t, err, "lifted: sends go through")
	lifted, err = sup.LiftID(ctx, list[0].ID)
	require.NoError(t, err)
	assert.False(t, lifted, "nothing left to lift")
	_, err = sup.Lift(ctx, "not an address@")
	assert.True(t, errors.Is(err, mail.ErrInvalidAddress))
}
