package limits_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/servicetest"
	"github.com/verifyq/verifyq/limits"
)

func limitErr(t *testing.T, err error) *limits.Error {
	t.Helper()
	var le *limits.Error
	require.ErrorAs(t, err, &le)
	assert.ErrorIs(t, err, limits.ErrRateLimited)
	return le
}

func TestCooldown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, codes.Config{}, limits.Config{Cooldown: time.Minute})

	first, err := s.GetOrCreate(ctx, limits.Request{Email: "Cool@Example.com"})
	require.NoError(t, err)
	assert.Equal(t, time.Minute, first.ResendAfter)

	// Inside the cooldown, case variants included: refused with the time left.
	for _, addr := range []string{"Cool@Example.com", "cool@example.com", "COOL@EXAMPLE.COM"} {
		_, err = s.GetOrCreate(ctx, limits.Request{Email: addr})
		le := limitErr(t, err)
		assert.Equal(t, limits.Cooldown, le.Limit)
		assert.Greater(t, le.RetryAfter, 50*time.Second)
		assert.LessOrEqual(t, le.RetryAfter, time.Minute)
	}
	n, err := rdb.Exists(ctx, "code_cool@example.com").Result()
	require.NoError(t, err)
	assert.Zero(t, n, "a refused send makes no code")

	// After the cooldown (its key expires), the same code is sent again.
	servicetest.EndCooldowns(ctx, t, rdb, delivery.MailboxID("cool@example.com"), time.Minute)
	again, err := s.GetOrCreate(ctx, limits.Request{Email: "Cool@Example.com"})
	require.NoError(t, err)
	assert.Equal(t, first.Code, again.Code)
	assert.False(t, again.Created)
}

func TestAddressCapRollsWithTheClock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStack(t, codes.Config{}, limits.Config{AddressPerHour: 3})
	now := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { return now }

	for i, addr := range []string{"cap@example.com", "Cap@example.com", "CAP@example.com"} {
		_, err := s.GetOrCreate(ctx, limits.Request{Email: addr})
		require.NoError(t, err, "send %d", i)
		now = now.Add(10 * time.Minute)
	}
	_, err := s.GetOrCreate(ctx, limits.Request{Email: "cap@example.com"})
	le := limitErr(t, err)
	assert.Equal(t, limits.Address, le.Limit)
	assert.Equal(t, 30*time.Minute, le.RetryAfter, "until the first send leaves the window")

	now = now.Add(30 * time.Minute)
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "cap@example.com"})
	assert.NoError(t, err, "the oldest send left the window")
	_, err = s.GetOrCreate(ctx, limits.Request{Email: "cap@example.com"})
	_ = limitErr(t, err)
	n, err := rdb.ZCard(ctx, limits.AddressKey(delivery.MailboxID("cap@example.com"))).Result()
	require.NoError(t, err)
	assert.EqualValues(t, 3, n, "a send that left the window is dropped")
}

func TestClientCap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStack(t, codes.Config{}, limits.Config{ClientPerHour: 2})

	for i := range 2 {
		_, err := s.GetOrCreate(ctx, limits.Request{Email: fmt.Sprintf("c%d@example.com", i), Client: "203.0.113.7"})
		require.NoError(t, err)
	}
	_, err := s.GetOrCreate(ctx, limits.Request{Email: "c9@example.com", Client: "203.0.113.7"})
	assert.Equal(t, limits.Client, limitErr(t, err).Limit)

	_, err = s.GetOrCreate(ctx, limits.Request{Email: "c9@example.com", Client: "203.0.113.8"})
	assert.NoError(t, err, "another client is not limited")
	for i := range 5 {
		_, err = s.GetOrCreate(ctx, limits.Request{Email: fmt.Sprintf("anon%d@example.com", i)})
		assert.NoError(t, err, "no client, no per-client cap")
	}
}

func TestLimitsOff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStack(t, codes.Config{}, limits.Config{})
	for range 20 {
		_, err := s.GetOrCreate(ctx, limits.Request{Email: "free@example.com", Client: "198.51.100.1"})
		require.NoError(t, err)
	}
}

// Caps hold under concurrency: never more sends admitted than allowed.
func TestCapsHoldUnderConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStack(t, codes.Config{}, limits.Config{AddressPerHour: 5, ClientPerHour: 30})

	run := func(n int, addr func(i int) string, client string) (ok, limited int64) {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := s.GetOrCreate(ctx, limits.Request{Email: addr(i), Client: client})
				switch {
				case err == nil:
					atomic.AddInt64(&ok, 1)
				case errors.Is(err, limits.ErrRateLimited):
					atomic.AddInt64(&limited, 1)
				default:
					t.Error(err)
				}
			}()
		}
		close(start)
		wg.Wait()
		return ok, limited
	}

	// 50 requests for one mailbox in assorted case: 5 admitted.
	ok, limited := run(50, func(i int) string {
		if i%2 == 0 {
			return "Busy@Example.com"
		}
		return strings.ToLower("Busy@Example.com")
	}, "")
	assert.EqualValues(t, 5, ok)
	assert.EqualValues(t, 45, limited)

	// 50 requests for distinct addresses from one client: 30 admitted.
	ok, limited = run(50, func(i int) string { return fmt.Sprintf("u%d@example.com", i) }, "192.0.2.1")
	assert.EqualValues(t, 30, ok)
	assert.EqualValues(t, 20, limited)
}
