package metrics_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/bounce"
	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/httpapi"
	"github.com/verifyq/verifyq/internal/metrics"
	"github.com/verifyq/verifyq/internal/metrics/metricstest"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/outcome"
	"github.com/verifyq/verifyq/service"
	"github.com/verifyq/verifyq/tasks"
)

// limitedService is a hand-written fake that refuses every send.
type limitedService struct{ limit string }

func (s limitedService) SendCode(context.Context, service.SendRequest) (service.Sent, error) {
	return service.Sent{}, &service.RateLimitError{Limit: s.limit, RetryAfter: time.Second}
}

func (limitedService) VerifyCode(context.Context, service.VerifyRequest) error { return nil }

// failingQueue is a hand-written fake queue that is always down.
type failingQueue struct{}

func (failingQueue) EnqueueContext(context.Context, *asynq.Task, ...asynq.Option) (*asynq.TaskInfo, error) {
	return nil, errors.New("redis: connection refused")
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestEnqueuerMetrics(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	store, err := codes.NewStore(rdb, codes.Config{KeyPrefix: "code_", TTL: 10 * time.Minute, Length: 6})
	require.NoError(t, err)
	limiter, err := limits.New(rdb, limits.Config{}, store)
	require.NoError(t, err)

	reg := metrics.NewRegistry()
	m := metrics.NewEnqueuer(reg, asynq.NewInspectorFromRedisClient(rdb))
	ctx := context.Background()

	// Through the real service and queue: created, then reused.
	records := delivery.NewRecords(rdb, store.Keys, asynq.NewInspectorFromRedisClient(rdb))
	svc := m.Service(service.New(store, limiter, records, m.Queue(asynq.NewClientFromRedisClient(rdb)), discard))
	srv := httptest.NewServer(httpapi.NewHandler(svc, discard, httpapi.Config{Metrics: m}))
	t.Cleanup(srv.Close)
	for range 2 {
		res, err := http.Post(srv.URL+"/v1/codes", "application/json", strings.NewReader(`{"email":"who@example.com"}`))
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, http.StatusAccepted, res.StatusCode)
	}
	res, err := http.Post(srv.URL+"/v1/codes/verify", "application/json", strings.NewReader(`{"email":"who@example.com","code":"x"}`))
	require.NoError(t, err)
	res.Body.Close()
	res, err = http.Get(srv.URL + "/who@example.com")
	require.NoError(t, err)
	res.Body.Close()

	// A queue that is down, and a limit.
	_, err = m.Service(service.New(store, limiter, records, m.Queue(failingQueue{}), discard)).SendCode(ctx, service.SendRequest{Email: "down@example.com"})
	require.ErrorIs(t, err, service.ErrUnavailable)
	_, err = m.Service(limitedService{limit: "cooldown"}).SendCode(ctx, service.SendRequest{Email: "a@example.com"})
	require.ErrorIs(t, err, service.ErrRateLimited)

	// The gRPC edge records into the same metric.
	m.ObserveRequest("grpc", "/message.VarifyService/GetVarifyCode", "legacy", outcome.MetricRateLimited, time.Millisecond)
	m.ObserveRequest("grpc", "/message.VarifyService/GetVarifyCode", "legacy", "made-up", time.Millisecond)
	// A connection refused on the gRPC listener; the HTTP listener's
	// series is there at zero.
	m.ConnectionRefused("grpc")

	scrape := httptest.NewServer(metrics.Handler(reg))
	t.Cleanup(scrape.Close)
	f := metricstest.Scrape(t, scrape.URL)

	for _, tt := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"verifyq_requests_total", map[string]string{"api": "http", "route": "/v1/codes", "caller": "anonymous", "outcome": "ok"}, 2},
		{"verifyq_requests_total", map[string]string{"api": "http", "route": "/v1/codes/verify", "outcome": "mismatch"}, 1},
		{"verifyq_requests_total", map[string]string{"api": "http", "route": "other", "outcome": "invalid"}, 1},
		{"verifyq_requests_total", map[string]string{"api": "grpc", "caller": "legacy", "outcome": "rate_limited"}, 1},
		{"verifyq_requests_total", map[string]string{"api": "grpc", "outcome": "error"}, 1},
		{"verifyq_request_duration_seconds", map[string]string{"api": "http", "route": "/v1/codes", "outcome": "ok"}, 2},
		{"verifyq_codes_issued_total", map[string]string{"result": "created"}, 1},
		{"verifyq_codes_issued_total", map[string]string{"result": "reused"}, 1},
		{"verifyq_rate_limited_total", map[string]string{"limit": "cooldown"}, 1},
		{"verifyq_rate_limited_total", map[string]string{"limit": "client"}, 0},
		{"verifyq_enqueue_errors_total", nil, 1},
		{"verifyq_connections_refused_total", map[string]string{"listener": "grpc"}, 1},
		{"verifyq_connections_refused_total", map[string]string{"listener": "http"}, 0},
		{"asynq_queue_size", map[string]string{"queue": tasks.Queue}, 2},
		{"asynq_tasks_enqueued_total", map[string]string{"queue": tasks.Queue, "state": "pending"}, 2},
		{"asynq_queue_latency_seconds", map[string]string{"queue": tasks.Queue}, -1},
		{"asynq_tasks_processed_total", map[string]string{"queue": tasks.Queue}, 0},
		{"asynq_tasks_failed_total", map[string]string{"queue": tasks.Queue}, 0},
		{"go_goroutines", nil, -1},
		{"process_cpu_seconds_total", nil, -1},
	} {
		v, ok := f.Value(tt.name, tt.labels)
		if assert.True(t, ok, "%s%v present", tt.name, tt.labels) && tt.want >= 0 {
			assert.Equal(t, tt.want, v, "%s%v", tt.name, tt.labels)
		}
	}
	for _, lv := range f.LabelValues() {
		assert.NotContains(t, lv, "@", "no address in a label")
	}
}

