package grpcapi_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/verifyq/verifyq/clientip"
	"github.com/verifyq/verifyq/grpcapi"
	"github.com/verifyq/verifyq/internal/grpctest"
	"github.com/verifyq/verifyq/internal/servicetest"
	messagepb "github.com/verifyq/verifyq/proto/message"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
	"github.com/verifyq/verifyq/service"
)

// The lifecycle tests below start and stop servers; nothing may outlive them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// trust parses trusted proxies for a test.
func trust(t *testing.T, list ...string) clientip.Trusted {
	t.Helper()
	p, err := clientip.ParseTrusted(list)
	require.NoError(t, err)
	return p
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// serve runs srv on a loopback port and shuts it down when the test ends,
// checking that Serve returned nil.
func serve(t *testing.T, srv *grpcapi.Server) *grpc.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	conn := grpctest.Dial(t, ln.Addr().String())
	t.Cleanup(func() {
		_ = conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, srv.Shutdown(ctx))
		assert.NoError(t, <-served)
	})
	return conn
}

func healthOf(t *testing.T, conn *grpc.ClientConn, name string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	res, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: name})
	require.NoError(t, err)
	return res.GetStatus()
}

// Health follows readiness for the server and both services; Shutdown ends
// a health Watch and a reflection stream at once instead of waiting for the
// clients, and leaves no goroutine behind (TestMain).
func TestServerLifecycle(t *testing.T) {
	t.Parallel()
	var down atomic.Bool
	srv := grpcapi.New(servicetest.Fake{}, discard, grpcapi.Config{
		ReadyInterval: 20 * time.Millisecond,
		Ready: func(context.Context) error {
			if down.Load() {
				return errors.New("redis: connection refused")
			}
			return nil
		},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	conn := grpctest.Dial(t, ln.Addr().String())

	names := []string{"", "message.VarifyService", "verifyq.v1.CodeService"}
	waitHealth := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for _, name := range names {
			require.Eventually(t, func() bool { return healthOf(t, conn, name) == want }, 5*time.Second, 10*time.Millisecond, "%q %s", name, want)
		}
	}
	waitHealth(healthpb.HealthCheckResponse_SERVING)
	down.Store(true)
	waitHealth(healthpb.HealthCheckResponse_NOT_SERVING)
	down.Store(false)
	waitHealth(healthpb.HealthCheckResponse_SERVING)

	// Long-lived streams that a client keeps open.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	first, err := watch.Recv()
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, first.GetStatus())
	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	require.NoError(t, refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}))
	_, err = refl.Recv()
	require.NoError(t, err)

	start := time.Now()
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer stopCancel()
	require.NoError(t, srv.Shutdown(stopCtx))
	assert.Less(t, time.Since(start), 5*time.Second, "open streams do not hold the shutdown")
	require.NoError(t, <-served)

	last, err := watch.Recv()
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, last.GetStatus(), "watchers hear of the shutdown")
	_, err = watch.Recv()
	assert.Error(t, err, "the watch ends")
	_, err = refl.Recv()
	assert.Error(t, err, "the reflection stream ends")
	require.NoError(t, conn.Close())
	assert.ErrorIs(t, srv.Serve(ln), grpc.ErrServerStopped)
}

// A call still running when the shutdown deadline passes is cut off.
func TestShutdownCutsOffCallsAtDeadline(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{})
	srv := grpcapi.New(servicetest.Fake{Send: func(ctx context.Context, _ service.SendRequest) (service.Sent, error) {
		close(entered)
		<-ctx.Done()
		return service.Sent{}, ctx.Err()
	}}, discard, grpcapi.Config{CallTimeout: time.Minute})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	conn := grpctest.Dial(t, ln.Addr().String())

	called := make(chan error, 1)
	go func() {
		_, err := verifyqv1.NewCodeServiceClient(conn).SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "a@example.com"})
		called <- err
	}()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = srv.Shutdown(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, <-served)
	assert.Error(t, <-called)
}

func TestCallsThroughTheServer(t *testing.T) {
	t.Parallel()
	got := make(chan service.SendRequest, 10)
	srv := grpcapi.New(servicetest.Fake{
		Send: func(ctx context.Context, req service.SendRequest) (service.Sent, error) {
			got <- req
			if _, ok := ctx.Deadline(); !ok {
				return service.Sent{}, errors.New("no deadline")
			}
			switch req.Email {
			case "limited@example.com":
				return service.Sent{}, &service.RateLimitError{Limit: "cooldown", RetryAfter: 42 * time.Second}
			case "panic@example.com":
				panic("bug")
			}
			return service.Sent{ExpiresIn: 599900 * time.Millisecond, Created: true, ResendAfter: 59500 * time.Millisecond}, nil
		},
	}, discard, grpcapi.Config{TrustedProxies: trust(t, "127.0.0.1", "10.0.0.0/8")})
	conn := serve(t, srv)
	v1 := verifyqv1.NewCodeServiceClient(conn)
	legacy := messagepb.NewVarifyServiceClient(conn)

	// Client identity from the metadata reaches the service.
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-forwarded-for", "203.0.113.7, 10.0.0.2")
	res, err := v1.SendCode(ctx, &verifyqv1.SendCodeRequest{Email: "a@example.com", Locale: "en"})
	require.NoError(t, err)
	assert.Equal(t, int64(599), res.GetExpiresIn())
	assert.Equal(t, int64(60), res.GetResendAfter(), "rounded up")
	assert.Equal(t, service.SendRequest{Email: "a@example.com", Locale: "en", Client: "203.0.113.7"}, <-got)

	ctx = metadata.AppendToOutgoingContext(context.Background(), "x-client-ip", "198.51.100.4")
	rsp, err := legacy.GetVarifyCode(ctx, &messagepb.GetVarifyReq{Email: "a@example.com"})
	require.NoError(t, err)
	assert.True(t, proto.Equal(&messagepb.GetVarifyRsp{Error: 0, Email: "a@example.com"}, rsp), "%v", rsp)
	assert.Equal(t, service.SendRequest{Email: "a@example.com", Locale: "zh-CN", Client: "198.51.100.4", Coalesce: true}, <-got,
		"the old service mails zh-CN, its only language, and coalesces resends")

	// A limit: ResourceExhausted with RetryInfo on v1, error 4 in-band on the old service.
	_, err = v1.SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "limited@example.com"})
	st := status.Convert(err)
	require.Equal(t, codes.ResourceExhausted, st.Code())
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	require.NotNil(t, retry, "RetryInfo travels in the status")
	assert.Equal(t, 42*time.Second, retry.GetRetryDelay().AsDuration())
	rsp, err = legacy.GetVarifyCode(context.Background(), &messagepb.GetVarifyReq{Email: "limited@example.com"})
	require.NoError(t, err)
	assert.Equal(t, int32(4), rsp.GetError())

	// A panic is Internal and the server lives on.
	_, err = v1.SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "panic@example.com"})
	assert.Equal(t, codes.Internal, status.Code(err))
	_, err = v1.SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "a@example.com"})
	assert.NoError(t, err)

	// Requests are small.
	_, err = v1.SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: strings.Repeat("a", grpcapi.MaxRecvMsgSize) + "@example.com"})
	assert.Equal(t, codes.ResourceExhausted, status.Code(err))
}
