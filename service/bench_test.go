package service_test

import (
	"context"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/events"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/service"
)

// BenchmarkVerifyCode measures a verify of a wrong code against a live one
// (the verify script, no cap) on a real Redis, with events off (the
// default: WEBHOOK_URLS unset) and on (an emitter that queues nothing: a
// wrong code before the cap emits no event), so that the off path can be
// compared with a build without events.
func BenchmarkVerifyCode(b *testing.B) {
	rdb := redistest.Shared(b).UniversalClient(b)
	svc := newStack(b, rdb, codes.Config{KeyPrefix: codes.DefaultKeyPrefix, TTL: codes.DefaultTTL, Length: codes.DefaultLength},
		limits.Config{}).service(asynq.NewClientFromRedisClient(rdb))
	ctx := context.Background()
	_, err := svc.SendCode(ctx, service.SendRequest{Email: "bench@example.com"})
	if err != nil {
		b.Fatal(err)
	}
	code, err := rdb.Get(ctx, "code_bench@example.com").Result()
	if err != nil {
		b.Fatal(err)
	}
	req := service.VerifyRequest{Email: "bench@example.com", Code: wrongFor(code)}
	for _, tc := range []struct {
		name   string
		events service.Events
	}{{"off", nil}, {"on", events.NewEmitter(asynq.NewClientFromRedisClient(rdb), []string{"https://hooks.example/in"}, nil, nil)}} {
		b.Run(tc.name, func(b *testing.B) {
			svc.Events = tc.events
			b.ReportAllocs()
			for b.Loop() {
				if err := svc.VerifyCode(ctx, req); err != service.ErrMismatch { //nolint:errorlint // the sentinel itself
					b.Fatal(err)
				}
			}
		})
	}
}
