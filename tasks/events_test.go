package tasks_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/events"
	"github.com/verifyq/verifyq/internal/eventstest"
	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/relay"
	"github.com/verifyq/verifyq/tasks"
)

// Each way an attempt ends emits its event, with the send's data and no
// code: code.sent, code.retrying (a 4xx), code.undeliverable (a 5xx
// refusal of the recipient); a code that is gone emits nothing.
func TestHandlerEmitsEvents(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		fault   *smtptest.Fault
		noCode  bool
		want    []events.Type
		failure delivery.Class
		reply   int
	}{
		{name: "sent", want: []events.Type{events.CodeSent}},
		{name: "retrying", fault: &smtptest.Fault{Stage: smtptest.StageData, Code: 451, EnhancedCode: [3]int{4, 3, 0}},
			want: []events.Type{events.CodeRetrying}, failure: delivery.RelayDeferred, reply: 451},
		{name: "undeliverable", fault: &smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, EnhancedCode: [3]int{5, 1, 1}},
			want: []events.Type{events.CodeUndeliverable}, failure: delivery.RecipientRefused, reply: 550},
		{name: "code gone", noCode: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			ctx := context.Background()
			id := codes.ID{Purpose: "login", Email: "ev@example.com"}
			var code string
			if !tt.noCode {
				issued, err := e.store.GetOrCreate(ctx, id)
				require.NoError(t, err)
				code = issued.Code
			}
			if tt.fault != nil {
				e.smtp.SetFault(*tt.fault)
			}
			log := &eventstest.Recorder{}
			h := e.handler(t, func(c *tasks.HandlerConfig) { c.Events = log })
			task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{Email: id.Email, Purpose: id.Purpose, RequestedAt: time.Now(),
				ExpiresAt: time.Now().Add(10 * time.Minute)})
			require.NoError(t, err)
			_ = h.ProcessTask(ctx, task)

			assert.Equal(t, tt.want, log.Types())
			for _, ev := range log.Events() {
				assert.Equal(t, id.Email, ev.Data.Email)
				assert.Equal(t, id.Purpose, ev.Data.Purpose)
				assert.Equal(t, 1, ev.Data.Attempt)
				assert.Equal(t, string(tt.failure), ev.Data.Failure)
				assert.Equal(t, tt.reply, ev.Data.Reply)
				b, err := ev.Body()
				require.NoError(t, err)
				assert.NotContains(t, string(b), code, "no code in an event")
			}
			expiry, expires := log.Scheduled()
			if tt.noCode {
				assert.Empty(t, expiry, "no expiry check for a code that is gone")
			} else {
				assert.Len(t, expiry, 1, "the code's expiry check is scheduled")
				assert.WithinDuration(t, time.Now().Add(10*time.Minute), expires[0], 5*time.Second, "at the code's expiry")
			}
		})
	}
}

// A task that runs again after its mail was accepted emits code.sent
// again under the same webhook-id (its first run may have ended before it
// queued it), and the sent event names the task.
func TestHandlerEmitsSentAgainUnderTheSameID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.store.GetOrCreate(ctx, codes.ID{Email: "again@example.com"})
	require.NoError(t, err)
	log := &eventstest.Recorder{}
	h := e.handler(t, func(c *tasks.HandlerConfig) { c.Events = log })
	client := asynq.NewClientFromRedisClient(e.rdb)
	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{
		Concurrency: 1, Queues: map[string]int{tasks.Queue: 1}, TaskCheckInterval: 50 * time.Millisecond, LogLevel: asynq.FatalLevel,
	})
	require.NoError(t, srv.Start(h))
	t.Cleanup(srv.Shutdown)
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	for i := range 2 {
		_, err := client.EnqueueContext(ctx, e.task(t, "again@example.com", ""), asynq.TaskID("task-again"))
		require.NoError(t, err, "run %d", i)
		require.Eventually(t, func() bool { return len(log.Events()) == i+1 }, 5*time.Second, 20*time.Millisecond)
		// The event is emitted inside the handler; asynq removes the task
		// only after it returns, and until then the ID is taken.
		require.Eventually(t, func() bool {
			_, err := insp.GetTaskInfo(tasks.Queue, "task-again")
			return errors.Is(err, asynq.ErrTaskNotFound)
		}, 5*time.Second, 10*time.Millisecond, "run %d's task is done", i)
	}
	evs := log.Events()
	assert.Equal(t, 1, e.smtp.Count(), "one mail")
	assert.Equal(t, []events.Type{events.CodeSent, events.CodeSent}, log.Types())
	assert.Equal(t, evs[0].ID(), evs[1].ID())
	assert.Equal(t, "task-again", evs[0].Data.TaskID)
	assert.Equal(t, "task-again", evs[1].Data.TaskID)
}

