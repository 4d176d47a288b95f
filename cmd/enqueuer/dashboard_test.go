package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/mail"
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

// With DASHBOARD_READONLY nothing on the admin server changes state: every
// write of the dashboard (pause, delete, archive, run, one task or all) is
// refused by asynqmon's read-only mode, a lift of a suppression by
// /suppressions, and the queue, its task and the suppression are as
// before. Each refused attempt is still an audit record.
func TestReadOnlyAdminChangesNothing(t *testing.T) {
	t.Parallel()
	s := startApp(t, func(c *Config) {
		c.DashboardAuth = platform.Credentials{User: "ops", Password: "s3cret"} // adminRequest's
		c.DashboardReadOnly = true
	})
	sendCode(t, s.app, "ro-sweep@example.com")
	ctx := context.Background()
	rdb := s.redis.Client(t)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	pending, err := insp.ListPendingTasks("mail")
	require.NoError(t, err)
	require.Len(t, pending, 1)
	task := pending[0].ID
	sup := delivery.NewSuppressions(rdb, mail.Identity{})
	require.NoError(t, sup.Add(ctx, delivery.Entry{Email: "kept@example.com", Reason: delivery.ReasonRecipientRefused,
		Reply: 550, Added: time.Now(), For: time.Hour}))

	self := map[string]string{"Origin": "http://" + s.app.AdminAddr(), "Sec-Fetch-Site": "same-origin"}
	const q = "/monitoring/api/queues/mail"
	writes := []struct{ method, path string }{
		{http.MethodPost, q + ":pause"},
		{http.MethodDelete, q},
		{http.MethodDelete, q + "/pending_tasks:delete_all"},
		{http.MethodPost, q + "/pending_tasks:archive_all"},
		{http.MethodPost, q + "/pending_tasks:batch_delete"},
		{http.MethodPost, q + "/pending_tasks/" + task + ":archive"},
		{http.MethodDelete, q + "/pending_tasks/" + task},
		{http.MethodPost, q + "/archived_tasks:run_all"},
		{http.MethodPost, q + "/retry_tasks:run_all"},
		{http.MethodPost, q + "/scheduled_tasks:archive_all"},
		{http.MethodPost, q + "/active_tasks:cancel_all"},
		{http.MethodDelete, "/suppressions?email=kept@example.com"},
		{http.MethodDelete, "/suppressions?added_after=2000-01-01T00:00:00Z&added_before=2100-01-01T00:00:00Z"},
	}
	for _, w := range writes {
		status := adminRequest(t, s.app, w.method, w.path, "", self)
		assert.Contains(t, []int{http.StatusForbidden, http.StatusMethodNotAllowed}, status, "%s %s", w.method, w.path)
	}

	info, err := insp.GetQueueInfo("mail")
	require.NoError(t, err)
	assert.False(t, info.Paused)
	assert.Equal(t, 1, info.Pending)
	assert.Zero(t, info.Archived)
	list, _, err := sup.List(ctx, delivery.Filter{}, 10)
	require.NoError(t, err)
	assert.Len(t, list, 1, "the suppression is still there")

	records := s.logs.Matching(t, platform.AuditMessage)
	require.Len(t, records, len(writes), "every attempt is an audit record")
	for i, r := range records {
		assert.Equal(t, "ops", r["user"])
		assert.Equal(t, writes[i].method, r["method"])
		assert.Contains(t, []any{403.0, 405.0}, r["status"])
	}
}

// Admin actions leave an audit record with who did them: the dashboard's
// pause and a lifted suppression, each with DASHBOARD_AUTH's user, the
// method, the path, the source and the status; the address masked and no
// password. Looking leaves none.
func TestAdminActionsAudited(t *testing.T) {
	t.Parallel()
	s := startApp(t, func(c *Config) { c.DashboardAuth = platform.Credentials{User: "ops", Password: "s3cret"} })
	sendCode(t, s.app, "audit@example.com")
	sup := delivery.NewSuppressions(s.redis.Client(t), mail.Identity{})
	require.NoError(t, sup.Add(context.Background(), delivery.Entry{Email: "lifted@example.com", Reason: delivery.ReasonRecipientRefused,
		Reply: 550, Added: time.Now(), For: time.Hour}))

	assert.Equal(t, http.StatusOK, adminRequest(t, s.app, http.MethodGet, "/monitoring/api/queues", "", nil))
	assert.Equal(t, http.StatusOK, adminRequest(t, s.app, http.MethodGet, "/suppressions", "", nil))
	assert.Empty(t, s.logs.Matching(t, platform.AuditMessage), "looking is no action")

	assert.Equal(t, http.StatusNoContent, adminRequest(t, s.app, http.MethodPost, "/monitoring/api/queues/mail:pause", "",
		map[string]string{"Sec-Fetch-Site": "same-origin"}))
	assert.Equal(t, http.StatusOK, adminRequest(t, s.app, http.MethodDelete, "/suppressions?email=lifted@example.com", "", nil))

	records := s.logs.Matching(t, platform.AuditMessage)
	require.Len(t, records, 2)
	for _, r := range records {
		assert.Equal(t, true, r["audit"])
		assert.Equal(t, "INFO", r["level"])
		assert.Equal(t, "ops", r["user"])
		assert.True(t, strings.HasPrefix(r["remote"].(string), "127.0.0.1:"), r["remote"])
	}
	assert.Equal(t, "POST", records[0]["method"])
	assert.Equal(t, "/monitoring/api/queues/mail:pause", records[0]["path"])
	assert.Equal(t, 204.0, records[0]["status"])
	assert.Equal(t, "DELETE", records[1]["method"])
	assert.Equal(t, "/suppressions", records[1]["path"])
	assert.Equal(t, map[string]any{"email": []any{"l***@example.com"}}, records[1]["query"])
	assert.Equal(t, 200.0, records[1]["status"])
	assert.NotContains(t, s.logs.String(), "s3cret")
	assert.NotContains(t, s.logs.String(), "lifted@example.com")
}
