package events_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/events"
	"github.com/verifyq/verifyq/internal/logtest"
	"github.com/verifyq/verifyq/internal/servicetest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/service"
)

// The expiry check emits code.expired for a code that expired unused
// (here: its key deleted, as Redis does at its TTL), with its mail's
// state and its send's task, and nothing for a code verified, exhausted,
// taken over by a later send of a new code, or still alive (checked
// again later).
func TestExpiryCheck(t *testing.T) {
	t.Parallel()
	env := servicetest.New(t, limits.Config{}, 1)
	ctx := context.Background()
	logger, _ := logtest.New(t)
	em := events.NewEmitter(asynq.NewClientFromRedisClient(env.RDB), []string{"https://hooks.example/in"}, nil, logger)
	checker, err := events.NewExpiryChecker(env.Records, em, logger)
	require.NoError(t, err)
	keys, err := codes.NewKeys(codes.DefaultKeyPrefix)
	require.NoError(t, err)
	send := func(email string) (codes.ID, string) {
		t.Helper()
		id := codes.ID{Email: email}
		_, err := env.Service.SendCode(ctx, service.SendRequest{Email: email})
		require.NoError(t, err)
		return id, env.Task(t, id)
	}
	check := func(id codes.ID, task string) error {
		t.Helper()
		b, err := json.Marshal(map[string]string{"email": id.Email, "task": task})
		require.NoError(t, err)
		return checker.ProcessTask(ctx, asynq.NewTask(events.TypeExpiry, b))
	}
	expire := func(id codes.ID) { require.NoError(t, env.RDB.Del(ctx, keys.Key(id)).Err()) }

	unused, unusedTask := send("unused@example.com")
	require.NoError(t, env.Records.Sent(ctx, unused, unusedTask, delivery.Acceptance{At: time.Now()}))
	alive := check(unused, unusedTask)
	assert.ErrorContains(t, alive, "the code lives", "a live code is checked again later")
	expire(unused)
	require.NoError(t, check(unused, unusedTask))

	verified, verifiedTask := send("verified@example.com")
	require.NoError(t, env.Service.VerifyCode(ctx, service.VerifyRequest{Email: verified.Email, Code: env.Code(t, verified.Email)}))
	require.NoError(t, check(verified, verifiedTask))

	exhausted, exhaustedTask := send("exhausted@example.com")
	assert.ErrorIs(t, env.Service.VerifyCode(ctx, service.VerifyRequest{Email: exhausted.Email, Code: "x"}), service.ErrAttemptsExhausted)
	require.NoError(t, check(exhausted, exhaustedTask))

	replaced, replacedTask := send("replaced@example.com")
	expire(replaced)
	_, laterTask := send("replaced@example.com")
	require.NotEqual(t, replacedTask, laterTask)
	require.NoError(t, check(replaced, replacedTask), "a later send's status: that send's check decides")

	pending, err := asynq.NewInspectorFromRedisClient(env.RDB).ListPendingTasks(events.Queue)
	require.NoError(t, err)
	require.Len(t, pending, 1, "one code.expired: the unused code's")
	var p struct {
		Type events.Type     `json:"type"`
		Body json.RawMessage `json:"body"`
	}
	require.NoError(t, json.Unmarshal(pending[0].Payload, &p))
	assert.Equal(t, events.CodeExpired, p.Type)
	var body struct {
		Data events.Data `json:"data"`
	}
	require.NoError(t, json.Unmarshal(p.Body, &body))
	assert.Equal(t, events.Data{Email: unused.Email, TaskID: unusedTask, State: delivery.StateSent}, body.Data)
}

// The check is scheduled once per send, at the code's expiry and a grace.
func TestScheduleExpiryOncePerSend(t *testing.T) {
	t.Parallel()
	env := servicetest.New(t, limits.Config{}, 0)
	em := events.NewEmitter(asynq.NewClientFromRedisClient(env.RDB), []string{"https://hooks.example/in"}, nil, nil)
	at := time.Now().Add(time.Minute)
	id := codes.ID{Email: "s@example.com"}
	for range 2 {
		require.NoError(t, em.ScheduleExpiry(context.Background(), id, "task-s", at))
	}
	scheduled, err := asynq.NewInspectorFromRedisClient(env.RDB).ListScheduledTasks(events.Queue)
	require.NoError(t, err)
	require.Len(t, scheduled, 1)
	assert.WithinDuration(t, at.Add(events.ExpiryGrace), scheduled[0].NextProcessAt, time.Second)
}
