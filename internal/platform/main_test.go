package platform_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/redistest"
)

// testConfig is a binary's configuration as the commands write theirs.
type testConfig struct {
	platform.Common
	AdminAddr string `envconfig:"ADMIN_ADDR" default:"127.0.0.1:1"`
}

func (c *testConfig) Resolve() error { return c.Common.Resolve() }

// testBinary records what Run gave Serve.
// testUsage is the test binary's own part of -h.
const testUsage = "  -extra\n    \thandled by the binary's main\n"

type testBinary struct {
	served    bool
	cfg       testConfig
	serveFn   func(ctx context.Context) error
	gcPercent int
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
		Usage:     testUsage,
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
		GCPercent: b.gcPercent,
	}, args, &stderr)
	return code, stderr.String()
}

func TestLoadDefaultsAndEnv(t *testing.T) {
	t.Setenv("CODE_TTL", "3m")
	cfg, err := platform.Load[testConfig]()
	require.NoError(t, err)
	assert.Equal(t, 3*time.Minute, cfg.TTL)
	assert.Equal(t, "code_", cfg.KeyPrefix)
	assert.Equal(t, "127.0.0.1:1", cfg.AdminAddr)

	t.Setenv("CODE_TTL", "ten minutes")
	_, err = platform.Load[testConfig]()
	require.Error(t, err)
	assert.Equal(t, "CODE_TTL: not a duration (e.g. 90s, 10m, 24h)", err.Error(),
		"reported once, without its value: the rules across variables see the default")

	t.Setenv("QUEUE_SHARDS", "two")
	t.Setenv("DASHBOARD_HOSTS", "")
	_, err = platform.Load[testConfig]()
	require.Error(t, err)
	assert.Equal(t, "CODE_TTL: not a duration (e.g. 90s, 10m, 24h)\nQUEUE_SHARDS: not an integer", err.Error())
}

// Variables lists a configuration's variables in order, embedded ones
// first, each with its default.
func TestVariables(t *testing.T) {
	t.Parallel()
	vars := platform.Variables(testConfig{})
	require.NotEmpty(t, vars)
	assert.Equal(t, platform.Variable{Name: "REDIS_MODE", Default: "single", HasDefault: true}, vars[0])
	assert.Equal(t, platform.Variable{Name: "ADMIN_ADDR", Default: "127.0.0.1:1", HasDefault: true}, vars[len(vars)-1])
	assert.Contains(t, vars, platform.Variable{Name: "CODE_SECRET"}, "no default")
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
	assert.Equal(t, 2*time.Minute, b.cfg.TTL)
	assert.NotContains(t, stderr, "serving", "LOG_LEVEL=warn drops info")
	assert.Contains(t, stderr, `"msg":"logged as JSON"`)
}

// Serve runs with the binary's GCPercent unless GOGC is set: the
// operator's GOGC wins, and 0 leaves the runtime's.
func TestRunGCPercent(t *testing.T) {
	gcPercent := func() int { p := debug.SetGCPercent(100); debug.SetGCPercent(p); return p }
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	for _, tc := range []struct {
		name      string
		gogc      string // "": unset
		gcPercent int
		want      int
	}{
		{"the binary's", "", 250, 250},
		{"none", "", 0, 100},
		{"GOGC set", "150", 250, 100}, // the runtime read GOGC at start; Run leaves it
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetGCPercent(100)
			t.Setenv("GOGC", tc.gogc)
			if tc.gogc == "" {
				require.NoError(t, os.Unsetenv("GOGC"))
			}
			got := -1
			b := &testBinary{gcPercent: tc.gcPercent, serveFn: func(context.Context) error { got = gcPercent(); return nil }}
			code, stderr := b.run(context.Background(), t)
			require.Equal(t, 0, code, stderr)
			assert.Equal(t, tc.want, got)
		})
	}
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
	code, stderr = b.run(context.Background(), t, "-h")
	assert.Equal(t, 0, code)
	assert.Contains(t, stderr, "-healthcheck")
	assert.True(t, strings.HasSuffix(stderr, testUsage), "the binary's own usage last: %q", stderr)
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

