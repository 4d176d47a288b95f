package tasks_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/tasks"
)

// With sealed codes the worker mails the code the task carries, opened,
// only while the live MAC is still its; it never mails a MAC.
func TestSendCodeHandlerSealed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	seal, err := codes.NewSeal([]byte("a test secret of 32 bytes, 01234"), nil)
	require.NoError(t, err)
	store, err := codes.NewStore(e.rdb, codes.Config{KeyPrefix: "code_", TTL: 10 * time.Minute, Length: 6, Seal: seal})
	require.NoError(t, err)
	h := e.handler(t, func(c *tasks.HandlerConfig) { c.Seal = seal })

	task := func(issued codes.Issued) *asynq.Task {
		task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{Email: "s@example.com", Locale: "en", SealedCode: issued.Sealed,
			RequestedAt: time.Now(), ExpiresAt: time.Now().Add(10 * time.Minute)})
		require.NoError(t, err)
		assert.NotContains(t, string(task.Payload()), issued.Code, "no code in the payload")
		return task
	}
	first, err := store.GetOrCreate(ctx, codes.ID{Email: "s@example.com"})
	require.NoError(t, err)
	firstTask := task(first)
	var second codes.Issued
	for second.Code == "" || second.Code == first.Code {
		second, err = store.GetOrCreate(ctx, codes.ID{Email: "s@example.com"})
		require.NoError(t, err)
	}

	// The first task's code was replaced: nothing is mailed.
	require.NoError(t, h.ProcessTask(ctx, firstTask))
	require.NoError(t, h.ProcessTask(ctx, task(second)))
	msgs := e.smtp.WaitMessages(t, 1, 5*time.Second)
	assert.Contains(t, msgs[0].Text, second.Code)
	time.Sleep(100 * time.Millisecond)
	assert.Len(t, e.smtp.Messages(), 1, "the replaced code is not mailed")
	require.NoError(t, store.Verify(ctx, codes.ID{Email: "s@example.com"}, second.Code))

	// A worker without the secret fails such a task for good.
	plain := e.handler(t, nil)
	third, err := store.GetOrCreate(ctx, codes.ID{Email: "s@example.com"})
	require.NoError(t, err)
	err = plain.ProcessTask(ctx, task(third))
	assert.ErrorIs(t, err, asynq.SkipRetry)
	// A plain task on a sealed store never mails the MAC.
	require.NoError(t, h.ProcessTask(ctx, e.task(t, "s@example.com", "en")))
	time.Sleep(100 * time.Millisecond)
	assert.Len(t, e.smtp.Messages(), 1)
}

func TestFormatPayloadHidesSealedCode(t *testing.T) {
	t.Parallel()
	task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{Email: "who@example.com", Purpose: "login", SealedCode: "0a1b2c3d.c2VhbGVk", ExpiresAt: time.Now().Add(time.Minute)})
	require.NoError(t, err)
	got := tasks.FormatPayload(task.Type(), task.Payload())
	assert.NotContains(t, got, "c2VhbGVk")
	assert.Contains(t, got, `"sealed_code":"(sealed)"`)
	assert.Contains(t, got, `"purpose":"login"`)
}
