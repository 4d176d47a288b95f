package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/logtest"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/relay"
	"github.com/verifyq/verifyq/tasks"
)

// states records a breaker's state changes.
type states struct {
	mu  sync.Mutex
	got []tasks.BreakerState
}

func (s *states) add(st tasks.BreakerState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, st)
}

func (s *states) list() []tasks.BreakerState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]tasks.BreakerState(nil), s.got...)
}

type breakerEnv struct {
	*env
	b       *tasks.Breaker
	logs    *logtest.Buffer
	states  *states
	resumed atomic.Int32
}

// newBreakerEnv returns a breaker that probes the env's real SMTP server
// through its real sender.
func newBreakerEnv(t *testing.T) *breakerEnv {
	t.Helper()
	be := &breakerEnv{env: newEnv(t), states: &states{}}
	logger, logs := logtest.New(t)
	be.logs = logs
	b, err := tasks.NewBreaker(tasks.BreakerConfig{
		Probe:        be.sender.Probe,
		ProbeTimeout: 500 * time.Millisecond,
		Resume:       func() (int, error) { be.resumed.Add(1); return 0, nil },
		OnChange:     be.states.add,
		Logger:       logger,
	})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	be.b = b
	return be
}

// send sends one mail through the real sender and reports the result.
func (be *breakerEnv) send(t *testing.T) error {
	t.Helper()
	msg, err := mail.Compose("no-reply@verifyq.test", mail.Message{To: "b@example.com", Locale: mail.LocaleEN, Code: "123456", ExpiresIn: time.Minute})
	require.NoError(t, err)
	err = be.sender.Send(t.Context(), relay.Envelope{From: "no-reply@verifyq.test", To: "b@example.com"}, msg)
	be.b.Report(t.Context(), err)
	return err
}

// waiter runs Wait in a goroutine; the channel gets its result.
type waitResult struct {
	done func()
	err  error
}

func wait(ctx context.Context, b *tasks.Breaker) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		done, err := b.Wait(ctx)
		ch <- waitResult{done, err}
	}()
	return ch
}

func blocked(t *testing.T, ch <-chan waitResult, d time.Duration) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("Wait returned while the breaker is open: %v", r.err)
	case <-time.After(d):
	}
}

func released(t *testing.T, ch <-chan waitResult, d time.Duration) waitResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(d):
		t.Fatal("Wait still blocked")
		return waitResult{}
	}
}