func TestPurposes(t *testing.T) {
	cfg, err := platform.Load[testConfig]()
	require.NoError(t, err)
	assert.Equal(t, platform.Purposes{"register": 0, "login": 0, "reset_password": 0, "change_email": 0}, cfg.Purposes, "the default")

	t.Setenv("PURPOSES", "register, reset_password:15m")
	cfg, err = platform.Load[testConfig]()
	require.NoError(t, err)
	assert.Equal(t, platform.Purposes{"register": 0, "reset_password": 15 * time.Minute}, cfg.Purposes)
	for name, tc := range map[string]struct{ purposes, want string }{
		"not a duration": {"register:soon", "PURPOSES: register: the lifetime is not a duration"},
		"too short":      {"register:1ms", "PURPOSES: register: 1ms is shorter than 1s"},
		"bad name":       {"register,Reset", `PURPOSES: "Reset": `},
		"twice":          {"register,login:5m,register", `PURPOSES: "register" is listed twice`},
		"empty name":     {"register,,login", "PURPOSES: a purpose must not be empty"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("PURPOSES", tc.purposes)
			_, err := platform.Load[testConfig]()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	t.Run("none", func(t *testing.T) {
		t.Setenv("PURPOSES", "")
		cfg, err := platform.Load[testConfig]()
		require.NoError(t, err)
		assert.Empty(t, cfg.Purposes)
		assert.NotNil(t, cfg.Purposes, "the default purpose alone, not codes' default list")
	})
}

// Variables of earlier releases stop start-up, each naming what replaces
// it and never repeating its value.
func TestRetiredVariables(t *testing.T) {
	for name, want := range map[string]string{ //nolint:gosec // G101: the names of variables, no credentials
		"SMTP_HOST":                   "SMTP_HOST: no longer read: use SMTP_URL",
		"SMTP_PASSWORD":               "SMTP_PASSWORD: no longer read: use SMTP_URL",
		"SMTP_TLS":                    "SMTP_TLS: no longer read: use SMTP_URL",
		"SMTP_TIMEOUT":                "SMTP_TIMEOUT: no longer read: use SMTP_URL",
		"CODE_STORAGE":                "CODE_STORAGE: no longer read: use CODE_SECRET",
		"CODE_SECRET_PREVIOUS":        "CODE_SECRET_PREVIOUS: no longer read: use CODE_SECRET=current,previous",
		"DASHBOARD_PASSWORD":          "DASHBOARD_PASSWORD: no longer read: use DASHBOARD_AUTH",
		"HTTP_REQUEST_TIMEOUT":        "HTTP_REQUEST_TIMEOUT: no longer read: use REQUEST_TIMEOUT",
		"GRPC_MAX_CONNECTIONS":        "GRPC_MAX_CONNECTIONS: no longer read: use MAX_CONNECTIONS",
		"GRPC_MAX_CONCURRENT_STREAMS": "GRPC_MAX_CONCURRENT_STREAMS: no longer read",
		"CODE_TTL_RESET_PASSWORD":     "CODE_TTL_RESET_PASSWORD: no longer read: give the lifetime in PURPOSES (reset_password:15m)",
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(name, "hunter2")
			_, err := platform.Load[testConfig]()
			require.Error(t, err)
			assert.Contains(t, err.Error(), want)
			assert.NotContains(t, err.Error(), "hunter2", "a value is never repeated")
		})
	}
	t.Run("a purpose of PURPOSES", func(t *testing.T) {
		t.Setenv("PURPOSES", "signup")
		t.Setenv("CODE_TTL_SIGNUP", "5m")
		_, err := platform.Load[testConfig]()
		require.ErrorContains(t, err, "CODE_TTL_SIGNUP: no longer read: give the lifetime in PURPOSES (signup:15m)")
	})
}

