package delivery_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/returnpath"
)

// A report about a sent mail changes the status only while the status
// follows that send (its task, by returnpath.SendID, which the script
// computes again with redis.sha1hex): a later send's status, or one that is
// gone, stays as it is. Bounced and complained outlive the code, as
// undeliverable does; a resend clears what the bounce said.
func TestReported(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, limits.Config{})
	id := codes.ID{Email: "r@example.com", Purpose: "login"}
	status := func() delivery.Status {
		t.Helper()
		st, err := s.Status(ctx, id, time.Now())
		require.NoError(t, err)
		return st
	}
	bounce := delivery.Report{State: delivery.StateBounced, DSN: "5.1.1", Diagnostic: "5.1.1 <r@example.com>: Recipient address rejected: User unknown"}

	ok, err := s.Reported(ctx, id, returnpath.SendID("task-1"), bounce)
	require.NoError(t, err)
	assert.False(t, ok, "no status")
	assert.Equal(t, delivery.StateNone, status().State)

	_, err = s.GetOrCreate(ctx, limits.Request{Email: id.Email, Purpose: id.Purpose})
	require.NoError(t, err)
	_, err = s.Begin(ctx, id, "task-1", codes.DefaultTTL)
	require.NoError(t, err)
	require.NoError(t, s.Sent(ctx, id, "task-1", delivery.Acceptance{At: time.Now()}))

	ok, err = s.Reported(ctx, id, returnpath.SendID("task-0"), bounce)
	require.NoError(t, err)
	assert.False(t, ok, "another send's report")
	assert.Equal(t, delivery.StateSent, status().State)

	ok, err = s.Reported(ctx, id, returnpath.SendID("task-1"), bounce)
	require.NoError(t, err)
	assert.True(t, ok)
	st := status()
	assert.Equal(t, delivery.StateBounced, st.State)
	assert.Equal(t, "5.1.1", st.DSN)
	assert.Equal(t, "<r***@example.com>: Recipient address rejected: User unknown", st.Diagnostic, "masked, without its status code")
	assert.False(t, st.SentAt.IsZero(), "it was sent before it bounced")

	ok, err = s.Reported(ctx, id, returnpath.SendID("task-1"), delivery.Report{State: delivery.StateComplained})
	require.NoError(t, err)
	assert.True(t, ok)
	st = status()
	assert.Equal(t, delivery.StateComplained, st.State)
	assert.Empty(t, st.DSN)
	assert.Empty(t, st.Diagnostic)

	require.NoError(t, rdb.Del(ctx, s.Key(id)).Err())
	assert.Equal(t, delivery.StateComplained, status().State, "the code is gone: still complained, not expired")

	_, err = s.GetOrCreate(ctx, limits.Request{Email: id.Email, Purpose: id.Purpose})
	require.NoError(t, err)
	_, err = s.Begin(ctx, id, "task-2", codes.DefaultTTL)
	require.NoError(t, err)
	ok, err = s.Reported(ctx, id, returnpath.SendID("task-1"), bounce)
	require.NoError(t, err)
	assert.False(t, ok, "a later send took the status over")
	assert.Equal(t, delivery.StateSending, status().State)

	// A resend of a live code clears what the last bounce said.
	ok, err = s.Reported(ctx, id, returnpath.SendID("task-2"), bounce)
	require.NoError(t, err)
	require.True(t, ok)
	_, err = s.GetOrCreate(ctx, limits.Request{Email: id.Email, Purpose: id.Purpose})
	require.NoError(t, err)
	st = status()
	assert.Equal(t, delivery.StateQueued, st.State)
	assert.Empty(t, st.DSN)
	assert.Empty(t, st.Diagnostic)

	for _, bad := range []delivery.Report{{State: delivery.StateSent}, {State: delivery.StateBounced, DSN: "5.1"}} {
		_, err = s.Reported(ctx, id, returnpath.SendID("task-2"), bad)
		assert.Error(t, err, "%+v", bad)
	}
}

// A quick relay's DSN can be taken before the worker records the
// acceptance it follows: the record of the sent mail then leaves the
// report's state as it is (and still writes the task's dedup and the time).
func TestReportedBeforeSentStays(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStack(t, limits.Config{})
	id := codes.ID{Email: "quick@example.com"}
	_, err := s.GetOrCreate(ctx, limits.Request{Email: id.Email})
	require.NoError(t, err)
	_, err = s.Begin(ctx, id, "task-1", codes.DefaultTTL)
	require.NoError(t, err)
	ok, err := s.Reported(ctx, id, returnpath.SendID("task-1"), delivery.Report{State: delivery.StateBounced, DSN: "5.1.1"})
	require.NoError(t, err)
	require.True(t, ok)

	require.NoError(t, s.Sent(ctx, id, "task-1", delivery.Acceptance{At: time.Now(), Relay: "primary"}))
	st, err := s.Status(ctx, id, time.Now())
	require.NoError(t, err)
	assert.Equal(t, delivery.StateBounced, st.State, "the bounce stays")
	assert.Equal(t, "5.1.1", st.DSN)
	assert.Equal(t, "primary", st.Relay)
	assert.False(t, st.SentAt.IsZero())

	at, err := s.Begin(ctx, id, "task-1", codes.DefaultTTL)
	require.NoError(t, err)
	assert.True(t, at.AlreadySent, "a re-run of the task mails nothing")
}