// SMTP down: three connection failures open the breaker, sends wait, and
// once the server is back a probe lets one trial through; its success
// closes the breaker and the rest go.
func TestBreakerOutageAndRecovery(t *testing.T) {
	t.Parallel()
	be := newBreakerEnv(t)
	require.NoError(t, be.send(t))
	require.NoError(t, be.smtp.Stop())
	for i := range tasks.BreakerUnreachable {
		assert.Equal(t, tasks.BreakerClosed, be.b.State(), "after %d failures", i)
		err := be.send(t)
		require.Equal(t, delivery.RelayDeferred, delivery.ClassOf(err), "%v", err)
	}
	assert.Equal(t, tasks.BreakerOpen, be.b.State())

	waiters := []<-chan waitResult{wait(t.Context(), be.b), wait(t.Context(), be.b), wait(t.Context(), be.b)}
	for _, w := range waiters {
		blocked(t, w, 1500*time.Millisecond) // probes fail meanwhile
	}
	assert.Equal(t, tasks.BreakerOpen, be.b.State())
	assert.Zero(t, be.resumed.Load())

	require.NoError(t, be.smtp.Restart())
	back := time.Now()
	var trial waitResult
	rest := make([]<-chan waitResult, 0, 2)
	select {
	case trial = <-waiters[0]:
		rest = append(rest, waiters[1], waiters[2])
	case trial = <-waiters[1]:
		rest = append(rest, waiters[0], waiters[2])
	case trial = <-waiters[2]:
		rest = append(rest, waiters[0], waiters[1])
	case <-time.After(10 * time.Second): // probed every second; a breaker that never probes never lets one go
		t.Fatal("no trial send after the server came back")
	}
	t.Logf("trial let through %s after the server came back", time.Since(back).Round(time.Millisecond))
	require.NoError(t, trial.err)
	assert.Equal(t, tasks.BreakerHalfOpen, be.b.State())
	// The breaker runs the retry tasks right after it lets the trial go, on
	// the probing goroutine: wait for it rather than race it (5 s: a
	// breaker that does not run them never will).
	assert.Eventually(t, func() bool { return be.resumed.Load() == 1 }, 5*time.Second, 5*time.Millisecond,
		"retry tasks run when a probe gets through")
	for _, w := range rest {
		blocked(t, w, 200*time.Millisecond)
	}
	require.NoError(t, be.send(t))
	trial.done()
	assert.Equal(t, tasks.BreakerClosed, be.b.State())
	for _, w := range rest {
		r := released(t, w, 5*time.Second)
		require.NoError(t, r.err)
		r.done()
	}
	assert.Equal(t, []tasks.BreakerState{tasks.BreakerClosed, tasks.BreakerOpen, tasks.BreakerHalfOpen, tasks.BreakerClosed},
		be.states.list())
	assert.Eventually(t, func() bool { return be.resumed.Load() == 2 }, 5*time.Second, 10*time.Millisecond,
		"and again when it closes")
	assert.Equal(t, 2, be.smtp.Count())
	for msg, level := range map[string]string{
		"SMTP relay unusable: breaker open, sends wait while it is probed":          "WARN",
		"SMTP server answers a probe: breaker half-open, one trial send goes first": "INFO",
		"SMTP server back: breaker closed, sends resume":                            "INFO",
	} {
		lines := be.logs.Matching(t, msg)
		if assert.Len(t, lines, 1, msg) {
			assert.Equal(t, level, lines[0]["level"], msg)
		}
	}
}

// A burst of 4xx replies opens the breaker; replies spread wider than the
// window, or with a mail accepted in between, do not.
func TestBreakerTemporaryReplies(t *testing.T) {
	t.Parallel()
	be := newBreakerEnv(t)
	now := time.Now()
	tasks.SetBreakerClock(be.b, func() time.Time { return now })
	reply := fmt.Errorf("send mail: %w", &relay.Error{Stage: relay.StageData, Code: 451, Enhanced: "4.3.0"})
	ctx := t.Context()

	for range tasks.BreakerTempReplies - 1 {
		be.b.Report(ctx, reply)
	}
	be.b.Report(ctx, nil) // accepted: the count starts again
	for range tasks.BreakerTempReplies - 1 {
		be.b.Report(ctx, reply)
	}
	assert.Equal(t, tasks.BreakerClosed, be.b.State())
	now = now.Add(tasks.BreakerTempWindow + time.Second) // the burst is over
	for range tasks.BreakerTempReplies - 1 {
		be.b.Report(ctx, reply)
	}
	assert.Equal(t, tasks.BreakerClosed, be.b.State())
	// A 5xx, a refused message, is not a temporary reply.
	be.b.Report(ctx, &relay.Error{Stage: relay.StageRcpt, Code: 550, Enhanced: "5.1.1"})
	be.b.Report(ctx, fmt.Errorf("x: %w", mail.ErrInvalidAddress))
	assert.Equal(t, tasks.BreakerClosed, be.b.State())
	be.b.Report(ctx, reply)
	assert.Equal(t, tasks.BreakerOpen, be.b.State())
}

