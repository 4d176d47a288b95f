package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

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
	app, err := NewApp(cfg, logger)
	require.NoError(t, err)
	require.NoError(t, app.Open(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		assert.NoError(t, app.Close(ctx))
	})
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
