package main

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/verifyq/verifyq/auth"
	"github.com/verifyq/verifyq/internal/grpctest"
	"github.com/verifyq/verifyq/internal/logtest"
	"github.com/verifyq/verifyq/internal/metrics/metricstest"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/redistest"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
)

type stack struct {
	redis *redistest.Server
	app   *App
	conn  *grpc.ClientConn
	logs  *logtest.Buffer
}

// startApp runs the real enqueuer App on loopback ports against its own
// redis-server and dials its gRPC address. The app is closed, and must close
// cleanly, when the test ends.
func startApp(t *testing.T, configure ...func(*Config)) *stack {
	t.Helper()
	s := openApp(t, configure...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.app.cfg.ShutdownTimeout)
		defer cancel()
		assert.NoError(t, s.app.Close(ctx))
	})
	return s
}

// openApp is startApp without the Close at the test's end: for tests that
// close the App themselves.
func openApp(t *testing.T, configure ...func(*Config)) *stack {
	t.Helper()
	s := &stack{redis: redistest.Start(t)}
	cfg := Config{
		Common: platform.Common{
			RedisMode: "single",
			RedisURL:  platform.Secret(s.redis.URL()),
			LogLevel:  platform.LogLevel(slog.LevelDebug),
			KeyPrefix: "code_",
			TTL:       10 * time.Minute,

			TagSeparators: "+",

			QueueShards:     1,
			ShutdownTimeout: 10 * time.Second,
		},
		HTTPAddr:       "127.0.0.1:0",
		AdminAddr:      "127.0.0.1:0",
		GRPCAddr:       "127.0.0.1:0",
		RequestTimeout: 5 * time.Second,
		Length:         6,
		MaxConnections: 64,
	}
	for _, f := range configure {
		f(&cfg)
	}
	require.NoError(t, cfg.Resolve())
	logger, logs := logtest.New(t)
	s.logs = logs
	app, err := NewApp(cfg, logger, nil)
	require.NoError(t, err)
	require.NoError(t, app.Open(context.Background()))
	s.app = app
	s.conn = grpctest.Dial(t, app.GRPCAddr())
	return s
}

// The wiring: one App serves HTTP, both gRPC services and health on the
// same service and Redis, and its admin /metrics counts both edges. The
// edges themselves are tested in httpapi and grpcapi.
func TestAppWiresEveryEdge(t *testing.T) {
	t.Parallel()
	s := startApp(t)
	ctx := context.Background()

	sendCode(t, s.app, "http@example.com")
	rsp, err := grpctest.GetVarifyCode(ctx, t, s.conn, "legacy@example.com")
	require.NoError(t, err)
	assert.Equal(t, grpctest.LegacyReply{Error: 0, Email: "legacy@example.com"}, rsp)
	code, err := s.redis.Client(t).Get(ctx, "code_legacy@example.com").Result()
	require.NoError(t, err, "the code under the old key")
	ok, err := verifyqv1.NewCodeServiceClient(s.conn).VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: "legacy@example.com", Code: code})
	require.NoError(t, err)
	assert.True(t, ok.GetVerified())
	require.Eventually(t, func() bool {
		res, err := healthpb.NewHealthClient(s.conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && res.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}, 10*time.Second, 50*time.Millisecond, "health follows Redis")

	fams := metricstest.Scrape(t, "http://"+s.app.AdminAddr()+"/metrics")
	for _, labels := range []map[string]string{
		{"api": "http", "route": "/v1/codes", "outcome": "ok"},
		{"api": "grpc", "route": "/message.VarifyService/GetVarifyCode", "outcome": "ok"},
		{"api": "grpc", "route": "/verifyq.v1.CodeService/VerifyCode", "outcome": "ok"},
	} {
		v, found := fams.Value("verifyq_requests_total", labels)
		assert.True(t, found, "%v", labels)
		assert.Equal(t, 1.0, v, "%v", labels)
	}
	assert.NotContains(t, s.logs.String(), code, "never the code")
}

