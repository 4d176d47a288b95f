package platform_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/httpapi"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/servicetest"
	"github.com/verifyq/verifyq/service"
)

// A server's write timeout follows the deadline its handler answers
// within, and the admin server's lets a 30 s CPU profile finish.
func TestHTTPServerWriteTimeout(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.DiscardHandler)
	for _, d := range []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, time.Minute} {
		srv := platform.NewHTTPServer(http.NotFoundHandler(), logger, d)
		assert.Equal(t, d+platform.WriteMargin, srv.WriteTimeout, d)
	}
	assert.Equal(t, 15*time.Second, platform.NewHTTPServer(http.NotFoundHandler(), logger, 5*time.Second).WriteTimeout,
		"REQUEST_TIMEOUT's default keeps the write timeout it always had")
	assert.Equal(t, platform.AdminWriteTimeout, platform.NewAdminServer(http.NotFoundHandler(), logger).WriteTimeout)
	assert.Greater(t, platform.AdminWriteTimeout, 30*time.Second)
}

// A request that uses more than 15 s of a longer REQUEST_TIMEOUT still
// gets its reply: the service is a fake that answers only when the
// request's deadline ends, and the 504 it ends with reaches the client
// instead of a dropped connection. (The test takes REQUEST_TIMEOUT, 16 s.)
func TestHTTPServerAnswersALongRequest(t *testing.T) {
	t.Parallel()
	const requestTimeout = 16 * time.Second
	slow := servicetest.Fake{Send: func(ctx context.Context, _ service.SendRequest) (service.Sent, error) {
		<-ctx.Done()
		return service.Sent{}, ctx.Err()
	}}
	logger := slog.New(slog.DiscardHandler)
	srv := platform.NewHTTPServer(httpapi.NewHandler(slow, logger, httpapi.Config{RequestTimeout: requestTimeout}), logger, requestTimeout)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	client := &http.Client{Timeout: requestTimeout + time.Minute}
	res, err := client.Post("http://"+ln.Addr().String()+"/v1/codes", "application/json",
		strings.NewReader(`{"email":"slow@example.com"}`))
	require.NoError(t, err, "a reply, not a dropped connection")
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	assert.Equal(t, http.StatusGatewayTimeout, res.StatusCode)
	assert.Contains(t, string(body), `"deadline_exceeded"`)
}
