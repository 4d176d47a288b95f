package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/verifyq/verifyq/internal/grpctest"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
)

// The old gateway's call on GRPC_ADDR, with messages built from the old
// .proto file at run time: error 0, the address echoed, no code in the
// reply; the code under code_<email> and in the mail the worker delivers.
// The mailed code then verifies over verifyq.v1.
func TestGRPCOldGatewayEndToEnd(t *testing.T) {
	t.Parallel()
	s := startStack(t, nil)
	conn := grpctest.Dial(t, s.grpc)
	ctx := context.Background()
	const email = "Gate.Way@Example.com"

	health, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "message.VarifyService"})
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, health.GetStatus())

	rsp, err := grpctest.GetVarifyCode(ctx, t, conn, email)
	require.NoError(t, err, "an OK status")
	assert.Equal(t, grpctest.LegacyReply{Error: 0, Email: email, Code: ""}, rsp)

	msgs := s.smtp.WaitMessages(t, 1, 10*time.Second)
	code, ttl := s.code(t, email)
	assert.LessOrEqual(t, ttl, 10*time.Minute)
	assert.Greater(t, ttl, 9*time.Minute)
	assert.Equal(t, []string{email}, msgs[0].To)
	assert.Equal(t, "验证码", msgs[0].Subject, "the old service has no locale: the default")
	assert.Contains(t, msgs[0].Text, code)

	res, err := verifyqv1.NewCodeServiceClient(conn).VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: email, Code: code})
	require.NoError(t, err)
	assert.True(t, res.GetVerified())

	s.worker.stop(t)
	s.enqueuer.stop(t)
	logs := s.enqueuer.logs.String()
	assert.Contains(t, logs, `"method":"/message.VarifyService/GetVarifyCode"`)
	assert.Contains(t, logs, `"email":"G***@Example.com"`)
	for _, p := range []*proc{s.enqueuer, s.worker} {
		logs := p.logs.String()
		assert.NotContains(t, logs, code, "no code in any log line")
		assert.NotContains(t, logs, email, "no full address in any log line")
		for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
			assert.True(t, json.Valid([]byte(line)), "JSON log line: %s", line)
		}
	}
}

// Redis goes away under a running enqueuer: the old service answers error 1
// in-band, health turns NOT_SERVING, and all is well again once Redis is
// back, without a restart. The enqueuer's log stays JSON lines throughout.
func TestGRPCRedisOutage(t *testing.T) {
	t.Parallel()
	singleOnly(t)
	s := startStack(t, nil)
	conn := grpctest.Dial(t, s.grpc)
	ctx := context.Background()
	healthIs := func(want healthpb.HealthCheckResponse_ServingStatus) func() bool {
		return func() bool {
			res, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			return err == nil && res.GetStatus() == want
		}
	}

	s.server(t).Stop()
	require.Eventually(t, healthIs(healthpb.HealthCheckResponse_NOT_SERVING), 10*time.Second, 50*time.Millisecond)
	rsp, err := grpctest.GetVarifyCode(ctx, t, conn, "down@example.com")
	require.NoError(t, err, "an OK status even now")
	assert.Equal(t, int32(1), rsp.Error)

	require.NoError(t, s.server(t).Restart())
	require.Eventually(t, healthIs(healthpb.HealthCheckResponse_SERVING), 10*time.Second, 50*time.Millisecond)
	rsp, err = grpctest.GetVarifyCode(ctx, t, conn, "up@example.com")
	require.NoError(t, err)
	assert.Equal(t, int32(0), rsp.Error)
	s.smtp.WaitMessages(t, 1, 15*time.Second)

	s.enqueuer.stop(t)
	logs := s.enqueuer.logs.String()
	assert.Contains(t, logs, "grpc health: not serving")
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		assert.True(t, json.Valid([]byte(line)), "JSON log line: %s", line)
	}
}
