package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/platform"
)

// adminRequest sends method path to the admin server with the credentials
// ops/s3cret, the Host host (the admin's address when empty) and headers,
// and returns the status.
func adminRequest(t *testing.T, app *App, method, path, host string, headers map[string]string) int {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+app.AdminAddr()+path, strings.NewReader("x=1"))
	require.NoError(t, err)
	if host != "" {
		req.Host = host
	}
	req.SetBasicAuth("ops", "s3cret")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode
}

// A page on another site cannot change anything through the dashboard,
// not even with the browser's cached credentials: a cross-site form POST
// to pause the queue is 403 and the queue runs on. The dashboard's own
// pages can (same Origin, or Sec-Fetch-Site: same-origin).
func TestDashboardRefusesCrossSiteRequests(t *testing.T) {
	t.Parallel()
	s := startApp(t, func(c *Config) { c.DashboardAuth = platform.Credentials{User: "ops", Password: "s3cret"} })
	sendCode(t, s.app, "csrf@example.com") // the queue exists
	insp := asynq.NewInspectorFromRedisClient(s.redis.Client(t))
	paused := func() bool {
		t.Helper()
		info, err := insp.GetQueueInfo("mail")
		require.NoError(t, err)
		return info.Paused
	}
	const pause, resume = "/monitoring/api/queues/mail:pause", "/monitoring/api/queues/mail:resume"
	form := "application/x-www-form-urlencoded"
	self := "http://" + s.app.AdminAddr()

	for name, h := range map[string]map[string]string{
		"cross-site form":             {"Content-Type": form, "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
		"cross-site, older browser":   {"Content-Type": form, "Origin": "http://evil.example"},
		"same site, another origin":   {"Origin": "http://other.example", "Sec-Fetch-Site": "same-site"},
		"own Origin but cross-site":   {"Origin": self, "Sec-Fetch-Site": "cross-site"},
		"opaque origin":               {"Content-Type": form, "Origin": "null"},
		"another port":                {"Origin": "http://127.0.0.1:1"},
		"neither header":              {"Content-Type": form},
		"Origin with a path":          {"Origin": self + "/monitoring/"},
		"user-initiated, not a fetch": {"Sec-Fetch-Site": "none"},
	} {
		assert.Equal(t, http.StatusForbidden, adminRequest(t, s.app, http.MethodPost, pause, "", h), name)
		assert.False(t, paused(), "%s: the queue is not paused", name)
	}
	assert.Equal(t, http.StatusForbidden, adminRequest(t, s.app, http.MethodDelete,
		"/monitoring/api/queues/mail/pending_tasks:delete_all", "", map[string]string{"Origin": "http://evil.example"}))
	n, err := insp.GetQueueInfo("mail")
	require.NoError(t, err)
	assert.Equal(t, 1, n.Pending, "nothing deleted")

	// Reading stays open to the credentials: a cross-site page cannot read
	// the reply anyway.
	assert.Equal(t, http.StatusOK, adminRequest(t, s.app, http.MethodGet, "/monitoring/api/queues", "",
		map[string]string{"Sec-Fetch-Site": "cross-site"}))

	// The dashboard's own page.
	assert.Equal(t, http.StatusNoContent, adminRequest(t, s.app, http.MethodPost, pause, "",
		map[string]string{"Origin": self, "Sec-Fetch-Site": "same-origin"}))
	assert.True(t, paused())
	assert.Equal(t, http.StatusNoContent, adminRequest(t, s.app, http.MethodPost, resume, "", map[string]string{"Origin": self}))
	assert.False(t, paused())
	assert.Equal(t, http.StatusNoContent, adminRequest(t, s.app, http.MethodPost, pause, "",
		map[string]string{"Sec-Fetch-Site": "same-origin"}))
	assert.True(t, paused())
}

// A request for the dashboard or pprof under a name that is not the
// admin's (a DNS-rebinding page sends its own name, and its Origin matches
// that Host) is 421; probes and scrapers answer to any Host.
func TestAdminRefusesUnknownHosts(t *testing.T) {
	t.Parallel()
	s := startApp(t, func(c *Config) {
		c.DashboardAuth = platform.Credentials{User: "ops", Password: "s3cret"}
		c.DashboardHosts = platform.HostNames{"ops.example.com"}
	})
	sendCode(t, s.app, "rebind@example.com")
	insp := asynq.NewInspectorFromRedisClient(s.redis.Client(t))
	_, port, _ := strings.Cut(s.app.AdminAddr(), ":")

	rebound := "evil.example:" + port
	assert.Equal(t, http.StatusMisdirectedRequest, adminRequest(t, s.app, http.MethodPost, "/monitoring/api/queues/mail:pause",
		rebound, map[string]string{"Origin": "http://" + rebound, "Sec-Fetch-Site": "same-origin"}))
	info, err := insp.GetQueueInfo("mail")
	require.NoError(t, err)
	assert.False(t, info.Paused)
	for _, path := range []string{"/monitoring/", "/monitoring/api/queues", "/debug/pprof/", "/suppressions"} {
		assert.Equal(t, http.StatusMisdirectedRequest, adminRequest(t, s.app, http.MethodGet, path, rebound, nil), path)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		assert.Equal(t, http.StatusOK, adminRequest(t, s.app, http.MethodGet, path, rebound, nil), path)
	}

	for _, host := range []string{
		"127.0.0.1:" + port, "localhost:" + port, "LocalHost.:" + port, "[::1]:" + port, "10.0.0.7:" + port,
		"ops.example.com:" + port, "OPS.example.com", "ops.example.com:443",
	} {
		assert.Equal(t, http.StatusOK, adminRequest(t, s.app, http.MethodGet, "/monitoring/api/queues", host, nil), host)
	}
	for _, host := range []string{"sub.ops.example.com:" + port, "localhost.evil.example:" + port, "127.0.0.1.nip.io:" + port} {
		assert.Equal(t, http.StatusMisdirectedRequest, adminRequest(t, s.app, http.MethodGet, "/monitoring/api/queues", host, nil), host)
	}
}
