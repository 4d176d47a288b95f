package delivery_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/relay"
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
	temp := fmt.Errorf("send: %w", &relay.Error{Stage: relay.StageRcpt, Code: 450, Enhanced: "4.2.0", Text: "greylisted, user d@example.com"})
	require.NoError(t, s.Retrying(ctx, codes.ID{Email: "d@example.com"}, "task-1", temp))
	st = status("d@example.com")
	assert.Equal(t, delivery.StateRetrying, st.State)
	assert.Equal(t, 1, st.Attempts)
	assert.Equal(t, 3*time.Second, st.NextAttemptIn)
	assert.Equal(t, delivery.RecipientDeferred, st.LastFailure)
	assert.Equal(t, 450, st.Reply)
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
	require.NoError(t, s.Sent(ctx, codes.ID{Email: "d@example.com"}, "task-1",
		delivery.Acceptance{At: sentAt, Relay: "fallback", SinceRequest: 1234 * time.Millisecond}))
	st = status("d@example.com")
	assert.Equal(t, delivery.StateSent, st.State)
	assert.Equal(t, 2, st.Attempts)
	assert.True(t, sentAt.Equal(st.SentAt))
	assert.Equal(t, "fallback", st.Relay, "the relay that took it")
	assert.Equal(t, 1234*time.Millisecond, st.SentAfter, "request to acceptance")
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
// list, that exact address (its domain in any case, for every purpose) is
// refused new sends until lifted, and no other spelling of its mailbox is.
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
	refused := &relay.Error{Stage: relay.StageRcpt, Code: 550, Enhanced: "5.1.1",
		Text: "<Gone+x@example.com>: Recipient address rejected: User unknown"}
	perm := fmt.Errorf("send: %w", refused)
	require.NoError(t, s.Failed(ctx, codes.ID{Email: "Gone+x@example.com"}, "t1", perm))
	st, err := s.Status(ctx, codes.ID{Email: "Gone+x@example.com"}, now)
	require.NoError(t, err)
	assert.Equal(t, delivery.StateUndeliverable, st.State)
	assert.Equal(t, 550, st.Reply)
	assert.Equal(t, delivery.RecipientRefused, st.LastFailure)

	require.NoError(t, sup.Add(ctx, delivery.Entry{
		Email: "Gone+x@example.com", Reason: delivery.ReasonRecipientRefused,
		Reply: refused.Code, Enhanced: refused.Enhanced, Diagnostic: refused.Text,
		Added: now, For: time.Hour,
	}))
	for _, req := range []limits.Request{
		{Email: "Gone+x@example.com"}, {Email: "Gone+x@EXAMPLE.COM"}, {Email: "Gone+x@example.com", Purpose: "login"},
	} {
		_, err = s.GetOrCreate(ctx, req)
		var se *delivery.SuppressedError
		require.ErrorAs(t, err, &se, "%+v", req)
		assert.ErrorIs(t, err, delivery.ErrSuppressed)
		assert.Greater(t, se.For, 59*time.Minute)
	}
	for _, other := range []string{"gone@example.com", "Gone@example.com", "gone+x@example.com", "Gone+y@example.com"} {
		_, err = s.GetOrCreate(ctx, limits.Request{Email: other})
		assert.NoError(t, err, "%s: another spelling of the mailbox is not suppressed", other)
	}

	list, more, err := sup.List(ctx, delivery.Filter{}, 100)
	require.NoError(t, err)
	assert.False(t, more)
	require.Len(t, list, 1)
	e := list[0]
	assert.Equal(t, delivery.MailboxID("gone@example.com")+":"+delivery.AddressID("Gone+x@example.com"), e.ID)
	assert.Equal(t, "G***@example.com", e.Masked, "only masked")
	assert.Equal(t, delivery.ReasonRecipientRefused, e.Reason)
	assert.Equal(t, 550, e.Reply)
	assert.Equal(t, "5.1.1", e.Enhanced)
	assert.Equal(t, "<G***@example.com>: Recipient address rejected: User unknown", e.Diagnostic)
	assert.True(t, e.Added.Equal(now), "added %s, want %s", e.Added, now)
	assert.True(t, e.Expires.Equal(now.Add(time.Hour)))
	assert.Greater(t, e.ExpiresIn, 59*time.Minute)
	keys := redistest.Keys(ctx, t, rdb, delivery.SuppressPrefix+"*")
	require.Len(t, keys, 1)
	v, err := rdb.Get(ctx, keys[0]).Result()
	require.NoError(t, err)
	for _, clear := range []string{"Gone+x", "gone@", "Gone@", "gone+x"} {
		assert.NotContains(t, keys[0]+v, clear, "no address in clear in the list")
	}

	lifted, err := sup.Lift(ctx, "gone+x@example.com")
	require.NoError(t, err)
	assert.False(t, lifted, "another spelling lifts nothing")
	lifted, err = sup.Lift(ctx, "Gone+x@EXAMPLE.com")
	require.NoError(t, err)
	assert.True(t, lifted)
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "Gone+x@example.com"})
	require.NoError(t, err, "lifted: sends go through")
	lifted, err = sup.LiftID(ctx, e.ID)
	require.NoError(t, err)
	assert.False(t, lifted, "nothing left to lift")
	_, err = sup.Lift(ctx, "not an address@")
	assert.ErrorIs(t, err, mail.ErrInvalidAddress)
	for _, id := range []string{"", "x", delivery.MailboxID("a@b.c"), e.ID + "0", strings.ToUpper(e.ID)} {
		_, err = sup.LiftID(ctx, id)
		assert.ErrorIs(t, err, delivery.ErrInvalidSuppression, "%q", id)
	}
}