// A relay that asks every mail to slow down (throttled: 4.7.x at MAIL or
// DATA) holds the sends as its other temporary replies do; a recipient
// greylisted does not count.
func TestBreakerCountsThrottledReplies(t *testing.T) {
	t.Parallel()
	be := newBreakerEnv(t)
	ctx := t.Context()
	throttled := fmt.Errorf("send mail: %w", &relay.Error{Stage: relay.StageMail, Code: 451, Enhanced: "4.7.1"})
	greylisted := fmt.Errorf("send mail: %w", &relay.Error{Stage: relay.StageRcpt, Code: 450, Enhanced: "4.2.0"})
	for range 2 * tasks.BreakerTempReplies {
		be.b.Report(ctx, greylisted)
	}
	assert.Equal(t, tasks.BreakerClosed, be.b.State())
	for range tasks.BreakerTempReplies {
		be.b.Report(ctx, throttled)
	}
	assert.Equal(t, tasks.BreakerOpen, be.b.State())
}

// A trial send that gets a 4xx opens the breaker again; a trial that ends
// without a report (its code was gone) lets the next one go.
func TestBreakerTrial(t *testing.T) {
	t.Parallel()
	be := newBreakerEnv(t)
	ctx := t.Context()
	for range tasks.BreakerUnreachable {
		be.b.Report(ctx, errors.New("connection refused"))
	}
	require.Equal(t, tasks.BreakerOpen, be.b.State())
	// The server is up: the first probe, a second after the breaker
	// opened, gets through. A breaker that never probes never lets it go.
	first := released(t, wait(ctx, be.b), 10*time.Second)
	require.NoError(t, first.err)
	require.Equal(t, tasks.BreakerHalfOpen, be.b.State())
	second := wait(ctx, be.b)
	blocked(t, second, 200*time.Millisecond)
	first.done() // no report
	r := released(t, second, 5*time.Second)
	require.NoError(t, r.err)

	third := wait(ctx, be.b)
	be.b.Report(ctx, &relay.Error{Stage: relay.StageData, Code: 451, Enhanced: "4.3.0"})
	r.done()
	assert.Equal(t, tasks.BreakerOpen, be.b.State(), "a failed trial opens the breaker again")
	blocked(t, third, 300*time.Millisecond)
	r = released(t, third, 10*time.Second) // probed again a second later, half-open again
	require.NoError(t, r.err)
	be.b.Report(ctx, nil)
	r.done()
	assert.Equal(t, tasks.BreakerClosed, be.b.State())
}

// A send cut off by its own task's end (shutdown, deadline) says nothing
// about the server.
func TestBreakerIgnoresTheTasksOwnEnd(t *testing.T) {
	t.Parallel()
	be := newBreakerEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for range 2 * tasks.BreakerUnreachable {
		be.b.Report(ctx, fmt.Errorf("mail: DATA: %w", context.DeadlineExceeded))
	}
	assert.Equal(t, tasks.BreakerClosed, be.b.State())
}

