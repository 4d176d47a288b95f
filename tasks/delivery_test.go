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
	"github.com/verifyq/verifyq/internal/servicetest"
	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/tasks"
)

func (e *env) status(t *testing.T, email string) codes.Status {
	t.Helper()
	st, err := e.store.Status(context.Background(), codes.ID{Email: email}, time.Now())
	require.NoError(t, err)
	return st
}

// Each attempt leaves the status that says what happened: retrying with
// the failure's class and when the next attempt is due (the delay asynq
// will use), then sent.
func TestHandlerRecordsStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.store.GetOrCreate(ctx, codes.Request{Email: "s@example.com"})
	require.NoError(t, err)
	assert.Equal(t, codes.StateQueued, e.status(t, "s@example.com").State)

	e.smtp.SetFault(smtptest.Fault{Stage: smtptest.StageData, Code: 451})
	task := e.task(t, "s@example.com", "")
	require.Error(t, e.h.ProcessTask(ctx, task))
	st := e.status(t, "s@example.com")
	assert.Equal(t, codes.StateRetrying, st.State)
	assert.Equal(t, 1, st.Attempts)
	assert.Equal(t, mail.FailureTemporary, st.LastFailure)
	assert.Equal(t, 451, st.Reply)
	assert.InDelta(t, tasks.RetryDelay(0, nil, task).Seconds(), st.NextAttemptIn.Seconds(), 0.2,
		"the delay asynq will wait")

	e.smtp.ClearFault()
	require.NoError(t, e.h.ProcessTask(ctx, task))
	st = e.status(t, "s@example.com")
	assert.Equal(t, codes.StateSent, st.State)
	assert.Equal(t, 2, st.Attempts)
	assert.WithinDuration(t, time.Now(), st.SentAt, 5*time.Second)
	assert.Equal(t, e.smtp.WaitMessages(t, 1, 5*time.Second)[0].Accepted.UnixMilli()/1000, st.SentAt.UnixMilli()/1000)
}

// An SMTP 5xx makes the address undeliverable: the status says so with the
// reply code, and the mailbox goes on the suppression list.
func TestHandlerSuppressesAfterPermanentFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.h.Suppressor = codes.NewSuppressions(e.rdb, mail.Identity{})
	e.h.SuppressFor = time.Hour
	_, err := e.store.GetOrCreate(ctx, codes.Request{Email: "dead@example.com"})
	require.NoError(t, err)
	e.smtp.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, EnhancedCode: [3]int{5, 1, 1}})

	err = e.h.ProcessTask(ctx, e.task(t, "dead@example.com", ""))
	require.ErrorIs(t, err, asynq.SkipRetry)
	st := e.status(t, "dead@example.com")
	assert.Equal(t, codes.StateUndeliverable, st.State)
	assert.Equal(t, 550, st.Reply)
	_, err = e.store.GetOrCreate(ctx, codes.Request{Email: "dead@example.com"})
	assert.ErrorIs(t, err, codes.ErrSuppressed, "the next send is refused")

	e.h.SuppressFor = 0
	e2 := newEnv(t)
	e2.h.Suppressor = codes.NewSuppressions(e2.rdb, mail.Identity{})
	_, err = e2.store.GetOrCreate(ctx, codes.Request{Email: "dead@example.com"})
	require.NoError(t, err)
	e2.smtp.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550})
	require.ErrorIs(t, e2.h.ProcessTask(ctx, e2.task(t, "dead@example.com", "")), asynq.SkipRetry)
	_, err = e2.store.GetOrCreate(ctx, codes.Request{Email: "dead@example.com"})
	assert.NoError(t, err, "SUPPRESS_FOR=0: no suppression")
}

// A task that runs again after its mail was accepted (Redis lost the
// acknowledgement) sends no second mail: the real queue runs it twice under
// one task ID.
func TestTaskMailsOnceUnderItsID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.store.GetOrCreate(ctx, codes.Request{Email: "once@example.com"})
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
// the real reader.
type failingSent struct {
	tasks.Deliveries
	mu    sync.Mutex
	fails int
	calls int
}

func (f *failingSent) Sent(ctx context.Context, id codes.ID, taskID string, at time.Time) error {
	f.mu.Lock()
	f.calls++
	fail := f.calls <= f.fails
	f.mu.Unlock()
	if fail {
		return errors.New("dial tcp 127.0.0.1:6379: connection refused")
	}
	return f.Deliveries.Sent(ctx, id, taskID, at)
}

// When Redis does not take the record of a sent mail, the handler keeps
// trying in the background, detached from the task: the task itself ends
// well, and the record lands once Redis answers.
func TestSentRecordIsRetriedInTheBackground(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := e.store.GetOrCreate(ctx, codes.Request{Email: "bg@example.com"})
	require.NoError(t, err)
	reader, err := codes.NewReader(e.rdb, "code_")
	require.NoError(t, err)
	flaky := &failingSent{Deliveries: reader, fails: 3}
	h := tasks.NewSendCodeHandler(flaky, e.sender, codeTTL, servicetest.Discard)

	require.NoError(t, h.ProcessTask(ctx, e.task(t, "bg@example.com", "")), "the mail went out")
	cancel() // the task is over; the record must not depend on it
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	require.NoError(t, h.Wait(wctx))
	assert.Equal(t, 4, flaky.calls, "tried until Redis took it")
	assert.Equal(t, codes.StateSent, e.status(t, "bg@example.com").State)
}
