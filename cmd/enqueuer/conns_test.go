package main

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/verifyq/verifyq/internal/grpctest"
	"github.com/verifyq/verifyq/internal/metrics/metricstest"
)

// dialerFrom dials from the loopback address from: Linux routes all of
// 127/8 to the loopback interface, so each address is a source of its own.
func dialerFrom(from string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
}

// httpFrom is a client whose every request takes a new connection from
// the loopback address from.
func httpFrom(from string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:       dialerFrom(from).DialContext,
		DisableKeepAlives: true,
	}}
}

// grpcFrom is a gRPC channel from the loopback address from, closed when
// the test ends.
func grpcFrom(t *testing.T, from, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dialerFrom(from).DialContext(ctx, "tcp", addr)
		}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// holdHTTP opens a keep-alive connection from 127.0.0.1 that has made one
// request and stays open, as the measured attack's did.
func holdHTTP(t *testing.T, addr string) {
	t.Helper()
	c, err := dialerFrom("127.0.0.1").Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	_, err = c.Write([]byte("GET /held HTTP/1.1\r\nHost: verifyq\r\n\r\n"))
	require.NoError(t, err)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err, "served: within the source's share")
	_ = res.Body.Close()
	require.Equal(t, http.StatusNotFound, res.StatusCode)
}

// While one source holds its share of a public listener, its next
// connection is closed at once and another source is still served, on
// both listeners; each refusal is counted and logged.
func TestOneSourceCannotHoldTheListeners(t *testing.T) {
	t.Parallel()
	const perSource = 3
	s := startApp(t, func(c *Config) {
		n := perSource
		c.MaxConnectionsPerSource = &n
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("http", func(t *testing.T) {
		for range perSource {
			holdHTTP(t, s.app.HTTPAddr())
		}
		_, err := httpFrom("127.0.0.1").Get("http://" + s.app.HTTPAddr() + "/v1/codes/status?email=a@example.com")
		require.Error(t, err, "one more from the source: closed")
		t.Logf("the source's next connection: %v", err)

		res, err := httpFrom("127.0.0.2").Post("http://"+s.app.HTTPAddr()+"/v1/codes", "application/json",
			strings.NewReader(`{"email":"other@example.com"}`))
		require.NoError(t, err, "another source is served")
		_ = res.Body.Close()
		assert.Equal(t, http.StatusAccepted, res.StatusCode)
	})

	t.Run("grpc", func(t *testing.T) {
		for range perSource {
			res, err := healthpb.NewHealthClient(grpcFrom(t, "127.0.0.1", s.app.GRPCAddr())).Check(ctx, &healthpb.HealthCheckRequest{})
			require.NoError(t, err, "served: within the source's share")
			require.Equal(t, healthpb.HealthCheckResponse_SERVING, res.GetStatus())
		}
		_, err := healthpb.NewHealthClient(grpcFrom(t, "127.0.0.1", s.app.GRPCAddr())).Check(ctx, &healthpb.HealthCheckRequest{})
		assert.Equal(t, codes.Unavailable, status.Code(err), "one more from the source: closed (%v)", err)
		require.NoError(t, ctx.Err(), "failed at once, not at the test's deadline")

		rsp, err := grpctest.GetVarifyCode(ctx, t, grpcFrom(t, "127.0.0.2", s.app.GRPCAddr()), "legacy@example.com")
		require.NoError(t, err, "another source is served")
		assert.Equal(t, grpctest.LegacyReply{Error: 0, Email: "legacy@example.com"}, rsp)
	})

	fams := metricstest.Scrape(t, "http://"+s.app.AdminAddr()+"/metrics")
	for _, listener := range []string{"http", "grpc"} {
		v, found := fams.Value("verifyq_connections_refused_total", map[string]string{"listener": listener})
		assert.True(t, found, listener)
		assert.GreaterOrEqual(t, v, 1.0, "%s: counted (a client may try again at once)", listener)
	}
	logs := s.logs.String()
	assert.Contains(t, logs, `"msg":"connection closed: its source holds its share of the listener","listener":"http","source":"127.0.0.1/32"`)
	assert.Contains(t, logs, `"listener":"grpc","source":"127.0.0.1/32"`)
}
