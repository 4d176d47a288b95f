package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/events"
	"github.com/verifyq/verifyq/internal/metrics/metricstest"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/tasks"
)

func startApp(t *testing.T, tweak func(*Config)) *App {
	t.Helper()
	app := openApp(t, redistest.Start(t), tweak)
	t.Cleanup(func() { assert.NoError(t, app.Close(closeCtx(t, app))) })
	return app
}

// closeCtx is the budget platform.ServeApp gives Close: the app's
// SHUTDOWN_TIMEOUT from now.
func closeCtx(t *testing.T, app *App) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), app.cfg.ShutdownTimeout)
	t.Cleanup(cancel)
	return ctx
}

// openApp opens an App on rs; the caller closes it.
func openApp(t *testing.T, rs *redistest.Server, tweak func(*Config)) *App {
	t.Helper()
	cfg := Config{
		Common: platform.Common{
			RedisMode: "single",
			RedisURL:  platform.Secret(rs.URL()), KeyPrefix: "code_",
			TTL: 10 * time.Minute, ShutdownTimeout: 5 * time.Second, QueueShards: 1,
		},
		AdminAddr: "127.0.0.1:0", Concurrency: 2, MaxConns: 2, Server: smtpServer(t, "smtp://127.0.0.1:1?tls=none&timeout=1s"),
		From: "no-reply@verifyq.test",
	}
	if tweak != nil {
		tweak(&cfg)
	}
	require.NoError(t, cfg.Resolve())
	app, err := NewApp(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	require.NoError(t, err)
	require.NoError(t, app.Open(context.Background()))
	return app
}

// queueSend makes email's code and queues the task that mails it, as the
// enqueuer does.
func queueSend(t *testing.T, rdb *redis.Client, email string) {
	t.Helper()
	store, err := codes.NewStore(rdb, codes.Config{KeyPrefix: "code_", TTL: 10 * time.Minute, Length: 6})
	require.NoError(t, err)
	issued, err := store.GetOrCreate(t.Context(), codes.ID{Email: email})
	require.NoError(t, err)
	task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{Email: email, RequestedAt: time.Now(), ExpiresAt: time.Now().Add(issued.ExpiresIn)})
	require.NoError(t, err)
	_, err = asynq.NewClientFromRedisClient(rdb).EnqueueContext(t.Context(), task)
	require.NoError(t, err)
}