// Add refuses an entry it could not list truthfully.
func TestSuppressionAddRefusesBadEntries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, rdb := newStack(t, limits.Config{})
	sup := delivery.NewSuppressions(rdb, plusTags)
	good := delivery.Entry{Email: "a@example.com", Reason: delivery.ReasonRecipientRefused, Reply: 550,
		Enhanced: "5.1.1", Added: time.Now(), For: time.Hour}
	for name, change := range map[string]func(*delivery.Entry){
		"address":   func(e *delivery.Entry) { e.Email = "nope" },
		"reason":    func(e *delivery.Entry) { e.Reason = "spam" },
		"no reason": func(e *delivery.Entry) { e.Reason = "" },
		"reply":     func(e *delivery.Entry) { e.Reply = 999 },
		"enhanced":  func(e *delivery.Entry) { e.Enhanced = "5.1" },
		"lasting":   func(e *delivery.Entry) { e.For = 0 },
	} {
		e := good
		change(&e)
		assert.ErrorIs(t, sup.Add(ctx, e), delivery.ErrInvalidSuppression, name)
	}
	assert.Empty(t, redistest.Keys(ctx, t, rdb, delivery.SuppressPrefix+"*"))
	require.NoError(t, sup.Add(ctx, good))
}

// After an incident (a wrong SMTP password refused every mail with a 5xx),
// ops list the entries of its window by reason and lift them all, a batch
// at a time on every primary; entries outside the window or of another
// reason stay.
func TestSuppressionLiftWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, limits.Config{Identity: plusTags})
	sup := delivery.NewSuppressions(rdb, plusTags)
	start := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	end := start.Add(time.Hour)
	add := func(email string, reason delivery.Reason, at time.Time) {
		t.Helper()
		require.NoError(t, sup.Add(ctx, delivery.Entry{Email: email, Reason: reason, Reply: 535, Added: at, For: time.Hour}))
	}
	const incident = 2*delivery.ScanBatch + 37 // more than a batch on any node
	for i := range incident {
		add(fmt.Sprintf("user%d@example.com", i), delivery.ReasonRecipientRefused, start.Add(time.Duration(i)*time.Second))
	}
	add("before@example.com", delivery.ReasonRecipientRefused, start.Add(-time.Nanosecond))
	add("at-end@example.com", delivery.ReasonRecipientRefused, end)
	add("bounced@example.com", delivery.ReasonBounced, start.Add(time.Minute))

	window := delivery.Filter{Reason: delivery.ReasonRecipientRefused, AddedAfter: start, AddedBefore: end}
	list, more, err := sup.List(ctx, window, 10)
	require.NoError(t, err)
	assert.True(t, more, "more than the limit matched")
	assert.Len(t, list, 10)
	list, more, err = sup.List(ctx, window, 1000)
	require.NoError(t, err)
	assert.False(t, more)
	assert.Len(t, list, incident)
	for i := 1; i < len(list); i++ {
		assert.False(t, list[i].Added.Before(list[i-1].Added), "oldest first")
	}
	bounced, _, err := sup.List(ctx, delivery.Filter{Reason: delivery.ReasonBounced}, 1000)
	require.NoError(t, err)
	require.Len(t, bounced, 1)
	assert.Equal(t, "b***@example.com", bounced[0].Masked)

	for name, f := range map[string]delivery.Filter{
		"no window": {Reason: delivery.ReasonRecipientRefused},
		"no end":    {AddedAfter: start},
		"no start":  {AddedBefore: end},
		"reversed":  {AddedAfter: end, AddedBefore: start},
		"empty":     {AddedAfter: start, AddedBefore: start},
		"reason":    {Reason: "spam", AddedAfter: start, AddedBefore: end},
	} {
		n, err := sup.LiftAdded(ctx, f)
		assert.ErrorIs(t, err, delivery.ErrInvalidSuppression, name)
		assert.Zero(t, n, name)
	}
	_, _, err = sup.List(ctx, delivery.Filter{AddedAfter: end, AddedBefore: start}, 10)
	assert.ErrorIs(t, err, delivery.ErrInvalidSuppression)

	n, err := sup.LiftAdded(ctx, window)
	require.NoError(t, err)
	assert.Equal(t, incident, n)
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "user7@example.com"})
	require.NoError(t, err, "lifted: sends go through")
	left, _, err := sup.List(ctx, delivery.Filter{}, 1000)
	require.NoError(t, err)
	var masked []string
	for _, e := range left {
		masked = append(masked, e.Masked)
	}
	assert.ElementsMatch(t, []string{"b***@example.com", "a***@example.com", "b***@example.com"}, masked)
	n, err = sup.LiftAdded(ctx, window)
	require.NoError(t, err)
	assert.Zero(t, n, "nothing left in the window")
}

