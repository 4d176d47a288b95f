package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/metrics/metricstest"
	"github.com/verifyq/verifyq/tasks"
)

func getStatus(t *testing.T, url string, auth ...string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if len(auth) == 2 {
		req.SetBasicAuth(auth[0], auth[1])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// metric returns one value scraped from an admin server's /metrics.
func metric(t *testing.T, admin, name string, labels map[string]string) float64 {
	t.Helper()
	v, _ := metricstest.Scrape(t, "http://"+admin+"/metrics").Value(name, labels)
	return v
}

// queueState returns how many tasks of the mail queue are not done yet.
func queueState(t *testing.T, insp *asynq.Inspector) (pending, active, retry, archived int) {
	t.Helper()
	info, err := insp.GetQueueInfo(tasks.Queue)
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return 0, 0, 0, 0
	}
	require.NoError(t, err)
	return info.Pending, info.Active, info.Retry + info.Scheduled, info.Archived
}

// terminate sends SIGTERM and waits for the exit, returning how long it took.
func (p *proc) terminate(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.exited:
		require.NoError(t, p.err, "exit 0 on SIGTERM")
	case <-time.After(40 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Fatal("no exit after SIGTERM")
	}
	return time.Since(start)
}

// Done when 1 and 2: the dashboard needs the credentials, /metrics does not,
// and both /metrics are valid Prometheus text with verifyq's and asynq's
// metrics, no address in any label.
func TestAdminEndpoints(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{"DASHBOARD_AUTH": "ops:s3cret"})
	const email = "metrics.user@example.com"
	status, _ := s.post(t, "/v1/codes", map[string]string{"email": email})
	require.Equal(t, http.StatusAccepted, status)
	s.smtp.WaitMessages(t, 1, 10*time.Second)
	status, _ = s.post(t, "/v1/codes", map[string]string{"email": "bad"})
	require.Equal(t, http.StatusBadRequest, status)
	// The SMTP server has the mail; the worker records the send and asynq
	// the processed task just after.
	require.Eventually(t, func() bool {
		return metric(t, s.wrkAdmin, "verifyq_sends_total", map[string]string{"outcome": "sent"}) == 1 &&
			metric(t, s.enqAdmin, "asynq_tasks_processed_total", map[string]string{"queue": tasks.Queue}) == 1
	}, 10*time.Second, 20*time.Millisecond)

	enq := "http://" + s.enqAdmin
	assert.Equal(t, http.StatusUnauthorized, getStatus(t, enq+"/monitoring/"))
	assert.Equal(t, http.StatusUnauthorized, getStatus(t, enq+"/monitoring/", "ops", "nope"))
	assert.Equal(t, http.StatusOK, getStatus(t, enq+"/monitoring/", "ops", "s3cret"))
	assert.Equal(t, http.StatusUnauthorized, getStatus(t, enq+"/monitoring/api/queues"))
	req, err := http.NewRequest(http.MethodGet, enq+"/monitoring/api/queues", nil)
	require.NoError(t, err)
	req.SetBasicAuth("ops", "s3cret")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	var queues struct {
		Queues []struct {
			Queue     string `json:"queue"`
			Processed int    `json:"processed"`
		} `json:"queues"`
	}
	require.NoError(t, json.NewDecoder(res.Body).Decode(&queues))
	require.Len(t, queues.Queues, 1)
	assert.Equal(t, tasks.Queue, queues.Queues[0].Queue)

	for _, admin := range []string{s.enqAdmin, s.wrkAdmin} {
		assert.Equal(t, http.StatusUnauthorized, getStatus(t, "http://"+admin+"/debug/pprof/"), "pprof is guarded")
		assert.Equal(t, http.StatusOK, getStatus(t, "http://"+admin+"/debug/pprof/", "ops", "s3cret"))
	}

	enqMetrics := metricstest.Scrape(t, enq+"/metrics")
	wrkMetrics := metricstest.Scrape(t, "http://"+s.wrkAdmin+"/metrics")
	for _, tt := range []struct {
		f      metricstest.Families
		name   string
		labels map[string]string
		min    float64
	}{
		{enqMetrics, "verifyq_requests_total", map[string]string{"api": "http", "route": "/v1/codes", "outcome": "ok"}, 1},
		{enqMetrics, "verifyq_requests_total", map[string]string{"api": "http", "route": "/v1/codes", "outcome": "invalid"}, 1},
		{enqMetrics, "verifyq_request_duration_seconds", map[string]string{"api": "http", "route": "/v1/codes"}, 1},
		{enqMetrics, "verifyq_codes_issued_total", map[string]string{"result": "created"}, 1},
		{enqMetrics, "verifyq_codes_issued_total", map[string]string{"result": "reused"}, 0},
		{enqMetrics, "verifyq_rate_limited_total", map[string]string{"limit": "cooldown"}, 0},
		{enqMetrics, "verifyq_enqueue_errors_total", nil, 0},
		{enqMetrics, "asynq_queue_size", map[string]string{"queue": tasks.Queue}, 0},
		{enqMetrics, "asynq_queue_latency_seconds", map[string]string{"queue": tasks.Queue}, 0},
		{enqMetrics, "asynq_tasks_processed_total", map[string]string{"queue": tasks.Queue}, 1},
		{enqMetrics, "asynq_tasks_failed_total", map[string]string{"queue": tasks.Queue}, 0},
		{enqMetrics, "asynq_tasks_enqueued_total", map[string]string{"queue": tasks.Queue, "state": "archived"}, 0},
		{wrkMetrics, "verifyq_sends_total", map[string]string{"outcome": "sent"}, 1},
		{wrkMetrics, "verifyq_sends_total", map[string]string{"outcome": "expired"}, 0},
		{wrkMetrics, "verifyq_smtp_duration_seconds", map[string]string{"result": "ok"}, 1},
		{wrkMetrics, "verifyq_delivery_latency_seconds", nil, 1},
		{wrkMetrics, "verifyq_sends_in_flight", nil, 0},
		{wrkMetrics, "go_goroutines", nil, 1},
	} {
		v, ok := tt.f.Value(tt.name, tt.labels)
		if assert.True(t, ok, "%s%v present", tt.name, tt.labels) {
			assert.GreaterOrEqual(t, v, tt.min, "%s%v", tt.name, tt.labels)
		}
	}
	for _, f := range []metricstest.Families{enqMetrics, wrkMetrics} {
		for _, lv := range f.LabelValues() {
			assert.NotContains(t, lv, "@", "no address in a label")
			assert.NotContains(t, lv, "metrics.user")
		}
	}
}

