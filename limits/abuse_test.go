package limits_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/internal/servicetest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/mail"
)

var plusTags = mail.Identity{TagSeparators: mail.DefaultTagSeparators}

// Tags and case do not multiply the per-address limits: every spelling of
// victim@example.com is one mailbox. Each spelling still gets its own code
// key, as the old gateway reads it.
func TestTagsShareTheMailboxLimits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, codes.Config{}, limits.Config{Identity: plusTags, AddressPerHour: 5})
	admitted := 0
	for i := 1; i <= 20; i++ {
		email := fmt.Sprintf("victim+%d@example.com", i)
		if i%2 == 0 {
			email = strings.ToUpper(email)
		}
		_, err := s.GetOrCreate(ctx, limits.Request{Email: email})
		if err == nil {
			admitted++
			continue
		}
		assert.Equal(t, limits.Address, limitErr(t, err).Limit)
	}
	assert.Equal(t, 5, admitted)
	n := exists(ctx, t, rdb, "code_victim+1@example.com", "code_VICTIM+2@EXAMPLE.COM")
	assert.Equal(t, 2, n, "code keys keep the address as sent")

	s2, _ := newStack(t, codes.Config{}, limits.Config{Identity: plusTags, Cooldown: time.Minute})
	_, err := s2.GetOrCreate(ctx, limits.Request{Email: "victim+a@example.com"})
	require.NoError(t, err)
	_, err = s2.GetOrCreate(ctx, limits.Request{Email: "Victim+b@example.com"})
	assert.Equal(t, limits.Cooldown, limitErr(t, err).Limit, "one cooldown per mailbox")
}

// A Unicode domain and its A-label are one mailbox.
func TestIDNDomainSharesTheMailboxLimits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStack(t, codes.Config{}, limits.Config{Identity: plusTags, Cooldown: time.Minute})
	_, err := s.GetOrCreate(ctx, limits.Request{Email: "kim@bücher.de"})
	require.NoError(t, err)
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "kim@xn--bcher-kva.de"})
	assert.Equal(t, limits.Cooldown, limitErr(t, err).Limit)
}

// The per-domain and global caps count the current minute of the clock.
func TestMinuteCaps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStack(t, codes.Config{}, limits.Config{DomainPerMinute: 2, GlobalPerMinute: 3})
	now := time.Date(2026, 1, 2, 3, 4, 10, 0, time.UTC)
	s.Now = func() time.Time { return now }

	for _, email := range []string{"a@one.example", "b@one.example"} {
		_, err := s.GetOrCreate(ctx, limits.Request{Email: email})
		require.NoError(t, err)
	}
	_, err := s.GetOrCreate(ctx, limits.Request{Email: "c@One.Example"})
	le := limitErr(t, err)
	assert.Equal(t, limits.Domain, le.Limit)
	assert.Equal(t, 50*time.Second, le.RetryAfter, "until the minute ends")
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "a@two.example"})
	require.NoError(t, err, "another domain")
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "b@two.example"})
	assert.Equal(t, limits.Global, limitErr(t, err).Limit)

	now = now.Add(50 * time.Second)
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "c@one.example"})
	require.NoError(t, err, "a new minute")
}

// A coalescing request inside the cooldown, while the code lives, gets the
// live code's lifetime and records nothing; without a live code it is
// refused like any other.
func TestCoalesce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, codes.Config{}, limits.Config{Cooldown: time.Minute, AddressPerHour: 2})
	now := time.Now()
	s.Now = func() time.Time { return now }

	first, err := s.GetOrCreate(ctx, limits.Request{Email: "old@example.com", Coalesce: true})
	require.NoError(t, err)
	require.False(t, first.Coalesced)
	for range 5 {
		again, err := s.GetOrCreate(ctx, limits.Request{Email: "old@example.com", Coalesce: true})
		require.NoError(t, err)
		assert.True(t, again.Coalesced)
		assert.Empty(t, again.Code, "nothing to mail")
		assert.Greater(t, again.ExpiresIn, 590*time.Second)
		assert.Greater(t, again.ResendAfter, 50*time.Second)
	}
	n, err := rdb.ZCard(ctx, limits.AddressKey(delivery.MailboxID("old@example.com"))).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1), n, "coalesced requests do not count against the hourly cap")

	_, err = s.GetOrCreate(ctx, limits.Request{Email: "old@example.com"})
	assert.Equal(t, limits.Cooldown, limitErr(t, err).Limit, "without Coalesce: refused")

	require.NoError(t, rdb.Del(ctx, "code_old@example.com").Err())
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "old@example.com", Coalesce: true})
	assert.Equal(t, limits.Cooldown, limitErr(t, err).Limit, "no live code: nothing is on its way")

	servicetest.EndCooldowns(ctx, t, rdb, delivery.MailboxID("old@example.com"), time.Minute)
	second, err := s.GetOrCreate(ctx, limits.Request{Email: "old@example.com", Coalesce: true})
	require.NoError(t, err, "after the cooldown a send is a send")
	assert.False(t, second.Coalesced)
}

