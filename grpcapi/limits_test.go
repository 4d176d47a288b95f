package grpcapi_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/verifyq/verifyq/grpcapi"
	"github.com/verifyq/verifyq/internal/grpctest"
	"github.com/verifyq/verifyq/internal/servicetest"
)

// watches opens n health Watch streams on conn, from a few goroutines at
// once, and returns how many the server took (their first status arrived)
// and the status codes of those it refused. The streams it took stay open
// until ctx ends. A stream whose first reply takes over two seconds (the
// client waits for a stream slot of the connection: nothing refused it)
// counts as Canceled and ends the run.
func watches(ctx context.Context, t *testing.T, conn *grpc.ClientConn, n int) (taken int, refused map[codes.Code]int) {
	t.Helper()
	const workers = 16
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		next    = make(chan struct{})
		stalled atomic.Bool
	)
	refused = map[codes.Code]int{}
	client := healthpb.NewHealthClient(conn)
	for range workers {
		wg.Go(func() {
			for range next {
				sctx, cancel := context.WithCancel(ctx)
				stall := time.AfterFunc(2*time.Second, cancel)
				w, err := client.Watch(sctx, &healthpb.HealthCheckRequest{})
				if err == nil {
					_, err = w.Recv()
				}
				if !stall.Stop() {
					stalled.Store(true)
				}
				if err != nil {
					cancel()
				}
				mu.Lock()
				if err == nil {
					taken++
				} else {
					refused[status.Code(err)]++
				}
				mu.Unlock()
			}
		})
	}
	for i := 0; i < n && !stalled.Load(); i++ {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	return taken, refused
}

// 10,000 health Watch streams on one connection, with the default limits:
// the server keeps DefaultMaxWatchesPerConn of them and ends every other
// one at once with RESOURCE_EXHAUSTED; the connection still serves calls,
// and a stream closed frees its slot.
func TestWatchStreamsOnOneConnectionAreBounded(t *testing.T) {
	t.Parallel()
	conn := serve(t, grpcapi.New(servicetest.Fake{}, discard, grpcapi.Config{}))
	healthOf(t, conn, "") // connected and serving

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const n = 10_000
	taken, refused := watches(ctx, t, conn, n)
	assert.Equal(t, grpcapi.DefaultMaxWatchesPerConn, taken)
	assert.Equal(t, map[codes.Code]int{codes.ResourceExhausted: n - grpcapi.DefaultMaxWatchesPerConn}, refused)

	checkCtx, checkCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer checkCancel()
	res, err := healthpb.NewHealthClient(conn).Check(checkCtx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err, "unary calls still pass")
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, res.GetStatus())

	cancel()
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		taken, _ := watches(ctx, t, conn, 1)
		return taken == 1
	}, 5*time.Second, 20*time.Millisecond, "closed streams give their slots back")
}

// MaxWatches bounds the streams across connections, MaxWatchesPerConn on
// each.
func TestWatchStreamsAcrossConnectionsAreBounded(t *testing.T) {
	t.Parallel()
	a := serve(t, grpcapi.New(servicetest.Fake{}, discard, grpcapi.Config{
		Limits: grpcapi.Limits{MaxWatches: 5, MaxWatchesPerConn: 3},
	}))
	b := grpctest.Dial(t, a.Target())
	c := grpctest.Dial(t, a.Target())

	ctxA, cancelA := context.WithCancel(context.Background())
	defer cancelA()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	taken, refused := watches(ctxA, t, a, 20)
	assert.Equal(t, 3, taken, "the bound per connection")
	assert.Equal(t, 17, refused[codes.ResourceExhausted])
	taken, _ = watches(ctx, t, b, 20)
	assert.Equal(t, 2, taken, "what the server-wide bound leaves")
	taken, _ = watches(ctx, t, c, 20)
	assert.Equal(t, 0, taken, "the server-wide bound")

	cancelA()
	require.Eventually(t, func() bool {
		taken, _ := watches(ctx, t, c, 1)
		return taken == 1
	}, 5*time.Second, 20*time.Millisecond, "a's slots are free again")
}

// A connection with no call open for MaxConnectionIdle is closed (the
// client's channel goes idle and reconnects for its next call); one older
// than MaxConnectionAge is closed after the grace, open streams and all.
func TestConnectionsIdleOrOldAreClosed(t *testing.T) {
	t.Parallel()
	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		assert.LessOrEqual(t, grpcapi.DefaultMaxConnectionIdle, time.Minute,
			"by default tens of seconds: idle connections hold a listener's slots briefly")
		conn := serve(t, grpcapi.New(servicetest.Fake{}, discard, grpcapi.Config{
			Limits: grpcapi.Limits{MaxConnectionIdle: 200 * time.Millisecond},
		}))
		healthOf(t, conn, "")
		require.Equal(t, connectivity.Ready, conn.GetState())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for s := conn.GetState(); s != connectivity.Idle; s = conn.GetState() {
			require.True(t, conn.WaitForStateChange(ctx, s), "still %s", s)
		}
		assert.Equal(t, healthpb.HealthCheckResponse_SERVING, healthOf(t, conn, ""), "the next call reconnects")
	})
	t.Run("old", func(t *testing.T) {
		t.Parallel()
		conn := serve(t, grpcapi.New(servicetest.Fake{}, discard, grpcapi.Config{
			Limits: grpcapi.Limits{MaxConnectionAge: 200 * time.Millisecond, MaxConnectionAgeGrace: 200 * time.Millisecond},
		}))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
		require.NoError(t, err)
		for {
			if _, err = w.Recv(); err != nil {
				break
			}
		}
		assert.Equal(t, codes.Unavailable, status.Code(err), "the stream is cut with its connection: %v", err)
		assert.NoError(t, ctx.Err(), "cut by the server, not by the test's deadline")
	})
}
