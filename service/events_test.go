package service_test

import (
	"context"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/events"
	"github.com/verifyq/verifyq/internal/eventstest"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/service"
)

// A verified code emits code.verified, a wrong code that uses up the
// attempts code.attempts_exhausted, each naming the send's task and
// neither holding the code; a wrong code before the last, or a code that
// is gone, emits nothing. Without Events the verify is as before.
func TestVerifyEmitsEvents(t *testing.T) {
	t.Parallel()
	rdb := redistest.Shared(t).UniversalClient(t)
	svc := newStack(t, rdb, codes.Config{KeyPrefix: codes.DefaultKeyPrefix, TTL: codes.DefaultTTL, Length: codes.DefaultLength, MaxAttempts: 2},
		limits.Config{}).service(asynq.NewClientFromRedisClient(rdb))
	log := &eventstest.Recorder{}
	svc.Events = log
	ctx := context.Background()
	keys, err := codes.NewKeys(codes.DefaultKeyPrefix)
	require.NoError(t, err)
	taskOf := func(id codes.ID) string {
		task, err := rdb.HGet(ctx, keys.StatusKey(id), "task").Result()
		require.NoError(t, err)
		return task
	}

	ok := codes.ID{Purpose: "login", Email: "ok@example.com"}
	_, err = svc.SendCode(ctx, service.SendRequest{Email: ok.Email, Purpose: ok.Purpose})
	require.NoError(t, err)
	okTask := taskOf(ok)
	code, err := rdb.Get(ctx, keys.Key(ok)).Result()
	require.NoError(t, err)
	require.NoError(t, svc.VerifyCode(ctx, service.VerifyRequest{Email: ok.Email, Purpose: ok.Purpose, Code: code}))
	assert.ErrorIs(t, svc.VerifyCode(ctx, service.VerifyRequest{Email: ok.Email, Purpose: ok.Purpose, Code: code}), service.ErrNotFound)

	bad := codes.ID{Email: "bad@example.com"}
	_, err = svc.SendCode(ctx, service.SendRequest{Email: bad.Email})
	require.NoError(t, err)
	badTask := taskOf(bad)
	badCode, err := rdb.Get(ctx, keys.Key(bad)).Result()
	require.NoError(t, err)
	wrong := wrongFor(badCode)
	assert.ErrorIs(t, svc.VerifyCode(ctx, service.VerifyRequest{Email: bad.Email, Code: wrong}), service.ErrMismatch)
	assert.ErrorIs(t, svc.VerifyCode(ctx, service.VerifyRequest{Email: bad.Email, Code: wrong}), service.ErrAttemptsExhausted)
	exhausted, err := rdb.HGet(ctx, keys.StatusKey(bad), codes.ExhaustedField).Result()
	require.NoError(t, err)
	assert.Equal(t, "1", exhausted, "the status says the code was exhausted, for the expiry check")

	evs := log.Events()
	require.Len(t, evs, 2)
	assert.Equal(t, events.CodeVerified, evs[0].Type)
	assert.Equal(t, events.Data{Email: ok.Email, Purpose: "login", TaskID: okTask}, evs[0].Data)
	assert.Equal(t, okTask, evs[0].Fact)
	assert.Equal(t, events.CodeAttemptsExhausted, evs[1].Type)
	assert.Equal(t, events.Data{Email: bad.Email, TaskID: badTask}, evs[1].Data)
	for _, ev := range evs {
		b, err := ev.Body()
		require.NoError(t, err)
		assert.NotContains(t, string(b), code)
		assert.NotContains(t, string(b), badCode)
	}
}

func wrongFor(code string) string {
	if code == "000000" {
		return "111111"
	}
	return "000000"
}
