package platform_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/redistest"
)

// testConfig is a binary's configuration as the commands write theirs.
type testConfig struct {
	platform.Common
	AdminAddr string `envconfig:"ADMIN_ADDR" default:"127.0.0.1:1"`
}

func (c testConfig) Validate() error { return errors.Join(c.Common.Validate()...) }

// testBinary records what Run gave Serve.
type testBinary struct {
	served  bool
	cfg     testConfig
	serveFn func(ctx context.Context) error
}

func (b *testBinary) run(ctx context.Context, t *testing.T, args ...string) (int, string) {
	t.Helper()
	// Run sets the process's loggers up on stderr; put them back after.
	prev := slog.Default()
	t.Cleanup(func() {
		slog.SetDefault(prev)
		redis.SetLogger(platform.RedisLogger{L: prev})
	})
	var stderr strings.Builder
	code := platform.Run(ctx, platform.Binary[testConfig]{
		Name:      "testbin",
		AdminAddr: func(cfg testConfig) string { return cfg.AdminAddr },
		Serve: func(ctx context.Context, cfg testConfig, logger *slog.Logger) error {
			b.served, b.cfg = true, cfg
			logger.Info("serving")
			if b.serveFn != nil {
				return b.serveFn(ctx)
			}
			<-ctx.Done()
			return nil
		},
	}, args, &stderr)
	return code, stderr.String()
}

func TestLoadDefaultsAndEnv(t *testing.T) {
	t.Setenv("CODE_TTL", "3m")
	cfg, err := platform.Load[testConfig]()
	require.NoError(t, err)
	assert.Equal(t, 3*time.Minute, cfg.CodeTTL)
	assert.Equal(t, "code_", cfg.CodeKeyPrefix)
	assert.Equal(t, "127.0.0.1:1", cfg.AdminAddr)

	t.Setenv("CODE_TTL", "ten minutes")
	_, err = platform.Load[testConfig]()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "CODE_TTL")
}

func TestRunServesUntilContextEnds(t *testing.T) {
	t.Setenv("LOG_LEVEL", "warn")
	t.Setenv("CODE_TTL", "2m")
	ctx, cancel := context.WithCancel(context.Background())
	b := &testBinary{serveFn: func(ctx context.Context) error {
		slog.Default().Warn("logged as JSON")
		cancel() // a signal
		<-ctx.Done()
		return nil
	}}
	code, stderr := b.run(ctx, t)
	assert.Equal(t, 0, code)
	require.True(t, b.served)
	assert.Equal(t, 2*time.Minute, b.cfg.CodeTTL)
	assert.NotContains(t, stderr, "serving", "LOG_LEVEL=warn drops info")
	assert.Contains(t, stderr, `"msg":"logged as JSON"`)
}

func TestRunServeFailure(t *testing.T) {
	b := &testBinary{serveFn: func(context.Context) error { return errors.New("ADMIN_ADDR: listen: address in use") }}
	code, stderr := b.run(context.Background(), t)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "testbin: ADMIN_ADDR: listen: address in use\n")
}

// A bad configuration exits 1 before anything starts, naming every bad
// variable and no secret.
func TestRunBadConfig(t *testing.T) {
	t.Setenv("CODE_TTL", "500ms")
	t.Setenv("CODE_KEY_PREFIX", "")
	t.Setenv("REDIS_URL", "http://user:hunter2@redis")
	b := &testBinary{}
	for _, args := range [][]string{nil, {"-healthcheck"}} {
		code, stderr := b.run(context.Background(), t, args...)
		assert.Equal(t, 1, code)
		assert.False(t, b.served)
		assert.Equal(t, "testbin: REDIS_URL: not a valid URL for REDIS_MODE=single (see go-redis's URL forms)\n"+
			"CODE_KEY_PREFIX: must not be empty\nCODE_TTL: 500ms is shorter than 1s\n", stderr)
	}
}

func TestRunArguments(t *testing.T) {
	b := &testBinary{}
	code, stderr := b.run(context.Background(), t, "-bogus")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "-healthcheck")
	code, _ = b.run(context.Background(), t, "extra")
	assert.Equal(t, 2, code)
	code, _ = b.run(context.Background(), t, "-h")
	assert.Equal(t, 0, code)
	assert.False(t, b.served)
}

func TestRunHealthcheck(t *testing.T) {
	rs := redistest.Start(t)
	admin := httptest.NewServer(platform.AdminMux(rs.Client(t)))
	t.Cleanup(admin.Close)
	b := &testBinary{}

	t.Setenv("ADMIN_ADDR", strings.TrimPrefix(admin.URL, "http://"))
	code, stderr := b.run(context.Background(), t, "-healthcheck")
	assert.Equal(t, 0, code, stderr)
	assert.False(t, b.served, "a health check serves nothing")

	rs.Stop()
	code, stderr = b.run(context.Background(), t, "-healthcheck")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "testbin: 503 Service Unavailable: redis unreachable")
}