// smtpServer is the SMTP_URL u, parsed.
func smtpServer(t *testing.T, u string) SMTPServer {
	t.Helper()
	var s SMTPServer
	require.NoError(t, s.Decode(u))
	return s
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
		for _, name := range []string{"verifyq_sends_in_flight", "verifyq_sends_total",
			"verifyq_smtp_breaker_open", "verifyq_smtp_breaker_opened_total"} {
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
		admin := "http://" + startApp(t, func(c *Config) { c.DashboardAuth = platform.Credentials{User: "admin", Password: "s3cret"} }).AdminAddr()
		assert.Equal(t, http.StatusUnauthorized, status(t, admin+"/debug/pprof/"))
		assert.Equal(t, http.StatusOK, status(t, admin+"/debug/pprof/", "admin", "s3cret"))
		assert.Equal(t, http.StatusOK, status(t, admin+"/metrics"))
	})
	t.Run("pprof only to its own host names", func(t *testing.T) {
		t.Parallel()
		app := startApp(t, func(c *Config) { c.DashboardHosts = platform.HostNames{"ops.example"} })
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

// SMTP refuses every connection: the first sends fail and open the
// breaker, the next tasks wait in their slots and the rest stay pending.
// At shutdown the waiting ones go back to the queue at once, no retry
// counted, and nothing is archived.
func TestShutdownWithBreakerOpen(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	app := openApp(t, rs, func(c *Config) { c.Concurrency = 3; c.ShutdownTimeout = 20 * time.Second })
	const n = 10
	for i := range n {
		queueSend(t, rdb, fmt.Sprintf("held%d@example.com", i))
	}
	admin := "http://" + app.AdminAddr() + "/metrics"
	require.Eventually(t, func() bool {
		v, _ := metricstest.Scrape(t, admin).Value("verifyq_smtp_breaker_open", nil)
		return v == 1
	}, 10*time.Second, 20*time.Millisecond)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	require.Eventually(t, func() bool {
		info, err := insp.GetQueueInfo(tasks.Queue)
		return err == nil && info.Active == 3
	}, 10*time.Second, 20*time.Millisecond, "every slot waits")
	time.Sleep(1500 * time.Millisecond) // a probe or two fail meanwhile
	info, err := insp.GetQueueInfo(tasks.Queue)
	require.NoError(t, err)
	assert.Equal(t, 3, info.Active, "the slots still wait")
	assert.GreaterOrEqual(t, info.Pending+info.Retry, n-3, "the rest are not taken")
	failed := info.Failed

	start := time.Now()
	require.NoError(t, app.Close(closeCtx(t, app)))
	took := time.Since(start)
	// Held sends that waited for SHUTDOWN_TIMEOUT would take its 20 s; half
	// of it leaves a loaded machine room to stop the queue.
	assert.Less(t, took, 10*time.Second, "the held sends do not wait for SHUTDOWN_TIMEOUT")
	info, err = insp.GetQueueInfo(tasks.Queue)
	require.NoError(t, err)
	assert.Zero(t, info.Active)
	assert.Zero(t, info.Archived)
	assert.Equal(t, n, info.Pending+info.Retry)
	assert.Equal(t, failed, info.Failed, "the held sends did not count as failed attempts")
	retries, err := insp.ListRetryTasks(tasks.Queue)
	require.NoError(t, err)
	for _, r := range retries {
		assert.LessOrEqual(t, r.Retried, 1, "at most the attempt that opened the breaker counted")
	}
}

// The worker with SMTP_FALLBACK_URL, through asynq: with the primary
// refusing connections every mail goes through the fallback, /readyz says
// ready and names each relay's state, the metrics count per relay; when
// the primary is back the mails go to it again. Each address is mailed
// once, counted at both servers.
func TestWorkerFallbackRelay(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	primary, fallback := smtptest.Start(t), smtptest.Start(t)
	require.NoError(t, primary.Stop())
	app := openApp(t, rs, func(c *Config) {
		c.Concurrency = 4
		c.Server = smtpServer(t, fmt.Sprintf("smtp://%s?tls=none&timeout=1s", primary.Addr()))
		c.Fallback = FallbackServer{smtpServer(t, fmt.Sprintf("smtp://%s?tls=none&timeout=1s", fallback.Addr()))}
	})
	t.Cleanup(func() { assert.NoError(t, app.Close(closeCtx(t, app))) })
	var addrs []string
	enqueue := func() {
		t.Helper()
		email := fmt.Sprintf("u%d@example.com", len(addrs))
		addrs = append(addrs, email)
		queueSend(t, rdb, email)
	}
	for range 10 {
		enqueue()
	}
	fallback.WaitMessages(t, 10, 20*time.Second)

	admin := "http://" + app.AdminAddr()
	res, err := http.Get(admin + "/readyz")
	require.NoError(t, err)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode, "the fallback takes mail: ready")
	assert.Regexp(t, `^ok\nprimary: open \(smtp relay failing: .*\); fallback: closed\n$`, string(body))
	// The relay has a mail once its reply to the message's end is sent; the
	// worker counts it once it has read that reply: wait for the count.
	var f metricstest.Families
	require.Eventually(t, func() bool {
		f = metricstest.Scrape(t, admin+"/metrics")
		v, _ := f.Value("verifyq_sends_total", map[string]string{"outcome": "sent"})
		return v == 10
	}, 10*time.Second, 20*time.Millisecond, "the worker counts the 10 mails the fallback took")
	for _, tt := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"verifyq_smtp_breaker_open", map[string]string{"relay": "primary"}, 1},
		{"verifyq_smtp_breaker_open", map[string]string{"relay": "fallback"}, 0},
		{"verifyq_smtp_duration_seconds", map[string]string{"relay": "fallback", "result": "ok"}, 10},
		{"verifyq_delivery_latency_seconds", map[string]string{"relay": "fallback"}, 10},
		{"verifyq_sends_total", map[string]string{"outcome": "sent"}, 10},
	} {
		v, _ := f.Value(tt.name, tt.labels)
		assert.Equal(t, tt.want, v, "%s%v", tt.name, tt.labels)
	}
	v, _ := f.Value("verifyq_smtp_failures_total", map[string]string{"relay": "primary", "class": "relay_deferred"})
	assert.GreaterOrEqual(t, v, float64(tasks.BreakerUnreachable), "the failures that opened the primary's breaker")

	require.NoError(t, primary.Restart())
	require.Eventually(t, func() bool {
		enqueue()
		return primary.Count() > 0
	}, 20*time.Second, 250*time.Millisecond, "the mails go back to the primary")
	require.Eventually(t, func() bool { return primary.Count()+fallback.Count() == len(addrs) }, 10*time.Second, 20*time.Millisecond)
	for _, email := range addrs {
		n := 0
		for _, m := range append(primary.Messages(), fallback.Messages()...) {
			if m.To[0] == email {
				n++
			}
		}
		assert.Equal(t, 1, n, "%s: mailed once", email)
	}
	v, _ = metricstest.Scrape(t, admin+"/metrics").Value("verifyq_smtp_breaker_open", map[string]string{"relay": "primary"})
	assert.Zero(t, v, "the primary's breaker closed")
}

