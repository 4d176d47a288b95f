package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/servicetest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/relay"
	"github.com/verifyq/verifyq/returnpath"
)

// send admits a send of email whose task is task, as the enqueuer does.
func (s *stack) send(t *testing.T, email, task string) limits.Admission {
	t.Helper()
	a, err := s.limiter.Admit(context.Background(), limits.Request{Email: email, Send: codes.Send{Task: task, Queue: testQueue, Locale: "en"}})
	require.NoError(t, err)
	return a
}

// open lists every entry of the index.
func (s *stack) open(t *testing.T) []delivery.OpenSend {
	t.Helper()
	var all []delivery.OpenSend
	for n := range delivery.OpenShards {
		sends, err := s.OpenSends(context.Background(), n, time.Now(), 100)
		require.NoError(t, err)
		all = append(all, sends...)
	}
	return all
}

// The status names the send's task from its admission, with its queue and
// locale. A resend's task takes the status over: the older task still
// mails (the same code), but its end does not say the newer send ended.
func TestStatusNamesTheTask(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, limits.Config{})
	id := codes.ID{Email: "n@example.com"}

	s.send(t, id.Email, "task-a")
	raw, err := rdb.HGetAll(ctx, s.StatusKey(id)).Result()
	require.NoError(t, err)
	assert.Equal(t, "task-a", raw["task"])
	assert.Equal(t, testQueue, raw["queue"])
	assert.Equal(t, "en", raw["locale"])
	assert.NotContains(t, raw, "nonce")

	// A resend of the code before task-a ran: task-b is the code's now.
	s.send(t, id.Email, "task-b")
	a, err := s.Begin(ctx, id, "task-a", codes.DefaultTTL)
	require.NoError(t, err)
	require.False(t, a.Done, "task-a still mails the code")
	raw, err = rdb.HGetAll(ctx, s.StatusKey(id)).Result()
	require.NoError(t, err)
	assert.Equal(t, "task-b", raw["task"], "task-a does not take task-b's status over")
	assert.Equal(t, delivery.StateQueued, raw["state"])
	assert.Equal(t, "1", raw["attempts"], "its attempt counts")
	require.NoError(t, s.Sent(ctx, id, "task-a", delivery.Acceptance{At: time.Now()}))
	st, err := s.Status(ctx, id, time.Now())
	require.NoError(t, err)
	assert.Equal(t, delivery.StateQueued, st.State, "task-a's end does not end task-b's send")
	again, err := s.Begin(ctx, id, "task-a", codes.DefaultTTL)
	require.NoError(t, err)
	assert.True(t, again.AlreadySent, "task-a's own record stops its re-run")
	b, err := s.Begin(ctx, id, "task-b", codes.DefaultTTL)
	require.NoError(t, err)
	assert.False(t, b.Done, "task-b mails")
	require.NoError(t, s.Sent(ctx, id, "task-b", delivery.Acceptance{At: time.Now()}))
	st, err = s.Status(ctx, id, time.Now())
	require.NoError(t, err)
	assert.Equal(t, delivery.StateSent, st.State)
}

// A failed enqueue's undo gives the status back to the send before it,
// task and all, and takes its entry out of the index.
func TestUndoRestoresTheTask(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, limits.Config{})
	id := codes.ID{Email: "u@example.com"}
	s.send(t, id.Email, "task-a")
	second, err := s.limiter.Admit(ctx, limits.Request{Email: id.Email, Send: codes.Send{Task: "task-b", Queue: "mail-3"}})
	require.NoError(t, err)
	require.NoError(t, second.Undo(ctx))
	raw, err := rdb.HGetAll(ctx, s.StatusKey(id)).Result()
	require.NoError(t, err)
	assert.Equal(t, "task-a", raw["task"])
	assert.Equal(t, testQueue, raw["queue"])
	assert.Equal(t, "en", raw["locale"])
	assert.Equal(t, []delivery.OpenSend{{Task: "task-a", ID: id}}, s.open(t), "the taken-back send left the index")
}

// Every admitted send is in the index of open sends until its task ends
// it (sent, or given up); a refused send is not; an entry past its code's
// lifetime is dropped unread, and so is one that is not an entry.
func TestIndexOfOpenSends(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, limits.Config{Cooldown: time.Minute})
	s.send(t, "o1@example.com", "t1")
	s.send(t, "o2@example.com", "t2")
	s.send(t, "o3@example.com", "t3")
	_, err := s.limiter.Admit(ctx, limits.Request{Email: "o1@example.com", Send: codes.Send{Task: "t1-again", Queue: testQueue}})
	require.ErrorIs(t, err, limits.ErrRateLimited)
	assert.ElementsMatch(t, []delivery.OpenSend{
		{Task: "t1", ID: codes.ID{Email: "o1@example.com"}},
		{Task: "t2", ID: codes.ID{Email: "o2@example.com"}},
		{Task: "t3", ID: codes.ID{Email: "o3@example.com"}},
	}, s.open(t), "the refused send is not open")

	require.NoError(t, s.Sent(ctx, codes.ID{Email: "o1@example.com"}, "t1", delivery.Acceptance{At: time.Now()}))
	require.NoError(t, s.Retrying(ctx, codes.ID{Email: "o2@example.com"}, "t2", errors.New("451")))
	require.NoError(t, s.Failed(ctx, codes.ID{Email: "o3@example.com"}, "t3", errors.New("550")))
	assert.Equal(t, []delivery.OpenSend{{Task: "t2", ID: codes.ID{Email: "o2@example.com"}}}, s.open(t),
		"a sent send and a given-up one leave; a retrying one stays")

	o2 := delivery.OpenSend{Task: "t2", ID: codes.ID{Email: "o2@example.com"}}
	require.NoError(t, rdb.ZAdd(ctx, o2.Key(), redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli()), Member: "not an entry"}).Err())
	later := time.Now().Add(codes.DefaultTTL + time.Second)
	sends, err := s.OpenSends(ctx, o2.Shard(), later, 100)
	require.NoError(t, err)
	assert.Empty(t, sends, "past the code's lifetime")
	n, err := rdb.ZCard(ctx, o2.Key()).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "dropped, with the malformed member")
}