func TestPurposeTTLs(t *testing.T) {
	t.Setenv("PURPOSES", "register,reset_password")
	t.Setenv("CODE_TTL_RESET_PASSWORD", "15m")
	cfg, err := platform.Load[testConfig]()
	require.NoError(t, err)
	ttls, err := cfg.PurposeTTLs()
	require.NoError(t, err)
	assert.Equal(t, map[string]time.Duration{"register": 0, "reset_password": 15 * time.Minute}, ttls)

	for name, env := range map[string][2]string{
		"unknown purpose": {"CODE_TTL_LOGIN", "5m"},
		"not a duration":  {"CODE_TTL_REGISTER", "soon"},
		"too short":       {"CODE_TTL_REGISTER", "1ms"},
		"lower case name": {"CODE_TTL_register", "5m"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(env[0], env[1])
			_, err := platform.Load[testConfig]()
			require.Error(t, err)
			assert.Contains(t, err.Error(), env[0]+":", "the error names the variable")
		})
	}
	t.Run("bad purpose", func(t *testing.T) {
		t.Setenv("PURPOSES", "register,Reset,register")
		_, err := platform.Load[testConfig]()
		require.Error(t, err)
		assert.Contains(t, err.Error(), "PURPOSES:")
		assert.Contains(t, err.Error(), "listed twice")
	})
	t.Run("none", func(t *testing.T) {
		t.Setenv("PURPOSES", "")
		_, err := platform.Load[testConfig]()
		require.ErrorContains(t, err, "CODE_TTL_RESET_PASSWORD:", "a lifetime of no purpose")
		require.NoError(t, os.Unsetenv("CODE_TTL_RESET_PASSWORD")) // t.Setenv restores it
		cfg, err := platform.Load[testConfig]()
		require.NoError(t, err)
		ttls, err := cfg.PurposeTTLs()
		require.NoError(t, err)
		assert.Empty(t, ttls)
	})
}

func TestCodeStorage(t *testing.T) {
	const hexSecret = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	cfg, err := platform.Load[testConfig]()
	require.NoError(t, err)
	seal, err := cfg.Seal()
	require.NoError(t, err)
	assert.Nil(t, seal, "plain by default")

	t.Run("sealed", func(t *testing.T) {
		t.Setenv("CODE_STORAGE", "sealed")
		t.Setenv("CODE_SECRET", hexSecret)
		t.Setenv("CODE_SECRET_PREVIOUS", strings.Repeat("ab", 32))
		cfg, err := platform.Load[testConfig]()
		require.NoError(t, err)
		seal, err := cfg.Seal()
		require.NoError(t, err)
		require.NotNil(t, seal)
		assert.NotContains(t, fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg), hexSecret, "never printed")
	})
	t.Run("file", func(t *testing.T) {
		name := filepath.Join(t.TempDir(), "secret")
		require.NoError(t, os.WriteFile(name, []byte(strings.Repeat("s", 32)+"\n"), 0o600))
		t.Setenv("CODE_STORAGE", "sealed")
		t.Setenv("CODE_SECRET_FILE", name)
		cfg, err := platform.Load[testConfig]()
		require.NoError(t, err)
		seal, err := cfg.Seal()
		require.NoError(t, err)
		require.NotNil(t, seal)
	})
	for name, tc := range map[string]struct {
		env  map[string]string
		want string
	}{
		"unknown mode":     {map[string]string{"CODE_STORAGE": "rot13"}, "CODE_STORAGE:"},
		"no secret":        {map[string]string{"CODE_STORAGE": "sealed"}, "CODE_SECRET:"},
		"short secret":     {map[string]string{"CODE_STORAGE": "sealed", "CODE_SECRET": "c2VjcmV0LXNlY3JldA=="}, "CODE_SECRET:"}, //nolint:gosec // G101: a made-up, too short secret
		"both":             {map[string]string{"CODE_STORAGE": "sealed", "CODE_SECRET": hexSecret, "CODE_SECRET_FILE": "/nonexistent"}, "CODE_SECRET:"},
		"missing file":     {map[string]string{"CODE_STORAGE": "sealed", "CODE_SECRET_FILE": "/nonexistent/secret"}, "CODE_SECRET_FILE:"},
		"bad previous":     {map[string]string{"CODE_STORAGE": "sealed", "CODE_SECRET": hexSecret, "CODE_SECRET_PREVIOUS": "hunter2hunter2"}, "CODE_SECRET_PREVIOUS:"},
		"same previous":    {map[string]string{"CODE_STORAGE": "sealed", "CODE_SECRET": hexSecret, "CODE_SECRET_PREVIOUS": hexSecret}, "CODE_SECRET:"},
		"secret but plain": {map[string]string{"CODE_SECRET": hexSecret}, "CODE_SECRET:"},
	} {
		t.Run(name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := platform.Load[testConfig]()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), hexSecret)
			assert.NotContains(t, err.Error(), "hunter2")
			assert.NotContains(t, err.Error(), "c2VjcmV0")
		})
	}
}