// With WEBHOOK_URLS the worker delivers its events, signed as the
// Standard Webhooks library verifies them, from a server of its own; at
// shutdown it closes its connections to the endpoints, as it does every
// other connection it opened.
func TestWorkerDeliversEvents(t *testing.T) {
	t.Parallel()
	key := []byte("0123456789abcdef0123456789abcdef")
	secret := events.SecretPrefix + base64.StdEncoding.EncodeToString(key)
	wh, err := standardwebhooks.NewWebhook(secret)
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		types []string
		bad   []string
		open  = map[net.Conn]bool{}
	)
	recv := httptest.NewUnstartedServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev struct{ Type string }
		_ = json.Unmarshal(body, &ev)
		mu.Lock()
		defer mu.Unlock()
		if err := wh.Verify(body, r.Header); err != nil {
			bad = append(bad, err.Error())
		}
		types = append(types, ev.Type)
	}))
	recv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch s {
		case http.StateNew:
			open[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(open, c)
		}
	}
	recv.Start()
	t.Cleanup(recv.Close)

	rs := redistest.Start(t)
	rdb := rs.Client(t)
	srv := smtptest.Start(t)
	app := openApp(t, rs, func(c *Config) {
		c.Server = smtpServer(t, fmt.Sprintf("smtp://%s?tls=none&timeout=1s", srv.Addr()))
		c.WebhookURLs = platform.WebhookURLs{recv.URL + "/hook"}
		require.NoError(t, c.WebhookSecret.Decode(secret))
	})
	queueSend(t, rdb, "ev@example.com")
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(types, string(events.CodeSent))
	}, 20*time.Second, 20*time.Millisecond, "code.sent delivered")

	require.NoError(t, app.Close(closeCtx(t, app)))
	// A connection left idle would stay open for the transport's
	// IdleConnTimeout, 90 s.
	assert.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(open) == 0
	}, 10*time.Second, 20*time.Millisecond, "the worker keeps no connection to the endpoint open after it stopped")
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, bad, "every delivery verifies")
}

// SHUTDOWN_TIMEOUT bounds the whole shutdown: a send in flight on a slow
// SMTP server, a delivery in flight to an endpoint that does not answer
// and an admin request are all cut off at that time, not one after the
// other.
func TestShutdownTimeoutBoundsMailAndEvents(t *testing.T) {
	t.Parallel()
	const timeout = 2 * time.Second
	release := make(chan struct{})
	var posted atomic.Int32
	hang := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		posted.Add(1)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release); hang.Close() })
	secret := events.SecretPrefix + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

	rs := redistest.Start(t)
	rdb := rs.Client(t)
	srv := smtptest.Start(t, smtptest.WithCommands())
	srv.SetLatency(time.Minute)
	app := openApp(t, rs, func(c *Config) {
		c.ShutdownTimeout = timeout
		c.Server = smtpServer(t, fmt.Sprintf("smtp://%s?tls=none&timeout=30s", srv.Addr()))
		c.WebhookURLs = platform.WebhookURLs{hang.URL}
		require.NoError(t, c.WebhookSecret.Decode(secret))
	})
	client := asynq.NewClientFromRedisClient(rdb)
	em := events.NewEmitter(client, []string{hang.URL}, nil, nil)
	require.NoError(t, em.Emit(t.Context(), events.Event{Type: events.RelayFailing, Fact: "shutdown-test", Data: events.Data{Relay: "primary"}}))
	require.Eventually(t, func() bool { return posted.Load() > 0 }, 10*time.Second, 20*time.Millisecond, "a delivery in flight")

	queueSend(t, rdb, "slow@example.com")
	insp := asynq.NewInspectorFromRedisClient(rdb)
	require.Eventually(t, func() bool {
		info, err := insp.GetQueueInfo(tasks.Queue)
		return err == nil && info.Active == 1
	}, 10*time.Second, 20*time.Millisecond, "a send in flight")
	// The message is sent: the SMTP server holds its reply a minute.
	srv.WaitCommand(t, "DATA", 10*time.Second)
	// And an admin request in flight, a CPU profile of 8 s.
	profiled := make(chan struct{})
	go func() {
		defer close(profiled)
		res, err := http.Get("http://" + app.AdminAddr() + "/debug/pprof/profile?seconds=8")
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
		}
	}()
	t.Cleanup(func() { <-profiled })
	time.Sleep(100 * time.Millisecond) // for the request to be in; the ErrorIs below checks it was

	start := time.Now()
	err := app.Close(closeCtx(t, app))
	took := time.Since(start)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "the admin request cut off")
	assert.Less(t, took, 2*timeout, "the mail's and the events' servers and the admin's are given SHUTDOWN_TIMEOUT together, not each in turn")
	info, err := insp.GetQueueInfo(tasks.Queue)
	require.NoError(t, err)
	assert.Equal(t, 1, info.Pending, "the send cut off is back on the queue")
}
