package grpcapi

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/verifyq/verifyq/clientip"
	"github.com/verifyq/verifyq/internal/logtest"
	"github.com/verifyq/verifyq/internal/servicetest"
	messagepb "github.com/verifyq/verifyq/proto/message"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
	"github.com/verifyq/verifyq/service"
)

func TestRecoverUnaryPanicBecomesInternal(t *testing.T) {
	t.Parallel()
	logger, logs := logtest.New(t)
	req := &verifyqv1.VerifyCodeRequest{Email: "victim@example.com", Code: "424242"}
	info := &grpc.UnaryServerInfo{FullMethod: "/verifyq.v1.CodeService/VerifyCode"}

	resp, err := recoverUnary(logger)(context.Background(), req, info, func(context.Context, any) (any, error) {
		panic("nil map write")
	})
	assert.Nil(t, resp)
	assert.Equal(t, codes.Internal, status.Code(err))
	assert.Equal(t, "internal error", status.Convert(err).Message())

	lines := logs.Lines(t)
	require.Len(t, lines, 1)
	assert.Equal(t, "ERROR", lines[0]["level"])
	assert.Equal(t, "nil map write", lines[0]["panic"])
	assert.Equal(t, info.FullMethod, lines[0]["method"])
	assert.Contains(t, lines[0]["stack"], "TestRecoverUnaryPanicBecomesInternal", "the stack of the panic")
	assert.NotContains(t, logs.String(), "victim", "never the request")
	assert.NotContains(t, logs.String(), "424242", "never the request")
}

func TestRecoverStreamPanicBecomesInternal(t *testing.T) {
	t.Parallel()
	logger, logs := logtest.New(t)
	err := recoverStream(logger)(nil, fakeStream{ctx: context.Background()}, &grpc.StreamServerInfo{FullMethod: "/x.Y/Z"},
		func(any, grpc.ServerStream) error { panic("boom") })
	assert.Equal(t, codes.Internal, status.Code(err))
	assert.Contains(t, logs.String(), `"level":"ERROR"`)
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f fakeStream) Context() context.Context { return f.ctx }

func TestDefaultDeadline(t *testing.T) {
	t.Parallel()
	intercept := defaultDeadline(5 * time.Second)
	deadlineOf := func(ctx context.Context) time.Time {
		var got time.Time
		_, err := intercept(ctx, nil, &grpc.UnaryServerInfo{}, func(ctx context.Context, _ any) (any, error) {
			d, ok := ctx.Deadline()
			require.True(t, ok, "every call has a deadline")
			got = d
			return nil, nil
		})
		require.NoError(t, err)
		return got
	}

	assert.WithinDuration(t, time.Now().Add(5*time.Second), deadlineOf(context.Background()), time.Second,
		"no deadline from the client: the default")
	own, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want, _ := own.Deadline()
	assert.Equal(t, want, deadlineOf(own), "the client's deadline is kept")
}

