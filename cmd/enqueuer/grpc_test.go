package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/verifyq/verifyq/internal/grpctest"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/redistest"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
	"github.com/verifyq/verifyq/tasks"
)

// logBuffer collects the app's JSON log lines and shows them in the test log.
type logBuffer struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Log(strings.TrimSpace(string(p)))
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type grpcStack struct {
	redis *redistest.Server
	app   *App
	conn  *grpc.ClientConn
	logs  *logBuffer
}

// startApp runs the real enqueuer App on loopback ports against its own
// redis-server and dials its gRPC address. The app is closed, and must close
// cleanly, when the test ends.
func startApp(t *testing.T, configure ...func(*Config)) *grpcStack {
	t.Helper()
	s := &grpcStack{redis: redistest.Start(t), logs: &logBuffer{t: t}}
	cfg := Config{
		Common: platform.Common{
			RedisURL:        s.redis.URL(),
			LogLevel:        "debug",
			CodeKeyPrefix:   "code_",
			CodeTTL:         10 * time.Minute,
			ShutdownTimeout: 10 * time.Second,
			DashboardUser:   "admin",
		},
		HTTPAddr:        "127.0.0.1:0",
		AdminAddr:       "127.0.0.1:0",
		GRPCAddr:        "127.0.0.1:0",
		GRPCCallTimeout: 5 * time.Second,
		CodeLength:      6,
	}
	for _, f := range configure {
		f(&cfg)
	}
	require.NoError(t, cfg.Validate())
	logger := slog.New(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
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

func (s *grpcStack) legacy(t *testing.T, email string) grpctest.LegacyReply {
	t.Helper()
	rsp, err := grpctest.GetVarifyCode(context.Background(), t, s.conn, email)
	require.NoError(t, err, "the old service always answers with an OK status")
	return rsp
}

func (s *grpcStack) v1() verifyqv1.CodeServiceClient { return verifyqv1.NewCodeServiceClient(s.conn) }

func (s *grpcStack) health(t *testing.T, name string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	res, err := healthpb.NewHealthClient(s.conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: name})
	require.NoError(t, err)
	return res.GetStatus()
}

func (s *grpcStack) waitHealth(t *testing.T, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	for _, name := range []string{"", "message.VarifyService", "verifyq.v1.CodeService"} {
		require.Eventually(t, func() bool { return s.health(t, name) == want }, 10*time.Second, 50*time.Millisecond,
			"health of %q becomes %s", name, want)
	}
}

func (s *grpcStack) pending(t *testing.T) int {
	t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(s.redis.Client(t)).GetQueueInfo(tasks.Queue)
	if err != nil {
		return 0
	}
	return info.Pending
}

// The old gateway's call, with messages built from the old .proto file at
// run time: error 0, the address echoed, no code, the code stored under the
// old key and a send task queued.
func TestGRPCOldServiceSendsCode(t *testing.T) {
	t.Parallel()
	s := startApp(t)
	const email = "Old.Gateway@Example.com"

	rsp := s.legacy(t, email)
	assert.Equal(t, grpctest.LegacyReply{Error: 0, Email: email, Code: ""}, rsp)
	code, err := s.redis.Client(t).Get(context.Background(), "code_"+email).Result()
	require.NoError(t, err, "key code_<email>, the address as sent")
	assert.Len(t, code, 6)
	assert.Equal(t, 1, s.pending(t), "one send task queued")
}

// Invalid addresses: in-band error 3 on the old service, InvalidArgument on
// v1; nothing stored, nothing queued.
func TestGRPCInvalidAddress(t *testing.T) {
	t.Parallel()
	s := startApp(t)
	for _, email := range []string{"", "not an address", "x@example.com\r\nBcc: y@example.com", "Name <a@example.com>"} {
		assert.Equal(t, grpctest.LegacyReply{Error: 3, Email: email}, s.legacy(t, email), "%q", email)
		_, err := s.v1().SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: email})
		assert.Equal(t, codes.InvalidArgument, status.Code(err), "%q", email)
	}
	_, err := s.v1().SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "a@example.com", Locale: "fr"})
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "unknown locale")

	keys, err := s.redis.Client(t).Keys(context.Background(), "code_*").Result()
	require.NoError(t, err)
	assert.Empty(t, keys)
	assert.Zero(t, s.pending(t))
}

