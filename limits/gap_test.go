package limits_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/limits"
)

// One send per purpose gives one mail within the gap, not one each: the
// gap is the mailbox's, whatever the purpose, and its Retry-After is
// what is left of it.
func TestGapAcrossPurposes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cc, _ := purposeConfig()
	cc.Purposes["change_email"] = 0
	s, _ := newStack(t, cc, limits.Config{Cooldown: time.Minute, Gap: 10 * time.Second, AddressPerHour: 5})
	now := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { return now }
	purposes := []string{"", "register", "login", "reset_password", "change_email"}

	admitted := 0
	for _, p := range purposes {
		_, err := s.GetOrCreate(ctx, limits.Request{Email: "Gap@example.com", Purpose: p})
		if err == nil {
			admitted++
			continue
		}
		le := limitErr(t, err)
		assert.Equal(t, limits.Gap, le.Limit, p)
		assert.Equal(t, 10*time.Second, le.RetryAfter, p)
	}
	assert.Equal(t, 1, admitted, "one mail within the gap")

	now = now.Add(4 * time.Second)
	_, err := s.GetOrCreate(ctx, limits.Request{Email: "gap@example.com", Purpose: "login"})
	assert.Equal(t, 6*time.Second, limitErr(t, err).RetryAfter, "what is left of the gap")
	now = now.Add(6 * time.Second)
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "gap@example.com", Purpose: "login"})
	require.NoError(t, err, "the gap has passed")
	now = now.Add(10 * time.Second)
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "gap@example.com", Purpose: "login"})
	assert.Equal(t, limits.Cooldown, limitErr(t, err).Limit, "each purpose keeps its own cooldown")
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "other@example.com", Purpose: "login"})
	require.NoError(t, err, "another mailbox has its own gap")
}

// Without the hourly cap the gap still holds, and its record lives no
// longer than the gap.
func TestGapWithoutTheCap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, codes.Config{}, limits.Config{Gap: 10 * time.Second})
	now := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { return now }

	_, err := s.GetOrCreate(ctx, limits.Request{Email: "nocap@example.com"})
	require.NoError(t, err)
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "nocap@example.com"})
	assert.Equal(t, limits.Gap, limitErr(t, err).Limit)
	ttl, err := rdb.PTTL(ctx, limits.AddressKey(delivery.MailboxID("nocap@example.com"))).Result()
	require.NoError(t, err)
	assert.Positive(t, ttl)
	assert.LessOrEqual(t, ttl, 10*time.Second, "kept as long as the gap")
	for range 3 {
		now = now.Add(10 * time.Second)
		_, err = s.GetOrCreate(ctx, limits.Request{Email: "nocap@example.com"})
		require.NoError(t, err, "one send per gap, no cap")
	}
	n, err := rdb.ZCard(ctx, limits.AddressKey(delivery.MailboxID("nocap@example.com"))).Result()
	require.NoError(t, err)
	assert.EqualValues(t, 1, n, "only the last send is kept")
}

// When several limits refuse, the refusal is the one that waits longest,
// so that Retry-After is when a send can pass: the hourly cap over the
// cooldown in the mailbox's part, the client's cap over the cooldown
// across parts. A coalescing request inside the cooldown still coalesces.
func TestRetryAfterIsTheLongestWait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStack(t, codes.Config{}, limits.Config{Cooldown: time.Minute, Gap: 10 * time.Second, AddressPerHour: 1,
		ClientPerHour: 1})
	now := time.Now()
	s.Now = func() time.Time { return now }

	_, err := s.GetOrCreate(ctx, limits.Request{Email: "long@example.com"})
	require.NoError(t, err)
	// The cooldown (60 s), the gap (10 s) and the hourly cap (1 h) refuse.
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "Long@example.com"})
	le := limitErr(t, err)
	assert.Equal(t, limits.Address, le.Limit)
	assert.Equal(t, time.Hour, le.RetryAfter, "the cap, not the cooldown's 60 s")

	c, err := s.GetOrCreate(ctx, limits.Request{Email: "long@example.com", Coalesce: true})
	require.NoError(t, err)
	assert.True(t, c.Coalesced, "inside the cooldown the code is on its way")
	assert.Equal(t, time.Hour, c.ResendAfter)

	// Across parts: the client's hour over the mailbox's cooldown.
	s2, _ := newStack(t, codes.Config{}, limits.Config{Cooldown: time.Minute, ClientPerHour: 1})
	now2 := time.Now()
	s2.Now = func() time.Time { return now2 }
	_, err = s2.GetOrCreate(ctx, limits.Request{Email: "mine@example.com", Client: "203.0.113.9"})
	require.NoError(t, err)
	_, err = s2.GetOrCreate(ctx, limits.Request{Email: "mine@example.com", Client: "203.0.113.9"})
	le = limitErr(t, err)
	assert.Equal(t, limits.Client, le.Limit)
	assert.Equal(t, time.Hour, le.RetryAfter)
}

// Without the hourly cap and the gap, the cooldown of each purpose still
// holds: the hour of sends keeps each send as long as the cooldown, under
// a name of its purpose.
func TestCooldownWithoutTheCap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cc, _ := purposeConfig()
	s, rdb := newStack(t, cc, limits.Config{Cooldown: time.Minute})
	now := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { return now }

	_, err := s.GetOrCreate(ctx, limits.Request{Email: "cool@example.com"})
	require.NoError(t, err)
	now = now.Add(20 * time.Second)
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "cool@example.com"})
	le := limitErr(t, err)
	assert.Equal(t, limits.Cooldown, le.Limit)
	assert.Equal(t, 40*time.Second, le.RetryAfter, "what is left of the cooldown")
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "cool@example.com", Purpose: "register"})
	require.NoError(t, err, "another purpose has its own cooldown")
	ttl, err := rdb.PTTL(ctx, limits.AddressKey(delivery.MailboxID("cool@example.com"))).Result()
	require.NoError(t, err)
	assert.Positive(t, ttl)
	assert.LessOrEqual(t, ttl, time.Minute, "kept as long as the cooldown")

	now = now.Add(40 * time.Second)
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "cool@example.com"})
	require.NoError(t, err, "the cooldown has passed")
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "cool@example.com", Purpose: "register"})
	assert.Equal(t, limits.Cooldown, limitErr(t, err).Limit, "register's cooldown runs 20 s more")
}