// Undo takes back everything the send recorded, a refused send in between
// notwithstanding: an immediate retry is admitted, and the code the failed
// send made, never mailed, is gone.
func TestUndo(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, codes.Config{}, limits.Config{Identity: plusTags, Cooldown: time.Minute, AddressPerHour: 1, ClientPerHour: 1, DomainPerMinute: 1, GlobalPerMinute: 1})
	req := limits.Request{Email: "u+x@example.com", Client: "203.0.113.9"}
	first, err := s.GetOrCreate(ctx, req)
	require.NoError(t, err)
	_, err = s.GetOrCreate(ctx, req)
	require.Error(t, err, "every limit is full")

	require.NoError(t, s.Undo(ctx, first))
	again, err := s.GetOrCreate(ctx, req)
	require.NoError(t, err, "the retry is admitted")
	assert.True(t, again.Created, "with a code of its own")

	// Undo leaves nothing behind that it did not find.
	require.NoError(t, s.Undo(ctx, again))
	keys := redistest.Keys(ctx, t, rdb, "verifyq:{*")
	require.NotEmpty(t, keys, "the limits' keys")
	for _, k := range keys {
		typ, err := rdb.Type(ctx, k).Result()
		require.NoError(t, err)
		switch typ {
		case "zset":
			n, _ := rdb.ZCard(ctx, k).Result()
			assert.Zero(t, n, k)
		case "string":
			v, _ := rdb.Get(ctx, k).Int64()
			assert.Zero(t, v, k)
		}
	}
	require.NoError(t, s.Undo(ctx, limits.Admission{}), "nothing to undo")
}

// Undo of a resend of a live code takes its status back to the state and
// the send it had, from what the send's scripts replied: nothing kept in
// Redis for the undo.
func TestUndoOfResendRestoresTheStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, codes.Config{}, limits.Config{})
	id := codes.ID{Email: "r@example.com"}
	_, err := s.GetOrCreate(ctx, limits.Request{Email: id.Email})
	require.NoError(t, err)
	_, err = s.records.Begin(ctx, id, delivery.Task{ID: "t1", Queue: "mail"}, codes.DefaultTTL)
	require.NoError(t, err)
	before, err := rdb.HGetAll(ctx, s.StatusKey(id)).Result()
	require.NoError(t, err)
	require.Equal(t, delivery.StateSending, before["state"])

	again, err := s.GetOrCreate(ctx, limits.Request{Email: id.Email})
	require.NoError(t, err)
	require.False(t, again.Created)
	queued, err := rdb.HGetAll(ctx, s.StatusKey(id)).Result()
	require.NoError(t, err)
	assert.Equal(t, delivery.StateQueued, queued["state"])
	assert.NotEqual(t, before["nonce"], queued["nonce"])
	for f := range queued {
		assert.False(t, strings.HasPrefix(f, "prev_"), "no undo field in the status: %s", f)
	}

	require.NoError(t, again.Undo(ctx))
	after, err := rdb.HGetAll(ctx, s.StatusKey(id)).Result()
	require.NoError(t, err)
	assert.Equal(t, before["state"], after["state"])
	assert.Equal(t, before["nonce"], after["nonce"])
	live, err := s.Peek(ctx, id)
	require.NoError(t, err)
	assert.NotEmpty(t, live.Code, "a reused code stays")
}

