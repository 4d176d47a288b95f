package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/metrics/metricstest"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/redistest"
)

func startApp(t *testing.T, tweak func(*Config)) *App {
	t.Helper()
	cfg := Config{
		Common: platform.Common{
			RedisMode: "single",
			RedisURL:  redistest.Start(t).URL(), LogLevel: "info", CodeKeyPrefix: "code_",
			CodeTTL: 10 * time.Minute, ShutdownTimeout: 5 * time.Second, DashboardUser: "admin", QueueShards: 1,
		},
		AdminAddr: "127.0.0.1:0", Concurrency: 2, SMTPHost: "127.0.0.1", SMTPPort: 1, SMTPTLS: "none",
		SMTPTimeout: time.Second, MailFrom: "no-reply@verifyq.test",
	}
	if tweak != nil {
		tweak(&cfg)
	}
	require.NoError(t, cfg.Validate())
	app, err := NewApp(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	require.NoError(t, app.Open(context.Background()))
	t.Cleanup(func() { assert.NoError(t, app.Close()) })
	return app
}

func status(t *testing.T, url string, auth ...string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if len(auth) == 2 {
		req.SetBasicAuth(auth[0], auth[1])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	return res.StatusCode
}

func TestAdminEndpoints(t *testing.T) {
	t.Parallel()
	t.Run("loopback", func(t *testing.T) {
		t.Parallel()
		admin := "http://" + startApp(t, nil).AdminAddr()
		for _, path := range []string{"/healthz", "/readyz", "/metrics", "/debug/pprof/"} {
			assert.Equal(t, http.StatusOK, status(t, admin+path), path)
		}
		f := metricstest.Scrape(t, admin+"/metrics")
		for _, name := range []string{"verifyq_sends_in_flight", "verifyq_sends_total"} {
			_, ok := f.Value(name, nil)
			assert.True(t, ok, name)
		}
	})
	t.Run("every interface without a password: no pprof", func(t *testing.T) {
		t.Parallel()
		app := startApp(t, func(c *Config) { c.AdminAddr = "0.0.0.0:0" })
		_, port, err := net.SplitHostPort(app.AdminAddr())
		require.NoError(t, err)
		admin := "http://127.0.0.1:" + port
		assert.Equal(t, http.StatusOK, status(t, admin+"/metrics"))
		assert.Equal(t, http.StatusNotFound, status(t, admin+"/debug/pprof/"))
	})
	t.Run("with a password", func(t *testing.T) {
		t.Parallel()
		admin := "http://" + startApp(t, func(c *Config) { c.DashboardPassword = "s3cret" }).AdminAddr()
		assert.Equal(t, http.StatusUnauthorized, status(t, admin+"/debug/pprof/"))
		assert.Equal(t, http.StatusOK, status(t, admin+"/debug/pprof/", "admin", "s3cret"))
		assert.Equal(t, http.StatusOK, status(t, admin+"/metrics"))
	})
	t.Run("pprof only to its own host names", func(t *testing.T) {
		t.Parallel()
		app := startApp(t, func(c *Config) { c.DashboardHosts = []string{"ops.example"} })
		for host, want := range map[string]int{
			"evil.example": http.StatusMisdirectedRequest, "ops.example": http.StatusOK,
			"localhost": http.StatusOK, "127.0.0.1": http.StatusOK,
		} {
			req, err := http.NewRequest(http.MethodGet, "http://"+app.AdminAddr()+"/debug/pprof/", nil)
			require.NoError(t, err)
			req.Host = host
			res, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			res.Body.Close()
			assert.Equal(t, want, res.StatusCode, host)
		}
	})
}