// A reply text is kept on one line, bounded, with every address masked.
func TestDiagnostic(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", delivery.MaxDiagnostic)
	for in, want := range map[string]string{
		"5.1.1 <alice+x@example.com>: Recipient address rejected": "<a***@example.com>: Recipient address rejected",
		"User unknown": "User unknown",
		"5.7.8 Authentication credentials invalid":        "Authentication credentials invalid",
		"RCPT TO:<Bob@Example.com> refused":               "RCPT TO:<B***@Example.com> refused",
		"mailbox bob@example.com, carol@example.org full": "mailbox b***@example.com, c***@example.org full",
		"to=bob@@example.com\r\nline two":                 "*** line two",
		"a@b <not an address@x>":                          "a***@b <not an a***@x>",
		"\x00hidden\u200bzero\xff":                        "hidden zero?",
		long:                                              long[:delivery.MaxDiagnostic],
		long + "x":                                        long[:delivery.MaxDiagnostic],
		"x" + long:                                        ("x" + long)[:delivery.MaxDiagnostic-1],
	} {
		got := delivery.Diagnostic(in)
		assert.Equal(t, want, got, "%q", in)
		assert.LessOrEqual(t, len(got), delivery.MaxDiagnostic)
		assert.True(t, utf8.ValidString(got))
	}
}
