package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/tasks"
)

// The worker's middleware through a real asynq server: every line of the
// task carries its ID and queue (Logging), and the observer sees the
// attempt (Observe), in the order the worker uses them.
func TestMiddlewareThroughAsynq(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := &recorder{}
	ctx := context.Background()
	_, err := e.store.GetOrCreate(ctx, codes.ID{Email: "mw@example.com"})
	require.NoError(t, err)
	info, err := asynq.NewClientFromRedisClient(e.rdb).Enqueue(e.task(t, "mw@example.com", "en"))
	require.NoError(t, err)

	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{
		Concurrency: 1, Queues: map[string]int{tasks.Queue: 1}, LogLevel: asynq.FatalLevel,
	})
	require.NoError(t, srv.Start(e.handler(t, nil, tasks.Logging(e.cfg.Logger), tasks.Observe(rec))))
	t.Cleanup(srv.Shutdown)

	require.Eventually(t, func() bool {
		_, results, _ := rec.snapshot()
		return len(results) == 1
	}, 10*time.Second, 20*time.Millisecond)
	_, results, _ := rec.snapshot()
	assert.Equal(t, tasks.OutcomeSent, results[0].Outcome)
	assert.Positive(t, results[0].SMTP, "the handler filled in the observer's result")

	var line map[string]any
	for _, l := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m))
		if m["msg"] == "code mailed" {
			line = m
		}
	}
	require.NotNil(t, line, "the handler logged the mail: %s", e.logs.String())
	assert.Equal(t, info.ID, line["task_id"])
	assert.Equal(t, tasks.Queue, line["queue"])
	assert.Equal(t, "m***@example.com", line["email"])
}

// ReserveStack hands the task and its context on as they are, and the
// handler's error back.
func TestReserveStack(t *testing.T) {
	t.Parallel()
	type key struct{}
	want := errors.New("the handler's error")
	task := asynq.NewTask(tasks.TypeSendCode, []byte(`{}`))
	var got *asynq.Task
	var value any
	h := tasks.ReserveStack(asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		got, value = t, ctx.Value(key{})
		return want
	}))
	done := make(chan error)
	go func() { done <- h.ProcessTask(context.WithValue(context.Background(), key{}, "v"), task) }()
	require.ErrorIs(t, <-done, want)
	assert.Same(t, task, got)
	assert.Equal(t, "v", value)
}
