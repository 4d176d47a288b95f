package tasks_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/tasks"
)

// recorder is a hand-written tasks.Observer.
type recorder struct {
	mu       sync.Mutex
	inFlight int
	results  []tasks.SendResult
	expired  int
}

var _ tasks.Observer = (*recorder)(nil)

func (r *recorder) SendStarted() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight++
}

func (r *recorder) SendFinished(res tasks.SendResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight--
	r.results = append(r.results, res)
}

func (r *recorder) TaskExpired() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expired++
}

func (r *recorder) snapshot() (inFlight int, results []tasks.SendResult, expired int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inFlight, append([]tasks.SendResult(nil), r.results...), r.expired
}

func TestObserverOutcomes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		code    bool // a live code exists
		fault   *smtptest.Fault
		payload []byte // replaces the task when set
		want    tasks.Outcome
		smtp    bool
	}{
		{name: "sent", code: true, want: tasks.OutcomeSent, smtp: true},
		{name: "code gone", want: tasks.OutcomeExpired},
		{name: "550", code: true, fault: &smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550}, want: tasks.OutcomeFailed, smtp: true},
		{name: "451", code: true, fault: &smtptest.Fault{Stage: smtptest.StageData, Code: 451}, want: tasks.OutcomeRetried, smtp: true},
		{name: "bad payload", payload: []byte("{"), want: tasks.OutcomeFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			rec := &recorder{}
			e.h = e.handler(t, nil, tasks.Observe(rec))
			ctx := context.Background()
			if tt.code {
				_, err := e.store.GetOrCreate(ctx, codes.ID{Email: "o@example.com"})
				require.NoError(t, err)
			}
			if tt.fault != nil {
				e.smtp.SetFault(*tt.fault)
			}
			task := e.task(t, "o@example.com", "en")
			if tt.payload != nil {
				task = asynq.NewTask(tasks.TypeSendCode, tt.payload)
			}
			_ = e.h.ProcessTask(ctx, task)

			inFlight, results, _ := rec.snapshot()
			assert.Zero(t, inFlight, "every start is finished")
			require.Len(t, results, 1)
			res := results[0]
			assert.Equal(t, tt.want, res.Outcome)
			assert.Equal(t, tt.smtp, res.SMTP > 0, "SMTP timed only when tried: %v", res.SMTP)
			assert.Equal(t, tt.smtp && tt.want != tasks.OutcomeSent, res.SMTPErr)
			if tt.want == tasks.OutcomeSent {
				assert.Greater(t, res.SinceRequest, time.Duration(0))
				assert.GreaterOrEqual(t, res.SinceRequest, res.SMTP)
			} else {
				assert.Zero(t, res.SinceRequest)
			}
		})
	}
}

func TestObserverInFlight(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := &recorder{}
	e.h = e.handler(t, nil, tasks.Observe(rec))
	ctx := context.Background()
	_, err := e.store.GetOrCreate(ctx, codes.ID{Email: "slow@example.com"})
	require.NoError(t, err)
	e.smtp.SetFault(smtptest.Fault{Stage: smtptest.StageData, Hang: true})

	done := make(chan struct{})
	task := e.task(t, "slow@example.com", "")
	go func() {
		defer close(done)
		_ = e.h.ProcessTask(ctx, task)
	}()
	require.Eventually(t, func() bool { n, _, _ := rec.snapshot(); return n == 1 }, 5*time.Second, 10*time.Millisecond)
	e.smtp.ClearFault()
	<-done
	n, results, _ := rec.snapshot()
	assert.Zero(t, n)
	require.Len(t, results, 1)
}

// Through a real asynq server: the last failed retry counts as failed, and a
// task whose deadline passed in the queue is reported by ErrorHandler.
func TestObserverThroughAsynq(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := &recorder{}
	e.h = e.handler(t, nil, tasks.Observe(rec))
	ctx := context.Background()
	_, err := e.store.GetOrCreate(ctx, codes.ID{Email: "last@example.com"})
	require.NoError(t, err)
	e.smtp.SetFault(smtptest.Fault{Stage: smtptest.StageData, Code: 451})

	client := asynq.NewClientFromRedisClient(e.rdb)
	_, err = client.Enqueue(e.task(t, "last@example.com", ""), asynq.MaxRetry(0))
	require.NoError(t, err)
	stale, err := tasks.NewSendCodeTask(tasks.SendCodePayload{
		Email: "stale@example.com", RequestedAt: time.Now().Add(-time.Hour), ExpiresAt: time.Now().Add(-time.Minute),
	})
	require.NoError(t, err)
	_, err = client.Enqueue(stale, asynq.MaxRetry(0))
	require.NoError(t, err)

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{
		Concurrency:  2,
		Queues:       map[string]int{tasks.Queue: 1},
		ErrorHandler: tasks.ErrorHandler(quiet, rec),
		LogLevel:     asynq.FatalLevel,
	})
	mux := asynq.NewServeMux()
	mux.Handle(tasks.TypeSendCode, e.h)
	require.NoError(t, srv.Start(mux))
	t.Cleanup(srv.Shutdown)

	require.Eventually(t, func() bool {
		_, results, expired := rec.snapshot()
		return len(results) == 1 && expired == 1
	}, 10*time.Second, 20*time.Millisecond)
	_, results, _ := rec.snapshot()
	assert.Equal(t, tasks.OutcomeFailed, results[0].Outcome, "no retry left: archived")
}

func TestFormatPayloadMasksAddress(t *testing.T) {
	t.Parallel()
	task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{
		Email: "Someone@Example.com", Locale: "en", ExpiresAt: time.Date(2026, 1, 1, 0, 10, 0, 0, time.UTC),
	})
	require.NoError(t, err)
	got := tasks.FormatPayload(task.Type(), task.Payload())
	assert.Contains(t, got, `"email":"S***@Example.com"`)
	assert.Contains(t, got, `"locale":"en"`)
	assert.NotContains(t, got, "Someone")

	assert.Equal(t, "(1 bytes, not a valid code:send payload)", tasks.FormatPayload(tasks.TypeSendCode, []byte("{")))
	assert.Equal(t, "(6 bytes)", tasks.FormatPayload("other", []byte("secret")))
}