// Requeue writes only while the status is as read and the code lives, and
// at most max times.
func TestRequeue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, limits.Config{})
	id := codes.ID{Email: "r@example.com", Purpose: "login"}
	_, err := s.limiter.Admit(ctx, limits.Request{Email: id.Email, Purpose: id.Purpose, Send: codes.Send{Task: "t1", Queue: testQueue}})
	require.NoError(t, err)
	open := delivery.OpenSend{Task: "t1", ID: id}
	look := func() delivery.Record {
		t.Helper()
		recs, err := s.Look(ctx, []delivery.OpenSend{open})
		require.NoError(t, err)
		return recs[0]
	}
	seen := look()
	assert.Equal(t, delivery.StateQueued, seen.State)
	assert.Equal(t, "t1", seen.Task)
	assert.Positive(t, seen.Left)
	assert.False(t, seen.QueuedAt.IsZero())

	// A worker began it since: changed.
	_, err = s.Begin(ctx, id, "t1", codes.DefaultTTL)
	require.NoError(t, err)
	_, err = s.Requeue(ctx, open, seen, "t1", "mail", time.Now(), 2)
	require.ErrorIs(t, err, delivery.ErrChanged)

	seen = look()
	assert.Equal(t, delivery.StateSending, seen.State)
	assert.False(t, seen.BeganAt.IsZero())
	left, err := s.Requeue(ctx, open, seen, "t2", "mail", time.Now(), 2)
	require.NoError(t, err)
	assert.Positive(t, left)
	rec := look()
	assert.Equal(t, delivery.StateQueued, rec.State)
	assert.Equal(t, "t2", rec.Task, "the new task is the send's")
	assert.Equal(t, "mail", rec.Queue)
	assert.Equal(t, 1, rec.Requeued)
	old, err := s.Begin(ctx, id, "t1", codes.DefaultTTL)
	require.NoError(t, err)
	assert.True(t, old.Superseded, "the task it replaced mails nothing")

	open.Task = "t2"
	_, err = s.Requeue(ctx, open, look(), "t2", "mail", time.Now(), 2)
	require.NoError(t, err)
	_, err = s.Requeue(ctx, open, look(), "t2", "mail", time.Now(), 2)
	require.ErrorIs(t, err, delivery.ErrGivenUp)

	require.NoError(t, rdb.Del(ctx, s.Key(id)).Err())
	_, err = s.Requeue(ctx, open, look(), "t2", "mail", time.Now(), 5)
	require.ErrorIs(t, err, codes.ErrNotFound)
}

// A send refused by a limit, and a failed enqueue's undo, leave the status
// as they found it: the last failure's class and reply, and a bounce's
// status code and diagnostic, stay with the state they explain.
func TestRefusedSendKeepsTheStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, limits.Config{Cooldown: time.Minute})
	retrying, bounced := codes.ID{Email: "k1@example.com"}, codes.ID{Email: "k2@example.com"}
	s.send(t, retrying.Email, "t1")
	_, err := s.Begin(ctx, retrying, "t1", codes.DefaultTTL)
	require.NoError(t, err)
	temp := fmt.Errorf("send: %w", &relay.Error{Stage: relay.StageRcpt, Code: 450, Enhanced: "4.2.0", Text: "greylisted"})
	require.NoError(t, s.Retrying(ctx, retrying, "t1", temp))
	s.send(t, bounced.Email, "t2")
	_, err = s.Begin(ctx, bounced, "t2", codes.DefaultTTL)
	require.NoError(t, err)
	require.NoError(t, s.Sent(ctx, bounced, "t2", delivery.Acceptance{At: time.Now()}))
	ok, err := s.Reported(ctx, bounced, returnpath.SendID("t2"), delivery.Report{State: delivery.StateBounced, DSN: "5.1.1", Diagnostic: "user unknown"})
	require.NoError(t, err)
	require.True(t, ok)

	for _, id := range []codes.ID{retrying, bounced} {
		before, err := rdb.HGetAll(ctx, s.StatusKey(id)).Result()
		require.NoError(t, err)
		_, err = s.limiter.Admit(ctx, limits.Request{Email: id.Email, Send: codes.Send{Task: "again", Queue: testQueue}})
		require.ErrorIs(t, err, limits.ErrRateLimited)
		after, err := rdb.HGetAll(ctx, s.StatusKey(id)).Result()
		require.NoError(t, err)
		assert.Equal(t, before, after, "a refused send leaves the status of %s as it was", id.Email)
	}

	// The same for a send admitted and taken back (its enqueue failed).
	servicetest.EndCooldowns(ctx, t, rdb, delivery.MailboxID(retrying.Email), time.Minute)
	before, err := rdb.HGetAll(ctx, s.StatusKey(retrying)).Result()
	require.NoError(t, err)
	a, err := s.limiter.Admit(ctx, limits.Request{Email: retrying.Email, Send: codes.Send{Task: "t3", Queue: testQueue}})
	require.NoError(t, err)
	require.NoError(t, a.Undo(ctx))
	after, err := rdb.HGetAll(ctx, s.StatusKey(retrying)).Result()
	require.NoError(t, err)
	assert.Equal(t, before, after, "the undo gives the status back whole")
}