// Two retrying attempts of one task are two facts: two webhook-ids.
func TestRetryingEventsDifferByAttempt(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.store.GetOrCreate(ctx, codes.ID{Email: "r2@example.com"})
	require.NoError(t, err)
	e.smtp.SetFault(smtptest.Fault{Stage: smtptest.StageData, Code: 451})
	log := &eventstest.Recorder{}
	h := e.handler(t, func(c *tasks.HandlerConfig) { c.Events = log })
	client := asynq.NewClientFromRedisClient(e.rdb)
	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{
		Concurrency: 1, Queues: map[string]int{tasks.Queue: 1}, TaskCheckInterval: 50 * time.Millisecond, LogLevel: asynq.FatalLevel,
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return 0 },
		DelayedTaskCheckInterval: 100 * time.Millisecond,
	})
	require.NoError(t, srv.Start(h))
	t.Cleanup(srv.Shutdown)
	_, err = client.EnqueueContext(ctx, e.task(t, "r2@example.com", ""), asynq.TaskID("task-r2"), asynq.MaxRetry(1))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(log.Events()) == 2 }, 10*time.Second, 20*time.Millisecond)
	evs := log.Events()
	assert.Equal(t, []events.Type{events.CodeRetrying, events.CodeUndeliverable}, log.Types(),
		"the last attempt's failure gives the send up")
	assert.Equal(t, []int{1, 2}, []int{evs[0].Data.Attempt, evs[1].Data.Attempt})
	assert.NotEqual(t, evs[0].ID(), evs[1].ID())
	assert.Equal(t, []string{"task-r2", "task-r2"}, []string{evs[0].Data.TaskID, evs[1].Data.TaskID})
}

// The breaker tells its Notify when it opens and when it closes again,
// and RelayEvents makes relay.failing and relay.recovered of them, both
// of one outage under the worker, the relay and the time it opened.
func TestBreakerNotifiesRelayEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	log := &eventstest.Recorder{}
	notify := tasks.RelayEvents(log, tasks.RelayPrimary, "host:1")
	b, err := tasks.NewBreaker(tasks.BreakerConfig{Probe: e.sender.Probe, ProbeTimeout: 500 * time.Millisecond, Notify: notify})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	require.NoError(t, e.smtp.Stop())
	for range tasks.BreakerUnreachable {
		b.Report(t.Context(), sendOnce(t, e))
	}
	require.Equal(t, tasks.BreakerOpen, b.State())
	require.Eventually(t, func() bool { return len(log.Events()) == 1 }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, e.smtp.Restart())
	require.Eventually(t, func() bool { return b.State() == tasks.BreakerHalfOpen }, 5*time.Second, 10*time.Millisecond)
	b.Report(t.Context(), sendOnce(t, e))
	require.Eventually(t, func() bool { return len(log.Events()) == 2 }, 5*time.Second, 10*time.Millisecond)

	evs := log.Events()
	assert.Equal(t, []events.Type{events.RelayFailing, events.RelayRecovered}, log.Types())
	assert.Equal(t, events.Data{Relay: tasks.RelayPrimary, Worker: "host:1", Failure: string(delivery.RelayDeferred)}, evs[0].Data)
	assert.Equal(t, tasks.RelayPrimary, evs[1].Data.Relay)
	assert.Positive(t, evs[1].Data.OpenMS)
	assert.Equal(t, evs[0].Fact, evs[1].Fact, "one outage")
	assert.NotEqual(t, evs[0].ID(), evs[1].ID())
}

func sendOnce(t *testing.T, e *env) error {
	t.Helper()
	msg, err := mail.Compose("no-reply@verifyq.test", mail.Message{To: "b@example.com", Locale: mail.LocaleEN, Code: "123456", ExpiresIn: time.Minute})
	require.NoError(t, err)
	return e.sender.Send(t.Context(), relay.Envelope{From: "no-reply@verifyq.test", To: "b@example.com"}, msg)
}

// The code's expiry check is queued after the record of a mail sent, not
// between the relay's acceptance and that record: a round trip there
// would widen the window in which a killed worker leaves a mail sent and
// unrecorded, to be mailed again.
func TestExpiryScheduledAfterTheSentRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	id := codes.ID{Email: "order@example.com"}
	_, err := e.store.GetOrCreate(ctx, id)
	require.NoError(t, err)
	var order []string
	ev := &orderedEvents{Recorder: &eventstest.Recorder{}, order: &order}
	rec := &orderedDeliveries{Deliveries: e.cfg.Deliveries, order: &order}
	h := e.handler(t, func(c *tasks.HandlerConfig) { c.Events, c.Deliveries = ev, rec })
	require.NoError(t, h.ProcessTask(ctx, e.task(t, id.Email, "")))
	assert.Equal(t, []string{"sent", "expiry"}, order)
}

type orderedEvents struct {
	*eventstest.Recorder
	order *[]string
}

func (o *orderedEvents) ScheduleExpiry(ctx context.Context, id codes.ID, task string, at time.Time) error {
	*o.order = append(*o.order, "expiry")
	return o.Recorder.ScheduleExpiry(ctx, id, task, at)
}

type orderedDeliveries struct {
	tasks.Deliveries
	order *[]string
}

func (o *orderedDeliveries) Sent(ctx context.Context, id codes.ID, taskID string, a delivery.Acceptance) error {
	*o.order = append(*o.order, "sent")
	return o.Deliveries.Sent(ctx, id, taskID, a)
}
