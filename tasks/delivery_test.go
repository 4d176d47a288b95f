package tasks_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/tasks"
)

func (e *env) status(t *testing.T, email string) delivery.Status {
	t.Helper()
	st, err := e.records.Status(context.Background(), codes.ID{Email: email}, time.Now())
	require.NoError(t, err)
	return st
}

// Each attempt leaves the status that says what happened: retrying with
// the failure's class and when the next attempt is due (as asynq has the
// retry scheduled: the status asks it), then sent.
func TestHandlerRecordsStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.store.GetOrCreate(ctx, codes.ID{Email: "s@example.com"})
	require.NoError(t, err)
	assert.Equal(t, delivery.StateQueued, e.status(t, "s@example.com").State)

	const queue = "records-status"
	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{
		Concurrency: 1, Queues: map[string]int{queue: 1}, TaskCheckInterval: 50 * time.Millisecond,
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Minute },
		LogLevel:       asynq.FatalLevel,
	})
	mux := asynq.NewServeMux()
	mux.Handle(tasks.TypeSendCode, e.h)
	require.NoError(t, srv.Start(mux))
	t.Cleanup(srv.Shutdown)
	insp := asynq.NewInspectorFromRedisClient(e.rdb)

	e.smtp.SetFault(smtptest.Fault{Stage: smtptest.StageData, Code: 451})
	info, err := asynq.NewClientFromRedisClient(e.rdb).EnqueueContext(ctx, e.task(t, "s@example.com", ""), asynq.Queue(queue))
	require.NoError(t, err)
	var retry *asynq.TaskInfo
	require.Eventually(t, func() bool {
		retry, err = insp.GetTaskInfo(queue, info.ID)
		return err == nil && retry.State == asynq.TaskStateRetry
	}, 5*time.Second, 20*time.Millisecond)
	st := e.status(t, "s@example.com")
	assert.Equal(t, delivery.StateRetrying, st.State)
	assert.Equal(t, 1, st.Attempts)
	assert.Equal(t, delivery.RelayDeferred, st.LastFailure)
	assert.Equal(t, 451, st.Reply)
	assert.InDelta(t, time.Until(retry.NextProcessAt).Seconds(), st.NextAttemptIn.Seconds(), 1.5,
		"the time asynq will run it")
	assert.Greater(t, st.NextAttemptIn, 50*time.Second)

	e.smtp.ClearFault()
	require.NoError(t, insp.RunTask(queue, info.ID))
	require.Eventually(t, func() bool { return e.status(t, "s@example.com").State == delivery.StateSent },
		5*time.Second, 20*time.Millisecond)
	st = e.status(t, "s@example.com")
	assert.Equal(t, 2, st.Attempts)
	assert.Zero(t, st.NextAttemptIn)
	assert.WithinDuration(t, time.Now(), st.SentAt, 5*time.Second)
	assert.Equal(t, e.smtp.WaitMessages(t, 1, 5*time.Second)[0].Accepted.UnixMilli()/1000, st.SentAt.UnixMilli()/1000)
}

// An SMTP 5xx makes the address undeliverable: the status says so with the
// reply code, and the mailbox goes on the suppression list.
func TestHandlerSuppressesAfterPermanentFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	sup := delivery.NewSuppressions(e.rdb, mail.Identity{})
	e.h = e.handler(t, func(c *tasks.HandlerConfig) { c.Suppressor, c.SuppressFor = sup, time.Hour })
	_, err := e.store.GetOrCreate(ctx, codes.ID{Email: "dead@example.com"})
	require.NoError(t, err)
	e.smtp.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, EnhancedCode: [3]int{5, 1, 1}})

	err = e.h.ProcessTask(ctx, e.task(t, "dead@example.com", ""))
	require.ErrorIs(t, err, asynq.SkipRetry)
	st := e.status(t, "dead@example.com")
	assert.Equal(t, delivery.StateUndeliverable, st.State)
	assert.Equal(t, 550, st.Reply)
	l, err := limits.New(e.rdb, limits.Config{}, e.store)
	require.NoError(t, err)
	_, err = l.Admit(ctx, limits.Request{Email: "dead@example.com"})
	assert.ErrorIs(t, err, delivery.ErrSuppressed, "the next send is refused")
	list, _, err := sup.List(ctx, delivery.Filter{}, 10)
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, delivery.ReasonRecipientRefused, list[0].Reason)
	assert.Equal(t, 550, list[0].Reply)
	assert.Equal(t, "5.1.1", list[0].Enhanced)
	assert.NotContains(t, list[0].Diagnostic, "dead@example.com")
	assert.Equal(t, "d***@example.com", list[0].Masked)
	assert.WithinDuration(t, list[0].Added.Add(time.Hour), list[0].Expires, 0)
	_, err = l.Admit(ctx, limits.Request{Email: "Dead@example.com"})
	assert.NoError(t, err, "another spelling is not suppressed")

	e2 := newEnv(t)
	e2.h = e2.handler(t, func(c *tasks.HandlerConfig) { c.Suppressor = delivery.NewSuppressions(e2.rdb, mail.Identity{}) })
	_, err = e2.store.GetOrCreate(ctx, codes.ID{Email: "dead@example.com"})
	require.NoError(t, err)
	e2.smtp.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550})
	require.ErrorIs(t, e2.h.ProcessTask(ctx, e2.task(t, "dead@example.com", "")), asynq.SkipRetry)
	l2, err := limits.New(e2.rdb, limits.Config{}, e2.store)
	require.NoError(t, err)
	_, err = l2.Admit(ctx, limits.Request{Email: "dead@example.com"})
	assert.NoError(t, err, "SUPPRESS_FOR=0: no suppression")
}

