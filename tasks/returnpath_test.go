package tasks_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/returnpath"
	"github.com/verifyq/verifyq/tasks"
)

// The envelope sender is MAIL_FROM's address without a return path, the
// return path as it is without a secret, and with one a VERP address whose
// token names the task that sent the mail, its purpose and its address:
// the real queue runs the task, under its own ID.
func TestReturnPath(t *testing.T) {
	t.Parallel()
	secret := bytes.Repeat([]byte("0123456789abcdef"), 2)
	signed, err := returnpath.New("bounces@bounce.test", secret)
	require.NoError(t, err)
	bare, err := returnpath.New("bounces@bounce.test")
	require.NoError(t, err)

	for _, tt := range []struct {
		name string
		path *returnpath.Path
	}{{"none", nil}, {"bare", bare}, {"signed", signed}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			ctx := context.Background()
			id := codes.ID{Email: "Someone+x@Example.com", Purpose: "login"}
			_, err := e.store.GetOrCreate(ctx, id)
			require.NoError(t, err)
			h := e.handler(t, func(c *tasks.HandlerConfig) { c.ReturnPath = tt.path })

			srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{
				Concurrency: 1, Queues: map[string]int{tasks.Queue: 1}, TaskCheckInterval: 50 * time.Millisecond,
				LogLevel: asynq.FatalLevel,
			})
			require.NoError(t, srv.Start(h))
			t.Cleanup(srv.Shutdown)
			task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{
				Email: id.Email, Purpose: id.Purpose, RequestedAt: time.Now(), ExpiresAt: time.Now().Add(10 * time.Minute),
			})
			require.NoError(t, err)
			_, err = asynq.NewClientFromRedisClient(e.rdb).EnqueueContext(ctx, task, asynq.TaskID("task-rp-"+tt.name))
			require.NoError(t, err)

			from := e.smtp.WaitMessages(t, 1, 5*time.Second)[0].From
			switch tt.path {
			case nil:
				assert.Equal(t, "no-reply@verifyq.test", from)
			case bare:
				assert.Equal(t, "bounces@bounce.test", from)
			default:
				tok, ours := signed.TokenOf(from)
				require.True(t, ours, from)
				m, err := signed.Open(tok, time.Now(), []string{"", "login"}, []string{id.Email})
				require.NoError(t, err, from)
				assert.Equal(t, returnpath.SendID("task-rp-"+tt.name), m.SendID)
				assert.Equal(t, "login", m.Purpose)
			}
		})
	}
}