func TestCodeSecret(t *testing.T) {
	const hexSecret = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	cfg, err := platform.Load[testConfig]()
	require.NoError(t, err)
	assert.Nil(t, cfg.Seal, "plain by default")

	t.Run("sealed", func(t *testing.T) {
		t.Setenv("CODE_SECRET", hexSecret)
		cfg, err := platform.Load[testConfig]()
		require.NoError(t, err)
		require.NotNil(t, cfg.Seal)
		assert.NotContains(t, fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg), "0001020304", "never printed")
	})
	t.Run("rotation", func(t *testing.T) {
		previous := "abababab" + strings.Repeat("cd", 28)
		t.Setenv("CODE_SECRET", previous)
		old, err := platform.Load[testConfig]()
		require.NoError(t, err)
		id := codes.ID{Email: "a@example.com"}
		mac := old.Seal.MAC(id, "123456")

		t.Setenv("CODE_SECRET", hexSecret+", "+previous)
		cfg, err := platform.Load[testConfig]()
		require.NoError(t, err)
		assert.True(t, cfg.Seal.Matches(id, "123456", mac), "a code sealed under the previous secret still verifies")
		assert.NotEqual(t, mac, cfg.Seal.MAC(id, "123456"), "new codes are sealed under the new secret")
		assert.NotContains(t, fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg), "abababab", "never printed")
	})
	t.Run("files", func(t *testing.T) {
		dir := t.TempDir()
		current, previous := filepath.Join(dir, "current"), filepath.Join(dir, "previous")
		require.NoError(t, os.WriteFile(current, []byte("the current secret, 32 bytes long\n"), 0o600))
		require.NoError(t, os.WriteFile(previous, []byte("the previous secret: 32 bytes .."), 0o600))
		t.Setenv("CODE_SECRET_FILE", current+","+previous)
		cfg, err := platform.Load[testConfig]()
		require.NoError(t, err)
		require.NotNil(t, cfg.Seal)
	})
	dir := t.TempDir()
	weakFile, goodFile := filepath.Join(dir, "weak"), filepath.Join(dir, "good")
	require.NoError(t, os.WriteFile(weakFile, make([]byte, 64), 0o600))
	require.NoError(t, os.WriteFile(goodFile, []byte("the current secret, 32 bytes long\n"), 0o600))
	for name, tc := range map[string]struct {
		env  map[string]string
		want string
	}{
		"short secret":   {map[string]string{"CODE_SECRET": "c2VjcmV0LXNlY3JldA=="}, "CODE_SECRET: the secret: "}, //nolint:gosec // G101: a made-up, too short secret
		"both":           {map[string]string{"CODE_SECRET": hexSecret, "CODE_SECRET_FILE": goodFile}, "CODE_SECRET: set only one"},
		"missing file":   {map[string]string{"CODE_SECRET_FILE": "/nonexistent/secret"}, "CODE_SECRET_FILE: the secret: cannot open the file"},
		"bad previous":   {map[string]string{"CODE_SECRET": hexSecret + ",hunter2!hunter2"}, "CODE_SECRET: the previous secret: neither hex nor base64"},
		"three":          {map[string]string{"CODE_SECRET": hexSecret + "," + hexSecret + "," + hexSecret}, "CODE_SECRET: want the secret"},
		"same previous":  {map[string]string{"CODE_SECRET": hexSecret + "," + hexSecret}, "CODE_SECRET:"},
		"short file":     {map[string]string{"CODE_SECRET_FILE": "/dev/null"}, "CODE_SECRET_FILE:"}, //nolint:gosec // G101: no secret
		"empty previous": {map[string]string{"CODE_SECRET": hexSecret + ","}, "CODE_SECRET: the previous secret:"},
		"all zero":       {map[string]string{"CODE_SECRET": strings.Repeat("00", 32)}, "CODE_SECRET: the secret: one byte repeated"},
		"weak previous":  {map[string]string{"CODE_SECRET": hexSecret + "," + strings.Repeat("00", 32)}, "CODE_SECRET: the previous secret: one byte repeated"},
		"weak file":      {map[string]string{"CODE_SECRET_FILE": weakFile}, "CODE_SECRET_FILE: the secret: one byte repeated"},
		"weak prev file": {map[string]string{"CODE_SECRET_FILE": goodFile + "," + weakFile}, "CODE_SECRET_FILE: the previous secret: one byte repeated"},
	} {
		t.Run(name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := platform.Load[testConfig]()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "0001020304")
			assert.NotContains(t, err.Error(), "hunter2")
			assert.NotContains(t, err.Error(), "c2VjcmV0")
		})
	}
}

func TestDashboardAuth(t *testing.T) {
	cfg, err := platform.Load[testConfig]()
	require.NoError(t, err)
	assert.False(t, cfg.DashboardAuth.Set(), "none by default")

	t.Setenv("DASHBOARD_AUTH", "ops:pass:word")
	cfg, err = platform.Load[testConfig]()
	require.NoError(t, err)
	assert.Equal(t, platform.Credentials{User: "ops", Password: "pass:word"}, cfg.DashboardAuth, "split at the first colon")
	assert.NotContains(t, fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg), "pass:word", "never printed")

	for _, bad := range []string{"hunter2", ":hunter2", "ops:"} {
		t.Setenv("DASHBOARD_AUTH", bad)
		_, err = platform.Load[testConfig]()
		require.ErrorContains(t, err, "DASHBOARD_AUTH: want user:password")
		assert.NotContains(t, err.Error(), "hunter2")
	}
}
