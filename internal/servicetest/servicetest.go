// Package servicetest builds the real service for the edges' tests: a
// codes.Store and an asynq client on a redis-server of the test's own, and
// a fake service with function fields for fault injection.
package servicetest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/service"
	"github.com/verifyq/verifyq/tasks"
)

// Env is a real service on a real Redis.
type Env struct {
	Redis   *redistest.Server
	RDB     *redis.Client
	Service *service.Service
}

// Discard is a logger that writes nothing.
var Discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// New starts a redis-server for the test and returns the service on it,
// with codes as verifyq makes them by default and the given limits.
func New(t testing.TB, limits codes.Limits) *Env {
	t.Helper()
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	store, err := codes.NewStore(rdb, codes.Config{KeyPrefix: "code_", TTL: 10 * time.Minute, Length: 6, Limits: limits})
	require.NoError(t, err)
	return &Env{Redis: rs, RDB: rdb, Service: service.New(store, asynq.NewClientFromRedisClient(rdb), Discard)}
}

// Code returns the live code of email.
func (e *Env) Code(t testing.TB, email string) string {
	t.Helper()
	code, err := e.RDB.Get(context.Background(), "code_"+email).Result()
	require.NoError(t, err, "a live code for the address")
	return code
}

// Pending returns the payloads of the tasks waiting in the mail queue.
func (e *Env) Pending(t testing.TB) []tasks.SendCodePayload {
	t.Helper()
	infos, err := asynq.NewInspectorFromRedisClient(e.RDB).ListPendingTasks(tasks.Queue)
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return nil
	}
	require.NoError(t, err)
	var out []tasks.SendCodePayload
	for _, info := range infos {
		var p tasks.SendCodePayload
		require.NoError(t, json.Unmarshal(info.Payload, &p))
		out = append(out, p)
	}
	return out
}

// Fake is a hand-written service whose methods call its function fields;
// a nil field succeeds.
type Fake struct {
	Send   func(ctx context.Context, req service.SendRequest) (service.Sent, error)
	Verify func(ctx context.Context, email, code string) error
}

// Failing returns a Fake whose every call fails with err.
func Failing(err error) Fake {
	return Fake{
		Send:   func(context.Context, service.SendRequest) (service.Sent, error) { return service.Sent{}, err },
		Verify: func(context.Context, string, string) error { return err },
	}
}

// SendCode calls f.Send.
func (f Fake) SendCode(ctx context.Context, req service.SendRequest) (service.Sent, error) {
	if f.Send == nil {
		return service.Sent{ExpiresIn: 10 * time.Minute, Created: true}, nil
	}
	return f.Send(ctx, req)
}

// VerifyCode calls f.Verify.
func (f Fake) VerifyCode(ctx context.Context, email, code string) error {
	if f.Verify == nil {
		return nil
	}
	return f.Verify(ctx, email, code)
}