// One client cannot spread guesses over many addresses: every verify counts
// against CLIENT_VERIFIES_PER_HOUR, whichever address it is for.
func TestClientVerifyCap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStack(t, codes.Config{}, limits.Config{ClientVerifiesPerHour: 3})
	for i := range 3 {
		err := s.Verify(ctx, codes.ID{Email: fmt.Sprintf("v%d@example.com", i)}, "123456", "198.51.100.7")
		assert.ErrorIs(t, err, codes.ErrNotFound)
	}
	issued, err := s.GetOrCreate(ctx, limits.Request{Email: "v9@example.com"})
	require.NoError(t, err)
	err = s.Verify(ctx, codes.ID{Email: "v9@example.com"}, issued.Code, "198.51.100.7")
	le := limitErr(t, err)
	assert.Equal(t, limits.ClientVerify, le.Limit)
	assert.Greater(t, le.RetryAfter, 59*time.Minute)
	require.NoError(t, s.Verify(ctx, codes.ID{Email: "v9@example.com"}, issued.Code, "198.51.100.8"), "another client")
	for range 5 {
		assert.ErrorIs(t, s.Verify(ctx, codes.ID{Email: "v9@example.com"}, "1", ""), codes.ErrNotFound, "no client: no per-client cap")
	}
}

// A send refused by one part (here the client's cap) leaves nothing from
// the parts that admitted it: no code, no cooldown, no count of its mailbox.
func TestRefusedSendLeavesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, codes.Config{}, limits.Config{Cooldown: time.Minute, AddressPerHour: 1, ClientPerHour: 1})
	_, err := s.GetOrCreate(ctx, limits.Request{Email: "a@example.com", Client: "198.51.100.1"})
	require.NoError(t, err)
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "b@example.com", Client: "198.51.100.1"})
	assert.Equal(t, limits.Client, limitErr(t, err).Limit)

	n := exists(ctx, t, rdb, "code_b@example.com", s.StatusKey(codes.ID{Email: "b@example.com"}),
		limits.AddressKey(delivery.MailboxID("b@example.com")))
	assert.Zero(t, n, "no code, status or hour of sends (which holds the cooldown) for b")
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "b@example.com", Client: "198.51.100.2"})
	require.NoError(t, err, "b's own limits were untouched")
}

// A send whose pipeline failed in part (a Redis Cluster node failing over
// while the others answer; here the index of open sends refuses its ZADD)
// fails, and what its parts did record is taken back: the client's retry
// is admitted, not refused by the cooldown and the caps of a send that was
// never queued.
func TestFailedAdmissionTakesBackWhatRan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, codes.Config{}, limits.Config{Cooldown: time.Minute, AddressPerHour: 1, ClientPerHour: 1, DomainPerMinute: 1, GlobalPerMinute: 1})
	req := limits.Request{Email: "half@example.com", Client: "198.51.100.3", Send: codes.Send{Task: "t1", Queue: "mail"}}
	open := delivery.OpenSend{Task: "t1", ID: codes.ID{Email: req.Email}}
	require.NoError(t, rdb.Set(ctx, open.Key(), "not a sorted set", time.Minute).Err())
	_, err := s.GetOrCreate(ctx, req)
	require.Error(t, err)
	assert.NotErrorIs(t, err, limits.ErrRateLimited)
	assert.Zero(t, exists(ctx, t, rdb, "code_half@example.com"), "the code it made, never mailed, is gone")

	require.NoError(t, rdb.Del(ctx, open.Key()).Err())
	req.Send.Task = "t2"
	again, err := s.GetOrCreate(ctx, req)
	require.NoError(t, err, "the retry is admitted")
	assert.True(t, again.Created)
}

// An admitted resend of a live code whose issue then fails (here its
// status is no hash by then) fails, and what its parts recorded is taken
// back, as for an admission that failed in part.
func TestFailedReissueTakesBackWhatRan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, codes.Config{}, limits.Config{Cooldown: time.Minute, AddressPerHour: 2, ClientPerHour: 2})
	id := codes.ID{Email: "again@example.com"}
	req := limits.Request{Email: id.Email, Client: "198.51.100.4", Send: codes.Send{Task: "t1", Queue: "mail"}}
	_, err := s.GetOrCreate(ctx, req)
	require.NoError(t, err)

	s.Now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	trips := 0
	rdb.AddHook(pipelineHook{before: func() {
		if trips++; trips == 2 { // between the admission and the issue
			require.NoError(t, rdb.Set(ctx, s.StatusKey(id), "not a hash", 0).Err())
		}
	}})
	req.Send.Task = "t2"
	_, err = s.GetOrCreate(ctx, req)
	require.Error(t, err)
	assert.NotErrorIs(t, err, limits.ErrRateLimited)

	require.NoError(t, rdb.Del(ctx, s.StatusKey(id)).Err())
	req.Send.Task = "t3"
	_, err = s.GetOrCreate(ctx, req)
	require.NoError(t, err, "the retry is admitted: its hour of sends and its client's hold one send, not two")
}
