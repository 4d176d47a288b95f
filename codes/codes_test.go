package codes_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/redistest"
)

// newStore returns a store on a Redis of the test's own, of the mode
// VERIFYQ_TEST_REDIS_MODE names (redistest.Shared): the suite runs against
// single, sentinel and cluster.
func newStore(t *testing.T, cfg codes.Config) (*codes.Store, redis.UniversalClient) {
	t.Helper()
	rdb := redistest.Shared(t).UniversalClient(t)
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = codes.DefaultKeyPrefix
	}
	if cfg.TTL == 0 {
		cfg.TTL = codes.DefaultTTL
	}
	if cfg.Length == 0 {
		cfg.Length = codes.DefaultLength
	}
	s, err := codes.NewStore(rdb, cfg)
	require.NoError(t, err)
	return s, rdb
}

func TestGetOrCreateStoresPlainCodeUnderLegacyKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStore(t, codes.Config{})

	got, err := s.GetOrCreate(ctx, codes.ID{Email: "Mixed.Case@Example.COM"})
	require.NoError(t, err)
	assert.True(t, got.Created)
	assert.Len(t, got.Code, 6)
	assert.Equal(t, 10*time.Minute, got.ExpiresIn)

	// The key keeps the address exactly as sent; the value is the plain code.
	v, err := rdb.Get(ctx, "code_Mixed.Case@Example.COM").Result()
	require.NoError(t, err)
	assert.Equal(t, got.Code, v)
	ttl, err := rdb.PTTL(ctx, "code_Mixed.Case@Example.COM").Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, 9*time.Minute)
	assert.LessOrEqual(t, ttl, 10*time.Minute)
	n, err := rdb.Exists(ctx, "code_mixed.case@example.com").Result()
	require.NoError(t, err)
	assert.Zero(t, n, "no case-folded key")
}

func TestGetOrCreateRepeatKeepsCodeAndDoesNotExtend(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStore(t, codes.Config{})

	first, err := s.GetOrCreate(ctx, codes.ID{Email: "a@example.com"})
	require.NoError(t, err)
	// Pretend most of the lifetime has passed, without sleeping.
	require.NoError(t, rdb.PExpire(ctx, "code_a@example.com", 5*time.Second).Err())

	again, err := s.GetOrCreate(ctx, codes.ID{Email: "a@example.com"})
	require.NoError(t, err)
	assert.False(t, again.Created)
	assert.Equal(t, first.Code, again.Code)
	assert.LessOrEqual(t, again.ExpiresIn, 5*time.Second)
	assert.Greater(t, again.ExpiresIn, 4*time.Second)
	ttl, err := rdb.PTTL(ctx, "code_a@example.com").Result()
	require.NoError(t, err)
	assert.LessOrEqual(t, ttl, 5*time.Second, "TTL not extended")
}

func TestGetOrCreateRepairsLegacyKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStore(t, codes.Config{TTL: time.Minute})

	// A key an older writer left without expiry, and one longer than allowed.
	require.NoError(t, rdb.Set(ctx, "code_noexp@example.com", "ab12", 0).Err())
	require.NoError(t, rdb.Set(ctx, "code_long@example.com", "cd34", time.Hour).Err())

	for addr, code := range map[string]string{"noexp@example.com": "ab12", "long@example.com": "cd34"} {
		got, err := s.GetOrCreate(ctx, codes.ID{Email: addr})
		require.NoError(t, err)
		assert.Equal(t, code, got.Code)
		assert.Equal(t, time.Minute, got.ExpiresIn)
		ttl, err := rdb.PTTL(ctx, "code_"+addr).Result()
		require.NoError(t, err)
		assert.LessOrEqual(t, ttl, time.Minute)
		assert.Greater(t, ttl, time.Duration(0))
	}
}

func TestGetOrCreateExpiresForReal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t, codes.Config{TTL: time.Second})

	first, err := s.GetOrCreate(ctx, codes.ID{Email: "exp@example.com"})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := s.Peek(ctx, codes.ID{Email: "exp@example.com"})
		return errors.Is(err, codes.ErrNotFound)
	}, 5*time.Second, 50*time.Millisecond)
	second, err := s.GetOrCreate(ctx, codes.ID{Email: "exp@example.com"})
	require.NoError(t, err)
	assert.True(t, second.Created)
	_ = first
}

func TestGetOrCreateConcurrentYieldsOneCode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t, codes.Config{})

	const n = 100
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		seen    = map[string]int{}
		created int
	)
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got, err := s.GetOrCreate(ctx, codes.ID{Email: "race@example.com"})
			assert.NoError(t, err)
			mu.Lock()
			seen[got.Code]++
			if got.Created {
				created++
			}
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	assert.Len(t, seen, 1, "one code for all callers")
	assert.Equal(t, 1, created, "exactly one caller created it")
}

