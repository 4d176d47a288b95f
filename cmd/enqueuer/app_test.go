package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/metrics/metricstest"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/mail"
)

func get(t *testing.T, url string, auth ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if len(auth) == 2 {
		req.SetBasicAuth(auth[0], auth[1])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b)
}

func sendCode(t *testing.T, app *App, email string) {
	t.Helper()
	res, err := http.Post("http://"+app.HTTPAddr()+"/v1/codes", "application/json",
		strings.NewReader(`{"email":"`+email+`"}`))
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusAccepted, res.StatusCode)
}

func TestAdminWithPassword(t *testing.T) {
	t.Parallel()
	app := startApp(t, func(c *Config) { c.DashboardAuth = platform.Credentials{User: "ops", Password: "s3cret"} }).app
	admin := "http://" + app.AdminAddr()
	sendCode(t, app, "Dash.Board@example.com")

	// The dashboard and pprof need the credentials.
	for _, path := range []string{"/monitoring/", "/monitoring/api/queues", "/debug/pprof/", "/suppressions"} {
		status, _ := get(t, admin+path)
		assert.Equal(t, http.StatusUnauthorized, status, path)
		status, _ = get(t, admin+path, "ops", "wrong")
		assert.Equal(t, http.StatusUnauthorized, status, path)
		status, _ = get(t, admin+path, "ops", "s3cret")
		assert.Equal(t, http.StatusOK, status, path)
	}
	status, body := get(t, admin+"/monitoring/", "ops", "s3cret")
	require.Equal(t, http.StatusOK, status)
	assert.Contains(t, body, "/monitoring/static/js/", "the app's assets under the root path")

	status, body = get(t, admin+"/monitoring/api/queues", "ops", "s3cret")
	require.Equal(t, http.StatusOK, status)
	var queues struct {
		Queues []struct {
			Queue   string `json:"queue"`
			Pending int    `json:"pending"`
		} `json:"queues"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &queues), body)
	require.Len(t, queues.Queues, 1)
	assert.Equal(t, "mail", queues.Queues[0].Queue)
	assert.Equal(t, 1, queues.Queues[0].Pending)

	// Payloads are shown with the address masked.
	status, body = get(t, admin+"/monitoring/api/queues/mail/pending_tasks", "ops", "s3cret")
	require.Equal(t, http.StatusOK, status)
	assert.Contains(t, body, `D***@example.com`)
	assert.NotContains(t, body, "Dash.Board")

	// Probes and scrapers need none.
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		status, _ := get(t, admin+path)
		assert.Equal(t, http.StatusOK, status, path)
	}
	f := metricstest.Scrape(t, admin+"/metrics")
	v, ok := f.Value("verifyq_requests_total", map[string]string{"api": "http", "route": "/v1/codes", "outcome": "ok"})
	assert.True(t, ok)
	assert.Equal(t, 1.0, v)
	v, _ = f.Value("asynq_queue_size", map[string]string{"queue": "mail"})
	assert.Equal(t, 1.0, v)
}

func TestAdminOnLoopbackWithoutPassword(t *testing.T) {
	t.Parallel()
	app := startApp(t).app
	admin := "http://" + app.AdminAddr()
	for _, path := range []string{"/monitoring/", "/monitoring/api/queues", "/debug/pprof/", "/metrics"} {
		status, _ := get(t, admin+path)
		assert.Equal(t, http.StatusOK, status, path)
	}
}

func TestDashboardReadOnly(t *testing.T) {
	t.Parallel()
	app := startApp(t, func(c *Config) { c.DashboardReadOnly = true }).app
	sendCode(t, app, "ro@example.com")
	req, err := http.NewRequest(http.MethodDelete, "http://"+app.AdminAddr()+"/monitoring/api/queues/mail/pending_tasks:delete_all", nil)
	require.NoError(t, err)
	req.Header.Set("Origin", "http://"+app.AdminAddr()) // past the cross-site check
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, res.StatusCode)
}

// Ops list and lift suppressions on the admin server: a suppressed address
// is refused (422 undeliverable) until lifted, then mailed again.
func TestSuppressionsEndpoint(t *testing.T) {
	t.Parallel()
	s := startApp(t, func(c *Config) { c.DashboardAuth = platform.Credentials{User: "ops", Password: "s3cret"} })
	ctx := context.Background()
	sup := delivery.NewSuppressions(s.redis.Client(t), mail.Identity{TagSeparators: "+"})
	require.NoError(t, sup.Add(ctx, delivery.Entry{Email: "bounce@example.com", Reason: delivery.ReasonRecipientRefused,
		Reply: 550, Enhanced: "5.1.1", Added: time.Now(), For: time.Hour}))

	res, err := http.Post("http://"+s.app.HTTPAddr()+"/v1/codes", "application/json", strings.NewReader(`{"email":"bounce@EXAMPLE.com"}`))
	require.NoError(t, err)
	_ = res.Body.Close()
	assert.Equal(t, http.StatusUnprocessableEntity, res.StatusCode, "suppressed, the domain in any case")

	admin := "http://" + s.app.AdminAddr() + "/suppressions"
	status, body := get(t, admin+"?reason=recipient_refused", "ops", "s3cret")
	require.Equal(t, http.StatusOK, status)
	assert.Contains(t, body, `"address":"b***@example.com"`)
	assert.Contains(t, body, `"reply":550`)
	assert.Contains(t, body, `"enhanced_code":"5.1.1"`)
	assert.NotContains(t, body, "bounce@example.com", "masked")

	del := func(query string) int {
		req, err := http.NewRequest(http.MethodDelete, admin+"?"+query, nil)
		require.NoError(t, err)
		req.SetBasicAuth("ops", "s3cret")
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = res.Body.Close()
		return res.StatusCode
	}
	assert.Equal(t, http.StatusBadRequest, del("email=nope"))
	assert.Equal(t, http.StatusBadRequest, del(""), "no accidental wipe")
	assert.Equal(t, http.StatusNotFound, del("email=Bounce@example.com"), "another spelling")
	assert.Equal(t, http.StatusOK, del("email=bounce@Example.com"))
	assert.Equal(t, http.StatusNotFound, del("email=bounce@example.com"), "already lifted")
	sendCode(t, s.app, "bounce@example.com")
}

// With DASHBOARD_READONLY the suppression list can be read, not lifted.
func TestSuppressionsReadOnly(t *testing.T) {
	t.Parallel()
	s := startApp(t, func(c *Config) { c.DashboardReadOnly = true })
	ctx := context.Background()
	sup := delivery.NewSuppressions(s.redis.Client(t), mail.Identity{})
	require.NoError(t, sup.Add(ctx, delivery.Entry{Email: "ro@example.com", Reason: delivery.ReasonRecipientRefused,
		Reply: 550, Added: time.Now(), For: time.Hour}))
	admin := "http://" + s.app.AdminAddr() + "/suppressions"
	status, body := get(t, admin)
	require.Equal(t, http.StatusOK, status)
	assert.Contains(t, body, `"address":"r***@example.com"`)

	for _, query := range []string{"email=ro@example.com", "added_after=2000-01-01T00:00:00Z&added_before=2100-01-01T00:00:00Z"} {
		req, err := http.NewRequest(http.MethodDelete, admin+"?"+query, nil)
		require.NoError(t, err)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		var got struct {
			Error struct{ Code, Message string }
		}
		require.NoError(t, json.NewDecoder(res.Body).Decode(&got))
		_ = res.Body.Close()
		assert.Equal(t, http.StatusForbidden, res.StatusCode, query)
		assert.Equal(t, "read_only", got.Error.Code)
		assert.Contains(t, got.Error.Message, "DASHBOARD_READONLY")
	}
	lifted, err := sup.Lift(ctx, "ro@example.com")
	require.NoError(t, err)
	assert.True(t, lifted, "the entry is still there")
}