// Redis goes away and comes back: error 1 and Unavailable meanwhile, health
// NOT_SERVING, and everything works again without restarting the enqueuer.
func TestGRPCRedisOutage(t *testing.T) {
	t.Parallel()
	s := startApp(t)
	s.waitHealth(t, healthpb.HealthCheckResponse_SERVING)
	require.Equal(t, int32(0), s.legacy(t, "before@example.com").Error)

	s.redis.Stop()
	s.waitHealth(t, healthpb.HealthCheckResponse_NOT_SERVING)
	assert.Equal(t, grpctest.LegacyReply{Error: 1, Email: "during@example.com"}, s.legacy(t, "during@example.com"))
	_, err := s.v1().SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "during@example.com"})
	assert.Equal(t, codes.Unavailable, status.Code(err))
	_, err = s.v1().VerifyCode(context.Background(), &verifyqv1.VerifyCodeRequest{Email: "during@example.com", Code: "123456"})
	assert.Equal(t, codes.Unavailable, status.Code(err))

	require.NoError(t, s.redis.Restart())
	s.waitHealth(t, healthpb.HealthCheckResponse_SERVING)
	assert.Equal(t, grpctest.LegacyReply{Error: 0, Email: "after@example.com"}, s.legacy(t, "after@example.com"))
	res, err := s.v1().SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "after2@example.com"})
	require.NoError(t, err)
	assert.Equal(t, int64(600), res.GetExpiresIn())
}

// Verify over v1: a wrong code, the right one (consumed), the same again.
// The logs hold neither the code nor the address.
func TestGRPCVerifyCode(t *testing.T) {
	t.Parallel()
	s := startApp(t)
	const email = "Verify.Me@example.com"
	ctx := context.Background()

	res, err := s.v1().SendCode(ctx, &verifyqv1.SendCodeRequest{Email: email, Locale: "en"})
	require.NoError(t, err)
	assert.Greater(t, res.GetExpiresIn(), int64(590))
	assert.LessOrEqual(t, res.GetExpiresIn(), int64(600))
	assert.Zero(t, res.GetResendAfter())
	code, err := s.redis.Client(t).Get(ctx, "code_"+email).Result()
	require.NoError(t, err)

	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	_, err = s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: email, Code: wrong})
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "wrong code")
	_, err = s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: email, Code: ""})
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "empty code")

	ok, err := s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: email, Code: code})
	require.NoError(t, err, "right code")
	assert.True(t, ok.GetVerified())
	n, err := s.redis.Client(t).Exists(ctx, "code_"+email).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "consumed")

	_, err = s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: email, Code: code})
	assert.Equal(t, codes.NotFound, status.Code(err), "reused code")

	logs := s.logs.String()
	assert.Contains(t, logs, `"email":"V***@example.com"`)
	assert.Contains(t, logs, `"code":"FailedPrecondition"`)
	assert.NotContains(t, logs, code)
	assert.NotContains(t, logs, wrong)
	assert.NotContains(t, logs, email)
}

// Reflection lists every service, and every grpcurl example of the README
// names a method that reflection resolves, with a request that parses and a
// call that answers as the README says.
func TestGRPCReflectionAndREADMEExamples(t *testing.T) {
	t.Parallel()
	s := startApp(t)
	s.waitHealth(t, healthpb.HealthCheckResponse_SERVING)

	services := grpctest.Services(t, s.conn)
	for _, name := range []string{"message.VarifyService", "verifyq.v1.CodeService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		assert.Contains(t, services, name)
	}
	m := grpctest.Method(t, s.conn, "message.VarifyService/GetVarifyCode")
	assert.Equal(t, "/message.VarifyService/GetVarifyCode", "/"+string(m.Parent().FullName())+"/"+string(m.Name()))

	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	example := regexp.MustCompile(`(?m)^grpcurl -plaintext(?: -d '([^']*)')? localhost:50051 (\S+)$`)
	found := example.FindAllStringSubmatch(string(readme), -1)
	require.Len(t, found, 5, "the README's grpcurl examples")
	var methods []string
	for _, ex := range found {
		reqJSON, symbol := ex[1], ex[2]
		if symbol == "list" {
			continue
		}
		methods = append(methods, symbol)
		m := grpctest.Method(t, s.conn, symbol)
		out, err := grpctest.InvokeJSON(context.Background(), t, s.conn, m, reqJSON)
		if symbol == "verifyq.v1.CodeService/VerifyCode" {
			if err != nil { // nil only if 123456 was the live code
				assert.Equal(t, codes.FailedPrecondition, status.Code(err), "the README's made-up code")
			}
			continue
		}
		require.NoError(t, err, symbol)
		assert.True(t, json.Valid([]byte(out)))
		if symbol == "message.VarifyService/GetVarifyCode" {
			assert.JSONEq(t, `{"email": "user@example.com"}`, out, "as the README shows it")
		}
	}
	assert.ElementsMatch(t, []string{
		"message.VarifyService/GetVarifyCode",
		"verifyq.v1.CodeService/SendCode",
		"verifyq.v1.CodeService/VerifyCode",
		"grpc.health.v1.Health/Check",
	}, methods)
}