// Done when 3: /readyz of both binaries is 503 while Redis is away and 200
// once it is back; /metrics keeps answering meanwhile.
func TestReadyzFollowsRedis(t *testing.T) {
	t.Parallel()
	singleOnly(t)
	s := startStack(t, nil)
	admins := []string{s.enqAdmin, s.wrkAdmin}
	for _, a := range admins {
		assert.Equal(t, http.StatusOK, getStatus(t, "http://"+a+"/readyz"))
	}
	s.server(t).Stop()
	for _, a := range admins {
		assert.Equal(t, http.StatusServiceUnavailable, getStatus(t, "http://"+a+"/readyz"), a)
		assert.Equal(t, http.StatusOK, getStatus(t, "http://"+a+"/healthz"), a)
		metricstest.Scrape(t, "http://"+a+"/metrics") // still valid text
	}
	require.NoError(t, s.server(t).Restart())
	for _, a := range admins {
		assert.Eventually(t, func() bool { return getStatus(t, "http://"+a+"/readyz") == http.StatusOK },
			10*time.Second, 50*time.Millisecond, a)
	}
	// And the pipeline works again.
	status, _ := s.post(t, "/v1/codes", map[string]string{"email": "back@example.com"})
	require.Equal(t, http.StatusAccepted, status)
	s.smtp.WaitMessages(t, 1, 15*time.Second)
}

// Done when 4: SIGTERM while a send waits 3 s for the SMTP server: the worker
// stops taking tasks, finishes the send, exits 0, and the mail arrives once.
func TestWorkerSIGTERMFinishesSendInFlight(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{smtpTimeout: "10s"})
	s.smtp.SetLatency(3 * time.Second)
	const email = "slow@example.com"
	status, _ := s.post(t, "/v1/codes", map[string]string{"email": email})
	require.Equal(t, http.StatusAccepted, status)
	require.Eventually(t, func() bool {
		return metric(t, s.wrkAdmin, "verifyq_sends_in_flight", nil) == 1
	}, 10*time.Second, 20*time.Millisecond, "the send is in flight")

	took := s.worker.terminate(t)
	t.Logf("worker exited %s after SIGTERM", took.Round(time.Millisecond))
	assert.Greater(t, took, time.Second, "it waited for the send")
	msgs := s.smtp.Messages()
	require.Len(t, msgs, 1, "delivered before the exit")
	code, _ := s.code(t, email)
	assert.Contains(t, msgs[0].Text, code)

	pending, active, retry, archived := queueState(t, s.inspector(t))
	assert.Zero(t, pending+active+retry+archived, "nothing left to send again")
	time.Sleep(time.Second)
	assert.Equal(t, 1, s.smtp.Count(), "exactly once")
	logs := s.worker.logs.String()
	assert.Contains(t, logs, "code mailed")
	assert.NotContains(t, logs, code)
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		assert.True(t, json.Valid([]byte(line)), "JSON log line: %s", line)
	}
}