func TestPeek(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t, codes.Config{})

	_, err := s.Peek(ctx, codes.ID{Email: "none@example.com"})
	assert.ErrorIs(t, err, codes.ErrNotFound)

	issued, err := s.GetOrCreate(ctx, codes.ID{Email: "p@example.com"})
	require.NoError(t, err)
	live, err := s.Peek(ctx, codes.ID{Email: "p@example.com"})
	require.NoError(t, err)
	assert.Equal(t, issued.Code, live.Code)
	assert.False(t, live.NoExpiry)
	assert.LessOrEqual(t, live.ExpiresIn, issued.ExpiresIn)
	assert.Greater(t, live.ExpiresIn, 9*time.Minute)
}

// The worker knows only the key prefix (Keys). Peek reads what the Store
// wrote, reports a key without expiry as such, and writes nothing.
func TestKeysAndPeek(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, rdb := newStore(t, codes.Config{})
	keys, err := codes.NewKeys("code_")
	require.NoError(t, err)
	assert.Equal(t, "code_A@example.com", keys.Key(codes.ID{Email: "A@example.com"}))
	assert.Equal(t, keys, r.Keys)

	_, err = r.Peek(ctx, codes.ID{Email: "none@example.com"})
	assert.ErrorIs(t, err, codes.ErrNotFound)

	require.NoError(t, rdb.Set(ctx, "code_ttl@example.com", "123456", time.Minute).Err())
	live, err := r.Peek(ctx, codes.ID{Email: "ttl@example.com"})
	require.NoError(t, err)
	assert.Equal(t, "123456", live.Code)
	assert.False(t, live.NoExpiry)
	assert.Greater(t, live.ExpiresIn, 59*time.Second)
	assert.LessOrEqual(t, live.ExpiresIn, time.Minute)

	// A key an older writer left without expiry.
	require.NoError(t, rdb.Set(ctx, "code_noexp@example.com", "654321", 0).Err())
	live, err = r.Peek(ctx, codes.ID{Email: "noexp@example.com"})
	require.NoError(t, err)
	assert.Equal(t, codes.Live{Code: "654321", NoExpiry: true}, live)
	ttl, err := rdb.PTTL(ctx, "code_noexp@example.com").Result()
	require.NoError(t, err)
	assert.Equal(t, time.Duration(-1), ttl, "a read changes nothing")

	_, err = codes.NewKeys("")
	require.Error(t, err)
	assert.Equal(t, "KeyPrefix: must not be empty", err.Error())
}

func TestVerify(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb := newStore(t, codes.Config{})

	assert.ErrorIs(t, s.Verify(ctx, codes.ID{Email: "v@example.com"}, "123456"), codes.ErrNotFound)

	issued, err := s.GetOrCreate(ctx, codes.ID{Email: "v@example.com"})
	require.NoError(t, err)
	wrong := "000000"
	if issued.Code == wrong {
		wrong = "111111"
	}
	for _, bad := range []string{wrong, issued.Code[:5], issued.Code + "0", "", strings.ToUpper(issued.Code) + " "} {
		assert.ErrorIs(t, s.Verify(ctx, codes.ID{Email: "v@example.com"}, bad), codes.ErrMismatch, "%q", bad)
	}
	assert.ErrorIs(t, s.Verify(ctx, codes.ID{Email: "V@example.com"}, issued.Code), codes.ErrNotFound, "address is case-sensitive, as the key")

	require.NoError(t, s.Verify(ctx, codes.ID{Email: "v@example.com"}, issued.Code))
	n, err := rdb.Exists(ctx, "code_v@example.com").Result()
	require.NoError(t, err)
	assert.Zero(t, n, "a verified code is deleted")
	assert.ErrorIs(t, s.Verify(ctx, codes.ID{Email: "v@example.com"}, issued.Code), codes.ErrNotFound, "single use")
}

func TestVerifyConcurrentSucceedsOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t, codes.Config{})
	issued, err := s.GetOrCreate(ctx, codes.ID{Email: "once@example.com"})
	require.NoError(t, err)

	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.Verify(ctx, codes.ID{Email: "once@example.com"}, issued.Code) == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 1, ok)
}

