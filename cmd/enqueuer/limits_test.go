package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/verifyq/verifyq/internal/metrics/metricstest"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
)

// limitDetails returns the RetryInfo delay and the ErrorInfo limit of a v1
// ResourceExhausted status.
func limitDetails(t *testing.T, err error) (time.Duration, string) {
	t.Helper()
	st := status.Convert(err)
	require.Equal(t, codes.ResourceExhausted, st.Code(), "%v", err)
	var delay time.Duration
	var limit string
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.RetryInfo:
			delay = d.GetRetryDelay().AsDuration()
		case *errdetails.ErrorInfo:
			limit = d.GetMetadata()["limit"]
		}
	}
	return delay, limit
}

// The resend cooldown over both services: the old one answers in band with
// error 4, v1 with ResourceExhausted and RetryInfo.
func TestGRPCResendCooldown(t *testing.T) {
	t.Parallel()
	s := startApp(t, func(c *Config) { c.ResendCooldown = time.Minute })

	res, err := s.v1().SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "cool@example.com"})
	require.NoError(t, err)
	assert.Equal(t, int64(60), res.GetResendAfter())

	assert.Equal(t, int32(4), s.legacy(t, "cool@example.com").Error, "rate limited, in band")
	assert.Equal(t, int32(4), s.legacy(t, "Cool@Example.com").Error, "case variants share the cooldown")
	_, err = s.v1().SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "cool@example.com"})
	delay, limit := limitDetails(t, err)
	assert.Equal(t, "cooldown", limit)
	assert.Greater(t, delay, 50*time.Second)
	assert.LessOrEqual(t, delay, time.Minute)
	assert.Equal(t, 1, s.pending(t), "refused sends enqueue nothing")
}

// The per-client cap counts the end user named in the metadata; without one
// the gateway is never limited.
func TestGRPCClientCap(t *testing.T) {
	t.Parallel()
	s := startApp(t, func(c *Config) { c.ClientSendsPerHour = 1 })
	user := metadata.AppendToOutgoingContext(context.Background(), "x-forwarded-for", "203.0.113.9")

	_, err := s.v1().SendCode(user, &verifyqv1.SendCodeRequest{Email: "one@example.com"})
	require.NoError(t, err)
	_, err = s.v1().SendCode(user, &verifyqv1.SendCodeRequest{Email: "two@example.com"})
	_, limit := limitDetails(t, err)
	assert.Equal(t, "client", limit)
	for _, email := range []string{"three@example.com", "four@example.com"} {
		assert.Equal(t, int32(0), s.legacy(t, email).Error, "no client identity, no per-client limit")
	}
}

// Wrong codes up to VERIFY_MAX_ATTEMPTS invalidate the code over v1 too.
func TestGRPCAttemptLimit(t *testing.T) {
	t.Parallel()
	s := startApp(t, func(c *Config) { c.VerifyMaxAttempts = 2 })
	ctx := context.Background()
	_, err := s.v1().SendCode(ctx, &verifyqv1.SendCodeRequest{Email: "g@example.com"})
	require.NoError(t, err)
	code, err := s.redis.Client(t).Get(ctx, "code_g@example.com").Result()
	require.NoError(t, err)
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	_, err = s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: "g@example.com", Code: wrong})
	assert.Equal(t, codes.FailedPrecondition, status.Code(err))
	_, err = s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: "g@example.com", Code: wrong})
	assert.Equal(t, codes.FailedPrecondition, status.Code(err))
	_, err = s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: "g@example.com", Code: code})
	assert.Equal(t, codes.NotFound, status.Code(err), "the right code no longer verifies")
}

// gRPC calls are counted like HTTP requests, with api="grpc"; the legacy
// service's outcome follows its in-band error number.
func TestGRPCCallsAreMeasured(t *testing.T) {
	t.Parallel()
	s := startApp(t, func(c *Config) { c.ResendCooldown = time.Minute })
	require.Equal(t, int32(0), s.legacy(t, "m@example.com").Error)
	require.Equal(t, int32(4), s.legacy(t, "m@example.com").Error)
	_, err := s.v1().SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "bad"})
	require.Error(t, err)

	fams := metricstest.Scrape(t, "http://"+s.app.AdminAddr()+"/metrics")
	for _, tt := range []struct {
		route, outcome string
	}{
		{"/message.VarifyService/GetVarifyCode", "ok"},
		{"/message.VarifyService/GetVarifyCode", "rate_limited"},
		{"/verifyq.v1.CodeService/SendCode", "invalid"},
	} {
		v, ok := fams.Value("verifyq_requests_total", map[string]string{"api": "grpc", "route": tt.route, "outcome": tt.outcome})
		assert.True(t, ok, "%+v", tt)
		assert.Equal(t, 1.0, v, "%+v", tt)
	}
	v, _ := fams.Value("verifyq_rate_limited_total", map[string]string{"limit": "cooldown"})
	assert.Equal(t, 1.0, v)
}
