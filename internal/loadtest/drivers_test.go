package loadtest_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/verifyq/verifyq/internal/loadtest"
	messagepb "github.com/verifyq/verifyq/proto/message"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
)

// fakeServer answers by the address: "limited..." is refused, "down..."
// fails, anything else succeeds.
type fakeServer struct {
	messagepb.UnimplementedVarifyServiceServer
	verifyqv1.UnimplementedCodeServiceServer
}

func (fakeServer) GetVarifyCode(_ context.Context, r *messagepb.GetVarifyReq) (*messagepb.GetVarifyRsp, error) {
	switch {
	case strings.HasPrefix(r.GetEmail(), "limited"):
		return &messagepb.GetVarifyRsp{Error: 4, Email: r.GetEmail()}, nil
	case strings.HasPrefix(r.GetEmail(), "down"):
		return &messagepb.GetVarifyRsp{Error: 1, Email: r.GetEmail()}, nil
	}
	return &messagepb.GetVarifyRsp{Email: r.GetEmail()}, nil
}

func (fakeServer) SendCode(_ context.Context, r *verifyqv1.SendCodeRequest) (*verifyqv1.SendCodeResponse, error) {
	switch {
	case strings.HasPrefix(r.GetEmail(), "limited"):
		return nil, status.Error(codes.ResourceExhausted, "rate limited")
	case strings.HasPrefix(r.GetEmail(), "down"):
		return nil, status.Error(codes.Unavailable, "down")
	}
	return &verifyqv1.SendCodeResponse{ExpiresIn: 600}, nil
}

func TestGRPCDrivers(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	messagepb.RegisterVarifyServiceServer(srv, fakeServer{})
	verifyqv1.RegisterCodeServiceServer(srv, fakeServer{})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	for target, want := range map[string][3]string{
		loadtest.TargetGRPCLegacy: {loadtest.OK, "rate_limited", "redis_error"},
		loadtest.TargetGRPCV1:     {loadtest.OK, "grpc_ResourceExhausted", "grpc_Unavailable"},
	} {
		d, err := loadtest.NewDriver(target, ln.Addr().String(), 2)
		require.NoError(t, err)
		ctx := context.Background()
		assert.Equal(t, want[0], d.Send(ctx, "a@example.com"), target)
		assert.Equal(t, want[1], d.Send(ctx, "limited@example.com"), target)
		assert.Equal(t, want[2], d.Send(ctx, "down@example.com"), target)
		require.NoError(t, d.Close())
	}
}

func TestHTTPDriver(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assert.Equal(t, "/v1/codes", r.URL.Path)
		assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
		w.Header().Set("Content-Type", "application/json")
		var body [256]byte
		n, _ := r.Body.Read(body[:])
		if strings.Contains(string(body[:n]), "limited") {
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":{"code":"rate_limited","message":"slow down"}}`))
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"email":"a@example.com","expires_in":600}`))
	}))
	t.Cleanup(srv.Close)
	d, err := loadtest.NewDriver(loadtest.TargetHTTP, strings.TrimPrefix(srv.URL, "http://"), 4)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	assert.Equal(t, loadtest.OK, d.Send(context.Background(), "a@example.com"))
	assert.Equal(t, "http_429_rate_limited", d.Send(context.Background(), "limited@example.com"))

	_, err = loadtest.NewDriver("smtp", "127.0.0.1:1", 1)
	assert.Error(t, err)
}