// With API_KEYS_FILE the App's HTTP and v1 calls need a key with its scope,
// the old gateway's keyless call from loopback (LEGACY_CALLERS' default)
// works unchanged, health asks no key, and /metrics counts by caller.
func TestAppWithKeys(t *testing.T) {
	t.Parallel()
	key, line, err := auth.NewKey("gateway", "send,verify")
	require.NoError(t, err)
	keysFile := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(keysFile, []byte(line+"\n"), 0o600))
	s := startApp(t, func(c *Config) {
		c.APIKeysFile = keysFile
		require.NoError(t, c.LegacyCallers.Decode("127.0.0.0/8,::1"))
	})
	ctx := context.Background()
	api := "http://" + s.app.HTTPAddr() + "/v1/codes"

	res, err := http.Post(api, "application/json", strings.NewReader(`{"email":"nokey@example.com"}`)) //nolint:gosec // G107: the test's own server
	require.NoError(t, err)
	_ = res.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, res.StatusCode)
	req, err := http.NewRequest(http.MethodPost, api, strings.NewReader(`{"email":"key@example.com"}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = res.Body.Close()
	assert.Equal(t, http.StatusAccepted, res.StatusCode)

	_, err = verifyqv1.NewCodeServiceClient(s.conn).SendCode(ctx, &verifyqv1.SendCodeRequest{Email: "nokey@example.com"})
	assert.Equal(t, codes.Unauthenticated, status.Code(err))
	rsp, err := grpctest.GetVarifyCode(ctx, t, s.conn, "legacy@example.com")
	require.NoError(t, err)
	assert.Equal(t, grpctest.LegacyReply{Error: 0, Email: "legacy@example.com"}, rsp)
	_, err = healthpb.NewHealthClient(s.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	assert.NotEqual(t, codes.Unauthenticated, status.Code(err))

	n, err := s.redis.Client(t).Exists(ctx, "code_nokey@example.com").Result()
	require.NoError(t, err)
	assert.Zero(t, n, "nothing stored without a key")

	fams := metricstest.Scrape(t, "http://"+s.app.AdminAddr()+"/metrics")
	for _, labels := range []map[string]string{
		{"api": "http", "route": "/v1/codes", "caller": "gateway", "outcome": "ok"},
		{"api": "http", "route": "/v1/codes", "caller": "", "outcome": "unauthenticated"},
		{"api": "grpc", "route": "/message.VarifyService/GetVarifyCode", "caller": "legacy", "outcome": "ok"},
		{"api": "grpc", "route": "/verifyq.v1.CodeService/SendCode", "caller": "", "outcome": "unauthenticated"},
	} {
		v, found := fams.Value("verifyq_requests_total", labels)
		assert.True(t, found, "%v", labels)
		assert.Equal(t, 1.0, v, "%v", labels)
	}
	assert.NotContains(t, s.logs.String(), key, "never the key")
	assert.Empty(t, s.logs.Matching(t, "serving every caller without an API key"), "no warning with keys")
}

// ALLOW_UNAUTHENTICATED on an address other hosts can reach: the App
// starts, and warns.
func TestAppWarnsWhenUnauthenticatedBeyondLoopback(t *testing.T) {
	t.Parallel()
	s := startApp(t, func(c *Config) {
		c.HTTPAddr = "0.0.0.0:0"
		c.AllowUnauthenticated = true
	})
	lines := s.logs.Matching(t, "serving every caller without an API key on an address other hosts can reach "+
		"(ALLOW_UNAUTHENTICATED=true): anyone who reaches it can ask for codes, verify them and read their status; set API_KEYS_FILE")
	require.Len(t, lines, 1)
	assert.Equal(t, "WARN", lines[0]["level"])
}

// The public HTTP server writes a reply for as long as REQUEST_TIMEOUT
// lets a request run, and some: past its write timeout the reply of a slow
// request, its 504, would be lost and the connection dropped.
func TestRequestTimeoutBoundsTheWriteTimeout(t *testing.T) {
	t.Parallel()
	for _, d := range []time.Duration{5 * time.Second, 30 * time.Second} {
		s := startApp(t, func(c *Config) { c.RequestTimeout = d })
		assert.Greater(t, s.app.httpSrv.WriteTimeout, d+time.Second, "REQUEST_TIMEOUT %s", d)
	}
}