// Close lets the waiting sends go with ErrSMTPUnavailable, which asynq does
// not count as a failure; a waiting send whose ctx ends gets ctx's error.
func TestBreakerClose(t *testing.T) {
	t.Parallel()
	be := newBreakerEnv(t)
	require.NoError(t, be.smtp.Stop())
	for range tasks.BreakerUnreachable {
		be.b.Report(t.Context(), errors.New("connection refused"))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	short := wait(ctx, be.b)
	long := wait(t.Context(), be.b)
	assert.ErrorIs(t, released(t, short, 5*time.Second).err, context.DeadlineExceeded)
	blocked(t, long, 200*time.Millisecond)

	be.b.Close()
	err := released(t, long, 5*time.Second).err
	require.ErrorIs(t, err, tasks.ErrSMTPUnavailable)
	assert.False(t, tasks.IsFailure(err))
	assert.True(t, tasks.IsFailure(errors.New("smtp: server replied 451")))
	_, err = be.b.Wait(t.Context())
	assert.ErrorIs(t, err, tasks.ErrSMTPUnavailable)
}

// The handler waits at the gate before it reads the code: a send held back
// for the whole outage mails the code and lifetime live when it goes.
func TestSendCodeHandlerWaitsAtTheGate(t *testing.T) {
	t.Parallel()
	be := newBreakerEnv(t)
	be.h = be.handler(t, func(c *tasks.HandlerConfig) { c.Mailer = be.b.Watch(c.Mailer) }, tasks.Hold(be.b))
	ctx := t.Context()
	issued, err := be.store.GetOrCreate(ctx, codes.ID{Email: "held@example.com"})
	require.NoError(t, err)
	require.NoError(t, be.smtp.Stop())
	for range tasks.BreakerUnreachable {
		err := be.h.ProcessTask(ctx, be.task(t, "held@example.com", "en"))
		require.Error(t, err)
		assert.True(t, tasks.IsFailure(err), "a failed send is a failure")
	}
	require.Equal(t, tasks.BreakerOpen, be.b.State())

	res := make(chan error, 1)
	task := be.task(t, "held@example.com", "en")
	go func() { res <- be.h.ProcessTask(ctx, task) }()
	select {
	case err := <-res:
		t.Fatalf("the handler did not wait: %v", err)
	case <-time.After(1500 * time.Millisecond):
	}
	require.NoError(t, be.smtp.Restart())
	select {
	case err := <-res:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the handler still waits after SMTP came back")
	}
	msgs := be.smtp.Messages()
	require.Len(t, msgs, 1)
	assert.Contains(t, msgs[0].Text, issued.Code)
	assert.Equal(t, tasks.BreakerClosed, be.b.State())
}

// At shutdown a held task goes back to the queue with no retry counted; one
// on its last attempt, which asynq would archive for any error, waits
// instead and asynq puts it back at the end of its shutdown timeout. Both
// through a real asynq server.
func TestBreakerCloseAtShutdownKeepsTasks(t *testing.T) {
	t.Parallel()
	be := newBreakerEnv(t)
	for range tasks.BreakerUnreachable {
		be.b.Report(t.Context(), errors.New("connection refused"))
	}
	require.NoError(t, be.smtp.Stop()) // the probes fail: the breaker stays open
	client := asynq.NewClientFromRedisClient(be.rdb)
	for i, maxRetry := range []int{tasks.MaxRetry, 0} {
		task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{
			Email: fmt.Sprintf("held%d@example.com", i), RequestedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour),
		})
		require.NoError(t, err)
		_, err = client.Enqueue(task, asynq.MaxRetry(maxRetry))
		require.NoError(t, err)
	}
	srv := asynq.NewServerFromRedisClient(be.rdb, asynq.Config{
		Concurrency: 2, Queues: map[string]int{tasks.Queue: 1}, IsFailure: tasks.IsFailure,
		RetryDelayFunc: tasks.RetryDelay, ShutdownTimeout: time.Second, LogLevel: asynq.FatalLevel,
	})
	be.h = be.handler(t, func(c *tasks.HandlerConfig) { c.Mailer = be.b.Watch(c.Mailer) }, tasks.Hold(be.b))
	require.NoError(t, srv.Start(be.h))
	insp := asynq.NewInspectorFromRedisClient(be.rdb)
	require.Eventually(t, func() bool {
		info, err := insp.GetQueueInfo(tasks.Queue)
		return err == nil && info.Active == 2
	}, 5*time.Second, 20*time.Millisecond, "both tasks held")

	srv.Stop()
	be.b.Close()
	srv.Shutdown()
	info, err := insp.GetQueueInfo(tasks.Queue)
	require.NoError(t, err)
	assert.Zero(t, info.Archived, "nothing archived")
	assert.Zero(t, info.Failed, "no failed attempt")
	assert.Equal(t, 2, info.Pending+info.Retry)
	retry, err := insp.ListRetryTasks(tasks.Queue)
	require.NoError(t, err)
	pending, err := insp.ListPendingTasks(tasks.Queue)
	require.NoError(t, err)
	for _, ti := range append(retry, pending...) {
		assert.Zero(t, ti.Retried, "%s: no retry counted", ti.ID)
	}
}