// A task that runs again after its mail was accepted (Redis lost the
// acknowledgement) sends no second mail: the real queue runs it twice under
// one task ID.
func TestTaskMailsOnceUnderItsID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.store.GetOrCreate(ctx, codes.ID{Email: "once@example.com"})
	require.NoError(t, err)

	client := asynq.NewClientFromRedisClient(e.rdb)
	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{
		Concurrency: 1, Queues: map[string]int{tasks.Queue: 1}, TaskCheckInterval: 50 * time.Millisecond,
		LogLevel: asynq.FatalLevel,
	})
	mux := asynq.NewServeMux()
	mux.Handle(tasks.TypeSendCode, e.h)
	require.NoError(t, srv.Start(mux))
	t.Cleanup(srv.Shutdown)

	for i := range 2 {
		_, err := client.EnqueueContext(ctx, e.task(t, "once@example.com", ""), asynq.TaskID("the-same-task"))
		require.NoError(t, err, "run %d", i)
		require.Eventually(t, func() bool {
			q, err := asynq.NewInspectorFromRedisClient(e.rdb).GetQueueInfo(tasks.Queue)
			return err == nil && q.Pending == 0 && q.Active == 0
		}, 5*time.Second, 20*time.Millisecond)
	}
	e.smtp.WaitMessages(t, 1, 5*time.Second)
	time.Sleep(200 * time.Millisecond)
	assert.Equal(t, 1, e.smtp.Count(), "one mail for one task")
	assert.Contains(t, e.logs.String(), "task sent its mail before")

	_, err = client.EnqueueContext(ctx, e.task(t, "once@example.com", ""))
	require.NoError(t, err)
	e.smtp.WaitMessages(t, 2, 5*time.Second)
}

// failingSent injects Redis failures into recording a sent mail, in front of
// the real records.
type failingSent struct {
	tasks.Deliveries
	mu    sync.Mutex
	fails int
	calls int
}

func (f *failingSent) Sent(ctx context.Context, id codes.ID, taskID string, a delivery.Acceptance) error {
	f.mu.Lock()
	f.calls++
	fail := f.calls <= f.fails
	f.mu.Unlock()
	if fail {
		return errors.New("dial tcp 127.0.0.1:6379: connection refused")
	}
	return f.Deliveries.Sent(ctx, id, taskID, a)
}

// When Redis does not take the record of a sent mail, the handler keeps
// trying in the background, detached from the task: the task itself ends
// well, and the record lands once Redis answers.
func TestSentRecordIsRetriedInTheBackground(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := e.store.GetOrCreate(ctx, codes.ID{Email: "bg@example.com"})
	require.NoError(t, err)
	flaky := &failingSent{Deliveries: e.records, fails: 3}
	cfg := e.cfg
	cfg.Deliveries = flaky
	h, err := tasks.NewSendCodeHandler(cfg)
	require.NoError(t, err)

	require.NoError(t, h.ProcessTask(ctx, e.task(t, "bg@example.com", "")), "the mail went out")
	cancel() // the task is over; the record must not depend on it
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	require.NoError(t, h.Wait(wctx))
	assert.Equal(t, 4, flaky.calls, "tried until Redis took it")
	assert.Equal(t, delivery.StateSent, e.status(t, "bg@example.com").State)
}
