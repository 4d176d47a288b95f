package codes_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
)

func TestMaxAttempts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStore(t, codes.Config{MaxAttempts: 3})

	issued, err := s.GetOrCreate(ctx, codes.ID{Email: "guess@example.com"})
	require.NoError(t, err)
	wrong := "000000"
	if issued.Code == wrong {
		wrong = "111111"
	}
	assert.ErrorIs(t, s.Verify(ctx, codes.ID{Email: "guess@example.com"}, wrong), codes.ErrMismatch)
	assert.ErrorIs(t, s.Verify(ctx, codes.ID{Email: "guess@example.com"}, wrong), codes.ErrMismatch)
	ttl, err := rdb.PTTL(ctx, "{code_guess@example.com}:attempts").Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, time.Duration(0), "the count lives no longer than the code")

	// A resend of the live code does not reset the count.
	_, err = s.GetOrCreate(ctx, codes.ID{Email: "guess@example.com"})
	require.NoError(t, err)
	assert.ErrorIs(t, s.Verify(ctx, codes.ID{Email: "guess@example.com"}, wrong), codes.ErrAttemptsExhausted)
	assert.ErrorIs(t, s.Verify(ctx, codes.ID{Email: "guess@example.com"}, issued.Code), codes.ErrNotFound,
		"the right code no longer verifies")

	// A new code starts afresh.
	fresh, err := s.GetOrCreate(ctx, codes.ID{Email: "guess@example.com"})
	require.NoError(t, err)
	assert.True(t, fresh.Created)
	assert.ErrorIs(t, s.Verify(ctx, codes.ID{Email: "guess@example.com"}, wrongFor(fresh.Code)), codes.ErrMismatch)
	require.NoError(t, s.Verify(ctx, codes.ID{Email: "guess@example.com"}, fresh.Code))
	n, err := rdb.Exists(ctx, "{code_guess@example.com}:attempts").Result()
	require.NoError(t, err)
	assert.Zero(t, n, "a verified code leaves no counter")
}

// Concurrent guesses cannot beat the attempt cap.
func TestMaxAttemptsUnderConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t, codes.Config{MaxAttempts: 5})
	issued, err := s.GetOrCreate(ctx, codes.ID{Email: "many@example.com"})
	require.NoError(t, err)

	var wg sync.WaitGroup
	var mismatches, exhausted, notFound, hits int64
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			guess := fmt.Sprintf("%06d", i)
			if guess == issued.Code {
				guess = "x"
			}
			switch err := s.Verify(ctx, codes.ID{Email: "many@example.com"}, guess); {
			case errors.Is(err, codes.ErrMismatch):
				atomic.AddInt64(&mismatches, 1)
			case errors.Is(err, codes.ErrAttemptsExhausted):
				atomic.AddInt64(&exhausted, 1)
			case errors.Is(err, codes.ErrNotFound):
				atomic.AddInt64(&notFound, 1)
			case err == nil:
				atomic.AddInt64(&hits, 1)
			}
		}()
	}
	wg.Wait()
	assert.EqualValues(t, 4, mismatches)
	assert.EqualValues(t, 1, exhausted)
	assert.EqualValues(t, 95, notFound)
	assert.Zero(t, hits)
}

func wrongFor(code string) string {
	if code == "000000" {
		return "111111"
	}
	return "000000"
}
