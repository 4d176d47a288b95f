package limits_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
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