// A send that outlasts SHUTDOWN_TIMEOUT is cut off and put back on the
// queue, not lost: the next worker sends it.
func TestWorkerSIGTERMRequeuesSendCutOff(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{smtpTimeout: "20s", "SHUTDOWN_TIMEOUT": "1s"})
	s.smtp.SetLatency(15 * time.Second)
	const email = "cutoff@example.com"
	status, _ := s.post(t, "/v1/codes", map[string]string{"email": email})
	require.Equal(t, http.StatusAccepted, status)
	require.Eventually(t, func() bool {
		return metric(t, s.wrkAdmin, "verifyq_sends_in_flight", nil) == 1
	}, 10*time.Second, 20*time.Millisecond)

	took := s.worker.terminate(t)
	t.Logf("worker exited %s after SIGTERM", took.Round(time.Millisecond))
	assert.Less(t, took, 10*time.Second, "SHUTDOWN_TIMEOUT bounds the wait")
	pending, _, _, archived := queueState(t, s.inspector(t))
	assert.Equal(t, 1, pending, "the task is back on the queue")
	assert.Zero(t, archived)
	assert.Contains(t, s.worker.logs.String(), "Pushed task id=")

	// The SMTP server never accepted the cut-off transaction: take it down
	// (which drops the transaction) and bring it back fast.
	require.NoError(t, s.smtp.Stop())
	require.NoError(t, s.smtp.Restart())
	s.smtp.SetLatency(0)
	env := maps.Clone(s.wrkEnv)
	env["ADMIN_ADDR"] = ""
	start(t, "worker", env)
	msgs := s.smtp.WaitMessages(t, 1, 15*time.Second)
	code, _ := s.code(t, email)
	assert.Contains(t, msgs[0].Text, code)
	time.Sleep(time.Second)
	assert.Equal(t, 1, s.smtp.Count())
}

// On SIGTERM the enqueuer stops accepting connections but answers the
// request in flight before it exits 0.
func TestEnqueuerSIGTERMDrainsRequests(t *testing.T) {
	t.Parallel()
	// CLIENT PAUSE holds the writes of one server: the one, or the primary a
	// Sentinel client reaches; a cluster's keys live on three.
	skipInMode(t, "cluster", "a cluster client's CLIENT PAUSE reaches one master of three")
	s := startStack(t, nil)
	rdb := s.redis.UniversalClient(t)
	// Hold every write (the code script) for 1.5 s: the request stays in
	// flight while the signal arrives.
	require.NoError(t, rdb.Do(context.Background(), "CLIENT", "PAUSE", "1500", "WRITE").Err())
	type reply struct {
		status int
		err    error
		at     time.Time
	}
	replied := make(chan reply, 1)
	go func() {
		res, err := http.Post("http://"+s.api+"/v1/codes", "application/json", strings.NewReader(`{"email":"drain@example.com"}`))
		if err != nil {
			replied <- reply{err: err}
			return
		}
		res.Body.Close()
		replied <- reply{status: res.StatusCode, at: time.Now()}
	}()
	require.Eventually(t, func() bool {
		info, err := rdb.Info(context.Background(), "clients").Result()
		return err == nil && !strings.Contains(info, "blocked_clients:0\r\n")
	}, time.Second, 10*time.Millisecond, "the request's write waits in Redis (this test's own)")
	s.enqueuer.terminate(t)
	exited := time.Now()
	r := <-replied
	require.NoError(t, r.err)
	assert.Equal(t, http.StatusAccepted, r.status, "the request in flight was answered")
	assert.True(t, r.at.Before(exited), "before the exit")
	_, err := http.Post("http://"+s.api+"/v1/codes", "application/json", strings.NewReader(`{}`))
	assert.Error(t, err, "no longer listening")
	s.smtp.WaitMessages(t, 1, 10*time.Second)
}