// Single mode only: it stops the one server (the cluster and sentinel
// deployments' failures are the e2e tests' and redistest's).
func TestRedisDownIsNotAnExpectedOutcome(t *testing.T) {
	t.Parallel()
	skipUnlessSingle(t)
	ctx := context.Background()
	srv := redistest.Start(t)
	s, err := codes.NewStore(srv.Client(t), codes.Config{KeyPrefix: "code_", TTL: time.Minute, Length: 6})
	require.NoError(t, err)
	srv.Stop()

	_, err = s.GetOrCreate(ctx, codes.ID{Email: "down@example.com"})
	require.Error(t, err)
	assert.NotErrorIs(t, err, codes.ErrNotFound)
	err = s.Verify(ctx, codes.ID{Email: "down@example.com"}, "123456")
	require.Error(t, err)
	assert.NotErrorIs(t, err, codes.ErrNotFound)
	assert.NotErrorIs(t, err, codes.ErrMismatch)

	require.NoError(t, srv.Restart())
	_, err = s.GetOrCreate(ctx, codes.ID{Email: "down@example.com"})
	assert.NoError(t, err, "works again once Redis is back")
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := codes.Config{KeyPrefix: "code_", TTL: time.Minute, Length: 6}
	require.NoError(t, ok.Validate())
	tests := map[string]struct {
		cfg  codes.Config
		want string
	}{
		"empty prefix":        {codes.Config{TTL: time.Minute, Length: 6}, "KeyPrefix: must not be empty"},
		"short ttl":           {codes.Config{KeyPrefix: "code_", TTL: 500 * time.Millisecond, Length: 6}, "TTL: 500ms is shorter than 1s"},
		"length 3":            {codes.Config{KeyPrefix: "code_", TTL: time.Minute, Length: 3}, "Length: 3 is outside 4..10"},
		"length 11":           {codes.Config{KeyPrefix: "code_", TTL: time.Minute, Length: 11}, "Length: 11 is outside 4..10"},
		"negative attempts":   {codes.Config{KeyPrefix: "code_", TTL: time.Minute, Length: 6, MaxAttempts: -1}, "MaxAttempts: must not be negative (0 turns the limit off)"},
		"every problem again": {codes.Config{Length: 3, MaxAttempts: -1}, "KeyPrefix: must not be empty\nTTL: 0s is shorter than 1s\nLength: 3 is outside 4..10\nMaxAttempts: must not be negative (0 turns the limit off)"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			require.Error(t, err)
			assert.Equal(t, tt.want, err.Error())
			_, err = codes.NewStore(nil, tt.cfg)
			require.Error(t, err)
			assert.Equal(t, tt.want, err.Error(), "NewStore reports the same problems")
		})
	}
}

func TestGenerate(t *testing.T) {
	t.Parallel()
	for _, n := range []int{4, 6, 10} {
		c, err := codes.Generate(randReader(), n)
		require.NoError(t, err)
		assert.Len(t, c, n)
		assert.Equal(t, "", strings.Trim(c, "0123456789"), "digits only: %q", c)
	}
}

// Bytes 250..255 would bias digits 0..5 if reduced modulo 10; they are skipped.
func TestGenerateRejectsBiasedBytes(t *testing.T) {
	t.Parallel()
	src := bytes.NewReader(append(bytes.Repeat([]byte{250, 251, 255}, 10), 7, 8, 9, 10, 249, 0, 0, 0, 0, 0, 0, 0, 0, 0))
	c, err := codes.Generate(src, 4)
	require.NoError(t, err)
	assert.Equal(t, "7890", c)
}

func TestGenerateReaderError(t *testing.T) {
	t.Parallel()
	_, err := codes.Generate(bytes.NewReader(nil), 6)
	assert.Error(t, err)
}

// Every digit appears about equally often at every position.
func TestGenerateIsUniform(t *testing.T) {
	t.Parallel()
	const samples = 20000
	var counts [6][10]int
	for range samples {
		c, err := codes.Generate(randReader(), 6)
		require.NoError(t, err)
		for i := range c {
			counts[i][c[i]-'0']++
		}
	}
	// Chi-square with 9 degrees of freedom; 40 is beyond the 0.99999 quantile,
	// so a fair generator fails this about once in 100,000 runs.
	for pos, row := range counts {
		var chi float64
		for _, n := range row {
			d := float64(n) - samples/10.0
			chi += d * d / (samples / 10.0)
		}
		assert.Less(t, chi, 40.0, "position %d: %v", pos, row)
	}
}

// skipUnlessSingle skips a test that needs the single deployment (it stops
// the one server) in the sentinel and cluster runs; it runs in the single
// run, make test.
func skipUnlessSingle(t *testing.T) {
	t.Helper()
	if m := redistest.Mode(); m != redistest.ModeSingle {
		t.Skipf("single mode only (runs with %s unset or single), not %s", redistest.EnvMode, m)
	}
}
