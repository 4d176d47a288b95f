package limits_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/limits"
)

// BenchmarkAdmit measures the send step (the limits' scripts, the code's
// issue and the send's entry in the index of open sends, one pipeline) on a
// real redis-server with the default limits, each call for a new address
// and its task, as the service makes it (every key is written, none
// refuses). "serial" is one round trip after another, its ns/op the latency
// of one call; "parallel" keeps 8 calls per GOMAXPROCS in flight, its ns/op
// the inverse of the throughput.
func BenchmarkAdmit(b *testing.B) {
	srv := redistest.Start(b)
	cfg := codes.Config{KeyPrefix: codes.DefaultKeyPrefix, TTL: codes.DefaultTTL, Length: codes.DefaultLength,
		MaxAttempts: codes.DefaultMaxAttempts}
	var n atomic.Int64
	next := func() limits.Request {
		i := strconv.FormatInt(n.Add(1), 10)
		return limits.Request{Email: "bench-" + i + "@example.com", Send: codes.Send{Task: "bench-task-" + i, Queue: "default"}}
	}
	newStore := func(b *testing.B, rdb *redis.Client) *limits.Limiter {
		store, err := codes.NewStore(rdb, cfg)
		if err != nil {
			b.Fatal(err)
		}
		l, err := limits.New(rdb, limits.Default(), store)
		if err != nil {
			b.Fatal(err)
		}
		return l
	}

	b.Run("serial", func(b *testing.B) {
		s := newStore(b, srv.Client(b))
		ctx := context.Background()
		for b.Loop() {
			if _, err := s.Admit(ctx, next()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 64})
		b.Cleanup(func() { _ = rdb.Close() })
		s := newStore(b, rdb)
		ctx := context.Background()
		b.SetParallelism(8)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Admit(ctx, next()); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
