package platform_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/redistest"
)

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	tests := map[string]bool{
		"127.0.0.1:8081": true,
		"127.1.2.3:8081": true,
		"[::1]:8081":     true,
		"localhost:8081": true,
		"LOCALHOST:8081": true,
		":8081":          false,
		"0.0.0.0:8081":   false,
		"[::]:8081":      false,
		"10.0.0.5:8081":  false,
		"admin:8081":     false,
		"127.0.0.1":      false, // no port: not an address
	}
	for addr, want := range tests {
		assert.Equal(t, want, platform.IsLoopback(addr), addr)
	}
}

func TestBasicAuth(t *testing.T) {
	t.Parallel()
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "in") })
	srv := httptest.NewServer(platform.BasicAuth("ops", "s3cret", "verifyq admin", ok))
	t.Cleanup(srv.Close)

	tests := []struct {
		name       string
		user, pass string
		set        bool
		want       int
	}{
		{"none", "", "", false, http.StatusUnauthorized},
		{"wrong password", "ops", "s3cre", true, http.StatusUnauthorized},
		{"wrong user", "op", "s3cret", true, http.StatusUnauthorized},
		{"empty", "", "", true, http.StatusUnauthorized},
		{"right", "ops", "s3cret", true, http.StatusOK},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
		require.NoError(t, err)
		if tt.set {
			req.SetBasicAuth(tt.user, tt.pass)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, tt.want, res.StatusCode, tt.name)
		if tt.want == http.StatusUnauthorized {
			assert.Equal(t, `Basic realm="verifyq admin", charset="UTF-8"`, res.Header.Get("WWW-Authenticate"))
		}
	}
}

func TestMountPprof(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	platform.MountPprof(mux, func(h http.Handler) http.Handler { return platform.BasicAuth("u", "p", "r", h) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
		res, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, res.StatusCode, path)

		req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		require.NoError(t, err)
		req.SetBasicAuth("u", "p")
		res, err = http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusOK, res.StatusCode, path)
	}
}

// /readyz follows Redis: 503 while it is away, 200 once it is back.
func TestReadyzFollowsRedis(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	srv := httptest.NewServer(platform.AdminMux(rs.Client(t)))
	t.Cleanup(srv.Close)
	status := func(path string) int {
		t.Helper()
		res, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		res.Body.Close()
		return res.StatusCode
	}
	assert.Equal(t, http.StatusOK, status("/readyz"))
	rs.Stop()
	assert.Equal(t, http.StatusServiceUnavailable, status("/readyz"))
	assert.Equal(t, http.StatusOK, status("/healthz"), "alive all the same")
	require.NoError(t, rs.Restart())
	assert.Eventually(t, func() bool { return status("/readyz") == http.StatusOK }, 5*time.Second, 50*time.Millisecond)
}

// The check goes to the admin server directly, whatever proxy the
// environment names.
func TestHealthCheckTakesNoProxy(t *testing.T) {
	t.Parallel()
	tr, ok := platform.HealthTransport.(*http.Transport)
	require.True(t, ok, "%T", platform.HealthTransport)
	assert.Nil(t, tr.Proxy)
}

func TestHealthCheck(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	srv := httptest.NewServer(platform.AdminMux(rs.Client(t)))
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	ctx := context.Background()

	assert.NoError(t, platform.HealthCheck(ctx, addr))
	assert.NoError(t, platform.HealthCheck(ctx, ":"+port), "every interface is asked on loopback")
	assert.NoError(t, platform.HealthCheck(ctx, "0.0.0.0:"+port))
	rs.Stop()
	err = platform.HealthCheck(ctx, addr)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "503")
	srv.Close()
	assert.Error(t, platform.HealthCheck(ctx, addr), "nothing listening")
	assert.Error(t, platform.HealthCheck(ctx, "no-port"))
}
