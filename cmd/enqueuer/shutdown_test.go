package main

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
)

// refuses reports whether a new connection to addr is refused: its
// listener is closed.
func refuses(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	_ = c.Close()
	return false
}

// On SIGTERM every listener stops taking connections at once, so that the
// requests in flight on each have the whole SHUTDOWN_TIMEOUT: a gRPC call
// that holds the gRPC server's drain (its client opened it and never sent
// the request) does not keep HTTP_ADDR and ADMIN_ADDR taking new requests
// meanwhile, to be cut off at the end.
func TestCloseStopsEveryListenerAtOnce(t *testing.T) {
	t.Parallel()
	s := openApp(t)
	httpAddr, adminAddr := s.app.HTTPAddr(), s.app.AdminAddr()

	ctx := t.Context()
	stalled, err := s.conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true},
		verifyqv1.CodeService_SendCode_FullMethodName)
	require.NoError(t, err)
	t.Cleanup(func() { _ = stalled.CloseSend() })
	// A call after it on the same connection: once it is answered, the
	// server holds the stalled stream too.
	_, err = healthpb.NewHealthClient(s.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)

	const timeout = 3 * time.Second
	closed := make(chan error, 1)
	start := time.Now()
	go func() {
		cctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		closed <- s.app.Close(cctx)
	}()

	assert.Eventually(t, func() bool { return refuses(httpAddr) && refuses(adminAddr) }, timeout/2, 20*time.Millisecond,
		"HTTP_ADDR and ADMIN_ADDR closed while the gRPC server drains")
	select {
	case err := <-closed:
		t.Fatalf("Close returned before the stalled call's drain ended: %v", err)
	default:
	}
	err = <-closed
	assert.ErrorIs(t, err, context.DeadlineExceeded, "the stalled call cut off at the deadline")
	assert.Less(t, time.Since(start), 2*timeout, "about SHUTDOWN_TIMEOUT")
	_, err = http.Get("http://" + httpAddr + "/v1/codes/status")
	assert.Error(t, err)
}
