package codes_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/field"
)

func purposeConfig() codes.Config {
	return codes.Config{
		Limits:   codes.Limits{Cooldown: time.Minute, AddressPerHour: 3, MaxAttempts: 5},
		Purposes: map[string]time.Duration{"register": 0, "login": 0, "reset_password": 15 * time.Minute},
	}
}

func TestPurposesHaveTheirOwnCodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStore(t, purposeConfig())
	const email = "a@example.com"

	reset, err := s.GetOrCreate(ctx, codes.Request{Email: email, Purpose: "reset_password"})
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
	reg, err := s.GetOrCreate(ctx, codes.Request{Email: email, Purpose: "register"})
	require.NoError(t, err)
	assert.True(t, reg.Created)
	assert.Equal(t, codes.DefaultTTL, reg.ExpiresIn)
	def, err := s.GetOrCreate(ctx, codes.Request{Email: email})
	require.NoError(t, err)
	v, err = rdb.Get(ctx, "code_"+email).Result()
	require.NoError(t, err)
	assert.Equal(t, def.Code, v, "the default purpose is stored as always")

	// ...but each purpose has its own cooldown.
	_, err = s.GetOrCreate(ctx, codes.Request{Email: email, Purpose: "reset_password"})
	var limit *codes.LimitError
	require.ErrorAs(t, err, &limit)
	assert.Equal(t, codes.LimitCooldown, limit.Limit)

	// The address hour cap (3) is shared by all purposes: three sends made.
	_, err = s.GetOrCreate(ctx, codes.Request{Email: email, Purpose: "login"})
	require.ErrorAs(t, err, &limit)
	assert.Equal(t, codes.LimitAddress, limit.Limit)

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
	assert.Equal(t, codes.StateNone, st.State)
}

func TestUnknownPurposeIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStore(t, purposeConfig())
	for _, p := range []string{"change_email", "Register", "x:y", "reset_password "} {
		_, err := s.GetOrCreate(ctx, codes.Request{Email: "a@example.com", Purpose: p})
		assert.ErrorIs(t, err, codes.ErrInvalidPurpose, p)
		assert.ErrorIs(t, s.Verify(ctx, codes.ID{Purpose: p, Email: "a@example.com"}, "123456", ""), codes.ErrInvalidPurpose, p)
		_, err = s.Status(ctx, codes.ID{Purpose: p, Email: "a@example.com"}, time.Now())
		assert.ErrorIs(t, err, codes.ErrInvalidPurpose, p)
	}
	keys, err := rdb.Keys(ctx, "*").Result()
	require.NoError(t, err)
	assert.Empty(t, keys, "a refused purpose records nothing")
}

func TestNilPurposesAreTheDefaults(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t, codes.Config{})
	for _, p := range codes.DefaultPurposes {
		_, err := s.GetOrCreate(ctx, codes.Request{Email: "a@example.com", Purpose: p})
		assert.NoError(t, err, p)
	}
	none, _ := newStore(t, codes.Config{Purposes: map[string]time.Duration{}})
	_, err := none.GetOrCreate(ctx, codes.Request{Email: "a@example.com", Purpose: "register"})
	assert.ErrorIs(t, err, codes.ErrInvalidPurpose)
}

func TestValidatePurposes(t *testing.T) {
	t.Parallel()
	assert.NoError(t, codes.ValidatePurposes(nil))
	assert.NoError(t, codes.ValidatePurposes(map[string]time.Duration{"a": 0, "reset_password": time.Second}))
	for name, tc := range map[string]struct {
		purposes map[string]time.Duration
		field    string
	}{
		"empty":     {map[string]time.Duration{"": 0}, "Purposes"},
		"upper":     {map[string]time.Duration{"Reset": 0}, "Purposes"},
		"colon":     {map[string]time.Duration{"a:b": 0}, "Purposes"},
		"too long":  {map[string]time.Duration{"a234567890123456789012345678901234": 0}, "Purposes"},
		"short ttl": {map[string]time.Duration{"login": time.Millisecond}, "TTL_LOGIN"},
	} {
		err := codes.ValidatePurposes(tc.purposes)
		var fe *field.Error
		require.True(t, errors.As(err, &fe), name)
		assert.Equal(t, tc.field, fe.Field, name)
	}
	many := map[string]time.Duration{}
	for i := range codes.MaxPurposes + 1 {
		many["p"+string(rune('a'+i%26))+string(rune('a'+i/26))] = 0
	}
	assert.Error(t, codes.ValidatePurposes(many))
	_, err := codes.NewStore(nil, codes.Config{KeyPrefix: "code_", TTL: time.Minute, Length: 6, Purposes: map[string]time.Duration{"Bad": 0}})
	assert.Error(t, err)
}

func TestValidatePurpose(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"", "login", "reset_password", "change_email", "a1", strings.Repeat("a", 32)} {
		assert.NoError(t, codes.ValidatePurpose(ok), "%q", ok)
	}
	for _, bad := range []string{"1a", "_a", "Login", "a-b", "a b", "a/b", "..", "é", strings.Repeat("a", 33)} {
		assert.Error(t, codes.ValidatePurpose(bad), "%q", bad)
	}
}
