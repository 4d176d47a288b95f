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

func purposeConfig() (codes.Config, limits.Config) {
	return codes.Config{
		MaxAttempts: 5,
		Purposes:    map[string]time.Duration{"register": 0, "login": 0, "reset_password": 15 * time.Minute},
	}, limits.Config{Cooldown: time.Minute, AddressPerHour: 3}
}

func TestPurposesHaveTheirOwnCodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cc, lc := purposeConfig()
	s, rdb := newStack(t, cc, lc)
	const email = "a@example.com"

	reset, err := s.GetOrCreate(ctx, limits.Request{Email: email, Purpose: "reset_password"})
	require.NoError(t, err)
	assert.Equal(t, 15*time.Minute, reset.ExpiresIn, "the purpose's own lifetime")

	// Its own key and keys beside it; the default key is untouched.
	v, err := rdb.Get(ctx, "code_reset_password:"+email).Result()
	require.NoError(t, err)
	assert.Equal(t, reset.Code, v)
	assert.Equal(t, "{code_reset_password:a@example.com}:status", s.StatusKey(codes.ID{Purpose: "reset_password", Email: email}))
	n, err := rdb.Exists(ctx, "code_"+email).Result()
	require.NoError(t, err)
	assert.Zero(t, n)

	// A reset code does not complete a sign-up, nor the default purpose.
	assert.ErrorIs(t, s.Verify(ctx, codes.ID{Purpose: "register", Email: email}, reset.Code, ""), codes.ErrNotFound)
	assert.ErrorIs(t, s.Verify(ctx, codes.ID{Email: email}, reset.Code, ""), codes.ErrNotFound)

	// Another purpose is not held back by this one's cooldown, and gets
	// its own code with the default lifetime.
	reg, err := s.GetOrCreate(ctx, limits.Request{Email: email, Purpose: "register"})
	require.NoError(t, err)
	assert.True(t, reg.Created)
	assert.Equal(t, codes.DefaultTTL, reg.ExpiresIn)
	def, err := s.GetOrCreate(ctx, limits.Request{Email: email})
	require.NoError(t, err)
	v, err = rdb.Get(ctx, "code_"+email).Result()
	require.NoError(t, err)
	assert.Equal(t, def.Code, v, "the default purpose is stored as always")

	// The address hour cap (3) is shared by all purposes: three sends
	// made, a fourth purpose is refused.
	_, err = s.GetOrCreate(ctx, limits.Request{Email: email, Purpose: "login"})
	var limit *limits.Error
	require.ErrorAs(t, err, &limit)
	assert.Equal(t, limits.Address, limit.Limit)

	// Wrong codes count per purpose; the right one verifies once.
	resetID := codes.ID{Purpose: "reset_password", Email: email}
	assert.ErrorIs(t, s.Verify(ctx, resetID, wrongFor(reset.Code), ""), codes.ErrMismatch)
	a, err := rdb.Get(ctx, s.AttemptsKey(resetID)).Int()
	require.NoError(t, err)
	assert.Equal(t, 1, a)
	assert.NoError(t, s.Verify(ctx, resetID, reset.Code, ""))
	assert.ErrorIs(t, s.Verify(ctx, resetID, reset.Code, ""), codes.ErrNotFound)
	assert.NoError(t, s.Verify(ctx, codes.ID{Purpose: "register", Email: email}, reg.Code, ""))
	assert.NoError(t, s.Verify(ctx, codes.ID{Email: email}, def.Code, ""))

	st, err := s.Status(ctx, resetID, time.Now())
	require.NoError(t, err)
	assert.Equal(t, delivery.StateNone, st.State)
}

func TestUnknownPurposeIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cc, lc := purposeConfig()
	s, rdb := newStack(t, cc, lc)
	for _, p := range []string{"change_email", "Register", "x:y", "reset_password "} {
		_, err := s.GetOrCreate(ctx, limits.Request{Email: "a@example.com", Purpose: p})
		assert.ErrorIs(t, err, codes.ErrInvalidPurpose, p)
		assert.ErrorIs(t, s.Verify(ctx, codes.ID{Purpose: p, Email: "a@example.com"}, "123456", ""), codes.ErrInvalidPurpose, p)
		_, err = s.Status(ctx, codes.ID{Purpose: p, Email: "a@example.com"}, time.Now())
		assert.ErrorIs(t, err, codes.ErrInvalidPurpose, p)
	}
	keys, err := rdb.Keys(ctx, "*").Result()
	require.NoError(t, err)
	assert.Empty(t, keys, "a refused purpose records nothing")
}