func TestWorkerMetrics(t *testing.T) {
	t.Parallel()
	reg := metrics.NewRegistry()
	m := metrics.NewWorker(reg, tasks.RelayPrimary, tasks.RelayFallback)
	m.SendStarted()
	m.SendStarted()
	m.SendFinished(tasks.SendResult{Outcome: tasks.OutcomeSent, SMTP: 20 * time.Millisecond, SinceRequest: 300 * time.Millisecond,
		Relay: tasks.RelayPrimary, Tries: []tasks.Try{{Relay: tasks.RelayPrimary, Took: 20 * time.Millisecond}}})
	m.SendStarted()
	m.SendFinished(tasks.SendResult{Outcome: tasks.OutcomeRetried, SMTP: time.Second, SMTPErr: true, Failure: delivery.RelayDeferred,
		Relay: tasks.RelayPrimary, Tries: []tasks.Try{{Relay: tasks.RelayPrimary, Took: time.Second, Failure: delivery.RelayDeferred}}})
	// The primary refused the password, the fallback took the mail.
	m.SendStarted()
	m.SendFinished(tasks.SendResult{Outcome: tasks.OutcomeSent, SMTP: 50 * time.Millisecond, SinceRequest: 2 * time.Second,
		Relay: tasks.RelayFallback, Tries: []tasks.Try{
			{Relay: tasks.RelayPrimary, Took: 10 * time.Millisecond, Failure: delivery.RelayRefused},
			{Relay: tasks.RelayFallback, Took: 40 * time.Millisecond},
		}})
	m.SendStarted()
	m.SendFinished(tasks.SendResult{Outcome: tasks.OutcomeFailed, Failure: delivery.Undecryptable})
	m.TaskExpired()
	primary := m.BreakerChanged(tasks.RelayPrimary)
	for _, st := range []tasks.BreakerState{tasks.BreakerClosed, tasks.BreakerOpen, tasks.BreakerHalfOpen,
		tasks.BreakerOpen, tasks.BreakerHalfOpen} {
		primary(st)
	}
	m.BounceHandled(bounce.ResultBounced)
	m.BounceHandled(bounce.ResultForged)
	m.BounceHandled(bounce.ResultForged)
	m.BreakerChanged(tasks.RelayFallback)(tasks.BreakerClosed)

	scrape := httptest.NewServer(metrics.Handler(reg))
	t.Cleanup(scrape.Close)
	f := metricstest.Scrape(t, scrape.URL)
	primaryL, fallbackL := map[string]string{"relay": "primary"}, map[string]string{"relay": "fallback"}
	for _, tt := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"verifyq_sends_in_flight", nil, 1},
		{"verifyq_sends_total", map[string]string{"outcome": "sent"}, 2},
		{"verifyq_sends_total", map[string]string{"outcome": "retried"}, 1},
		{"verifyq_sends_total", map[string]string{"outcome": "failed"}, 1},
		{"verifyq_sends_total", map[string]string{"outcome": "expired"}, 1},
		{"verifyq_smtp_duration_seconds", map[string]string{"relay": "primary", "result": "ok"}, 1},
		{"verifyq_smtp_duration_seconds", map[string]string{"relay": "primary", "result": "error"}, 2},
		{"verifyq_smtp_duration_seconds", map[string]string{"relay": "fallback", "result": "ok"}, 1},
		{"verifyq_delivery_latency_seconds", primaryL, 1},
		{"verifyq_delivery_latency_seconds", fallbackL, 1},
		{"verifyq_smtp_failures_total", map[string]string{"relay": "primary", "class": "relay_deferred"}, 1},
		{"verifyq_smtp_failures_total", map[string]string{"relay": "primary", "class": "relay_refused"}, 1},
		{"verifyq_smtp_failures_total", map[string]string{"relay": "fallback", "class": "relay_refused"}, 0},
		{"verifyq_smtp_failures_total", map[string]string{"relay": "", "class": "undecryptable"}, 1},
		{"verifyq_smtp_breaker_open", primaryL, 1},
		{"verifyq_smtp_breaker_opened_total", primaryL, 2},
		{"verifyq_smtp_breaker_open", fallbackL, 0},
		{"verifyq_smtp_breaker_opened_total", fallbackL, 0},
		{"verifyq_bounces_total", map[string]string{"result": "bounced"}, 1},
		{"verifyq_bounces_total", map[string]string{"result": "forged"}, 2},
		{"verifyq_bounces_total", map[string]string{"result": "complained"}, 0},
	} {
		v, ok := f.Value(tt.name, tt.labels)
		if assert.True(t, ok, "%s%v present", tt.name, tt.labels) {
			assert.Equal(t, tt.want, v, "%s%v", tt.name, tt.labels)
		}
	}
}

// Two registries side by side: no global state, tests may run in parallel.
func TestRegistriesAreIndependent(t *testing.T) {
	t.Parallel()
	a, b := metrics.NewRegistry(), metrics.NewRegistry()
	metrics.NewEnqueuer(a, nil).ObserveRequest("http", httpapi.RouteSend, "anonymous", outcome.MetricOK, time.Millisecond)
	metrics.NewEnqueuer(b, nil)
	fa, err := a.Gather()
	require.NoError(t, err)
	fb, err := b.Gather()
	require.NoError(t, err)
	assert.NotEqual(t, len(fa), len(fb), "only a has a request series")
}

func (limitedService) Status(context.Context, codes.ID) (delivery.Status, error) {
	return delivery.Status{}, nil
}
