package tasks_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
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

	// A worker without the secret fails such a task for good (see
	// TestSendCodeHandlerUndecryptable).
	plain := e.handler(t, nil)
	third, err := store.GetOrCreate(ctx, codes.ID{Email: "s@example.com"})
	require.NoError(t, err)
	err = plain.ProcessTask(ctx, task(third))
	assert.ErrorIs(t, err, asynq.SkipRetry)
	assert.ErrorIs(t, err, codes.ErrSealed)
	// A plain task on a sealed store never mails the MAC.
	require.NoError(t, h.ProcessTask(ctx, e.task(t, "s@example.com", "en")))
	time.Sleep(100 * time.Millisecond)
	assert.Len(t, e.smtp.Messages(), 1)
}

// A task sealed under a secret the worker does not hold (the enqueuer got
// the new CODE_SECRET before the worker, or the worker has none) is never
// a silent "sending": an ERROR line, the failure counted as undecryptable,
// the status undeliverable with that class, the task archived. Re-run on
// a worker that holds the secret (CODE_SECRET=new,old), it is mailed.
func TestSendCodeHandlerUndecryptable(t *testing.T) {
	t.Parallel()
	oldSecret, newSecret := []byte("the old secret, of 32 bytes: 012"), []byte("the new secret, of 32 bytes: 345")
	enqueuer, err := codes.NewSeal(newSecret, oldSecret) // rotated first: the wrong order
	require.NoError(t, err)
	stale, err := codes.NewSeal(oldSecret, nil)
	require.NoError(t, err)
	rotated, err := codes.NewSeal(newSecret, oldSecret)
	require.NoError(t, err)

	for name, workerSeal := range map[string]*codes.Seal{"the old secret alone": stale, "no secret": nil} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			ctx := context.Background()
			store, err := codes.NewStore(e.rdb, codes.Config{KeyPrefix: "code_", TTL: 10 * time.Minute, Length: 6, Seal: enqueuer})
			require.NoError(t, err)
			id := codes.ID{Email: "rotate@example.com"}
			issued, err := store.GetOrCreate(ctx, id)
			require.NoError(t, err)
			task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{Email: id.Email, Locale: "en", SealedCode: issued.Sealed,
				RequestedAt: time.Now(), ExpiresAt: time.Now().Add(10 * time.Minute)})
			require.NoError(t, err)

			rec := &recorder{}
			h := e.handler(t, func(c *tasks.HandlerConfig) { c.Seal = workerSeal }, tasks.Observe(rec))
			err = h.ProcessTask(ctx, task)
			require.ErrorIs(t, err, asynq.SkipRetry, "archived at once: no retry of this worker opens it")
			assert.Contains(t, err.Error(), "undecryptable", "the dashboard's last error leads with the class")

			st, err := e.records.Status(ctx, id, time.Now())
			require.NoError(t, err)
			assert.Equal(t, delivery.StateUndeliverable, st.State, "never a silent sending")
			assert.Equal(t, delivery.Undecryptable, st.LastFailure)
			_, results, _ := rec.snapshot()
			require.Len(t, results, 1)
			assert.Equal(t, tasks.OutcomeFailed, results[0].Outcome)
			assert.Equal(t, delivery.Undecryptable, results[0].Failure, "counted by class")

			var line struct{ Level, Msg, Class string }
			for _, l := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
				require.NoError(t, json.Unmarshal([]byte(l), &line))
				if line.Level == "ERROR" {
					break
				}
			}
			assert.Equal(t, "ERROR", line.Level)
			assert.Contains(t, line.Msg, "CODE_SECRET=new,old")
			assert.Equal(t, "undecryptable", line.Class)
			assert.NotContains(t, e.logs.String(), issued.Code, "no code in the logs")
			assert.NotContains(t, e.logs.String(), issued.Sealed, "nor the sealed code")
			assert.Empty(t, e.smtp.Messages())

			// Re-run on a worker that holds the new secret: mailed.
			fixed := e.handler(t, func(c *tasks.HandlerConfig) { c.Seal = rotated })
			require.NoError(t, fixed.ProcessTask(ctx, task))
			msgs := e.smtp.WaitMessages(t, 1, 5*time.Second)
			assert.Contains(t, msgs[0].Text, issued.Code)
			st, err = e.records.Status(ctx, id, time.Now())
			require.NoError(t, err)
			assert.Equal(t, delivery.StateSent, st.State)
		})
	}
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