func TestObserveLogsOneLineMaskedNeverCode(t *testing.T) {
	t.Parallel()
	logger, logs := logtest.New(t)
	obs := &servicetest.Observer{}
	intercept := observe(logger, obs)
	ok := func(resp any) grpc.UnaryHandler {
		return func(context.Context, any) (any, error) { return resp, nil }
	}

	_, _ = intercept(context.Background(), &verifyqv1.VerifyCodeRequest{Email: "Alice.Smith@example.com", Code: "987654"},
		&grpc.UnaryServerInfo{FullMethod: "/verifyq.v1.CodeService/VerifyCode"},
		func(ctx context.Context, _ any) (any, error) { return nil, fail(ctx, service.ErrMismatch) })
	_, _ = intercept(context.Background(), &messagepb.GetVarifyReq{Email: "bob@example.org"},
		&grpc.UnaryServerInfo{FullMethod: "/message.VarifyService/GetVarifyCode"},
		func(ctx context.Context, _ any) (any, error) {
			o := record(ctx, fmt.Errorf("%w: dial tcp: connection refused", service.ErrUnavailable))
			return &messagepb.GetVarifyRsp{Error: o.Legacy, Email: "bob@example.org"}, nil
		})
	_, _ = intercept(context.Background(), nil,
		&grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Check"}, ok(nil))
	_, _ = intercept(context.Background(), &verifyqv1.SendCodeRequest{Email: "c@example.com"},
		&grpc.UnaryServerInfo{FullMethod: "/verifyq.v1.CodeService/SendCode"},
		func(context.Context, any) (any, error) { return nil, status.Error(codes.Canceled, "gone") })

	lines := logs.Lines(t)
	require.Len(t, lines, 4)
	assert.Equal(t, "A***@example.com", lines[0]["email"])
	assert.Equal(t, "FailedPrecondition", lines[0]["code"])
	assert.Equal(t, "code_mismatch", lines[0]["outcome"])
	assert.Equal(t, "INFO", lines[0]["level"])
	assert.Equal(t, "b***@example.org", lines[1]["email"])
	assert.Equal(t, float64(1), lines[1]["legacy_error"])
	assert.Equal(t, "unavailable", lines[1]["outcome"])
	assert.Equal(t, "ERROR", lines[1]["level"], "a Redis failure on the old service")
	assert.Contains(t, lines[1]["err"], "connection refused", "what failed, in the same line")
	assert.Equal(t, "DEBUG", lines[2]["level"], "health checks are quiet")
	assert.Equal(t, "canceled", lines[3]["outcome"], "no outcome recorded: taken from the status")
	assert.Equal(t, "INFO", lines[3]["level"])
	assert.NotContains(t, logs.String(), "987654")
	assert.NotContains(t, logs.String(), "Alice.Smith")
	assert.NotContains(t, logs.String(), "bob@")
	assert.Equal(t, []string{"mismatch", "unavailable", "canceled"}, obs.Outcomes(), "health checks are not counted")
}

func TestClientOf(t *testing.T) {
	t.Parallel()
	trusted, err := clientip.ParseTrusted([]string{"127.0.0.1/32", "10.0.0.0/8"})
	require.NoError(t, err)
	gateway := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	stranger := &net.TCPAddr{IP: net.IPv4(198, 51, 100, 99), Port: 40000}
	tests := map[string]struct {
		trusted clientip.Trusted
		peer    net.Addr
		md      metadata.MD
		want    string
	}{
		"none":                         {trusted, gateway, nil, ""},
		"forwarded, rightmost":         {trusted, gateway, metadata.Pairs("x-forwarded-for", "203.0.113.7, 10.0.0.1", "x-forwarded-for", "198.51.100.1"), "198.51.100.1"},
		"forwarded, past a proxy":      {trusted, gateway, metadata.Pairs("x-forwarded-for", "203.0.113.7, 10.0.0.1"), "203.0.113.7"},
		"forwarded wins":               {trusted, gateway, metadata.Pairs("x-forwarded-for", "203.0.113.7", "x-client-ip", "198.51.100.1"), "203.0.113.7"},
		"client ip":                    {trusted, gateway, metadata.Pairs("x-client-ip", "2001:db8::1"), "2001:db8::1"},
		"with port":                    {trusted, gateway, metadata.Pairs("x-client-ip", "[2001:db8::1]:443"), "2001:db8::1"},
		"v4 with port":                 {trusted, gateway, metadata.Pairs("x-forwarded-for", "1.2.3.4:5555"), "1.2.3.4"},
		"mapped v4":                    {trusted, gateway, metadata.Pairs("x-client-ip", "::ffff:192.0.2.1"), "192.0.2.1"},
		"garbage counts the sender":    {trusted, gateway, metadata.Pairs("x-forwarded-for", "unknown", "x-client-ip", "192.0.2.9"), "127.0.0.1"},
		"untrusted peer is the client": {trusted, stranger, metadata.Pairs("x-forwarded-for", "203.0.113.7"), "198.51.100.99"},
		"nothing trusted":              {nil, gateway, metadata.Pairs("x-forwarded-for", "203.0.113.7"), "127.0.0.1"},
		"no IP peer":                   {trusted, &net.UnixAddr{Name: "/tmp/s", Net: "unix"}, metadata.Pairs("x-client-ip", "203.0.113.7"), ""},
	}
	for name, tt := range tests {
		s := &Server{cfg: Config{TrustedProxies: tt.trusted}}
		ctx := peer.NewContext(metadata.NewIncomingContext(context.Background(), tt.md), &peer.Peer{Addr: tt.peer})
		assert.Equal(t, tt.want, s.clientOf(ctx), name)
	}
}
