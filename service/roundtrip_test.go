package service_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/service"
	"github.com/verifyq/verifyq/tasks"
)

// roundTrips is a go-redis hook that records every round trip to Redis: one
// per command, one per pipeline. A script run by EVALSHA that Redis does
// not know yet costs a second round trip, the EVAL that go-redis falls back
// to, and is recorded as such; so is the handshake of a new connection
// (HELLO, CLIENT SETINFO), after a "dial".
type roundTrips struct {
	mu    sync.Mutex
	trips []string // a command's name, or the names of a pipeline's commands
}

var _ redis.Hook = (*roundTrips)(nil)

func (h *roundTrips) add(trip string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.trips = append(h.trips, trip)
}

// take returns the round trips recorded since the last take.
func (h *roundTrips) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.trips
	h.trips = nil
	return t
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		h.add("dial")
		return next(ctx, network, addr)
	}
}

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.add(cmd.Name())
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		names := make([]string, len(cmds))
		for i, c := range cmds {
			names[i] = c.Name()
		}
		h.add("pipeline(" + strings.Join(names, " ") + ")")
		return next(ctx, cmds)
	}
}

// The design's promise: a send request costs at most two Redis round trips
// (on a cluster: two waits, each a pipeline sent to every node it touches
// at once, and no node visited more than twice)
// (get-or-create with the limits, one pipeline of a script per Redis Cluster
// slot; the enqueue, one script) and a verify one. A refused send costs its
// pipeline and one to undo what the parts that admitted it recorded. The code store and the asynq client share one go-redis
// client, as in the enqueuer, and the hook on it counts both.
//
// Counting starts once the client is warm, as in a running enqueuer: its
// connection is open, Redis has cached the scripts (the first run of each
// after a Redis start costs an extra EVAL) and asynq has registered the
// queue (its first enqueue adds one SADD).
func TestRoundTripsPerRequest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := redistest.Shared(t)
	plain := d.UniversalClient(t) // unhooked: the test's own reads and warm-up
	rdb := d.UniversalClient(t)
	hook := &roundTrips{}
	rdb.AddHook(hook)
	// On a cluster the hook above sees what the caller waits for: a command
	// (MOVED and ASK redirects included, which go-redis follows inside it)
	// or a pipeline, which go-redis splits into one pipeline per node its
	// keys live on and sends to those nodes at the same time: one round
	// trip of waiting, whatever the number of nodes. nodes counts what each
	// node sees, so that no node is visited twice where one trip is meant;
	// the handshake of a connection a node client opens (go-redis keeps
	// its pools filled as the parallel pipelines need) is left out there.
	nodes := map[string]*roundTrips{}
	var nodesMu sync.Mutex
	if c, ok := rdb.(*redis.ClusterClient); ok {
		c.OnNewNode(func(n *redis.Client) {
			h := &roundTrips{}
			nodesMu.Lock()
			nodes[n.Options().Addr] = h
			nodesMu.Unlock()
			n.AddHook(h)
		})
	}
	takeNodes := func() map[string][]string {
		nodesMu.Lock()
		defer nodesMu.Unlock()
		out := map[string][]string{}
		for addr, h := range nodes {
			var trips []string
			for _, trip := range h.take() {
				if !handshake(trip) {
					trips = append(trips, trip)
				}
			}
			if len(trips) > 0 {
				out[addr] = trips
			}
		}
		return out
	}

	// Limits as in production, except that the cooldown and the gap are
	// off in store so that a repeat send re-mails; limited keeps them, to
	// count a refused send.
	noCooldown := limits.Default()
	noCooldown.Cooldown, noCooldown.Gap = 0, 0
	defaults := codes.Config{KeyPrefix: codes.DefaultKeyPrefix, TTL: codes.DefaultTTL, Length: codes.DefaultLength,
		MaxAttempts: codes.DefaultMaxAttempts}
	st := newStack(t, rdb, defaults, noCooldown)
	queue := asynq.NewClientFromRedisClient(rdb) // shares rdb, as in the enqueuer
	svc := st.service(queue)
	limited := newStack(t, rdb, defaults, limits.Default()).service(queue)

	// On a cluster (or after a Redis start) each node learns a script the
	// first time it runs there: run every kind of request, unhooked, for
	// addresses and clients spread over all the nodes.
	plainSvc := newStack(t, plain, defaults, limits.Default()).service(asynq.NewClientFromRedisClient(plain))
	var err error
	for i := range 32 {
		req := service.SendRequest{Email: fmt.Sprintf("spread%d@example.org", i), Client: fmt.Sprintf("198.51.100.%d", i)}
		for range 2 { // the second is refused by the cooldown, and undone
			_, err = plainSvc.SendCode(ctx, req)
		}
		require.ErrorIs(t, err, service.ErrRateLimited)
		require.ErrorIs(t, plainSvc.VerifyCode(ctx, service.VerifyRequest{Email: req.Email, Code: "x"}), service.ErrMismatch)
	}

	// Warm up: every script once, the queue registered, the connection open.
	warm := service.SendRequest{Email: "warm@example.com", Locale: "en", Client: "203.0.113.9"}
	_, err = svc.SendCode(ctx, warm)
	require.NoError(t, err)
	require.ErrorIs(t, svc.VerifyCode(ctx, service.VerifyRequest{Email: warm.Email, Code: "x"}), service.ErrMismatch)
	_, err = st.store.Peek(ctx, codes.ID{Email: warm.Email})
	require.NoError(t, err)
	for range 2 { // and a refused send's undo
		_, err = limited.SendCode(ctx, service.SendRequest{Email: "warm@example.net", Client: "203.0.113.9"})
	}
	require.ErrorIs(t, err, service.ErrRateLimited)
	warmup := hook.take()
	t.Logf("warm-up: %v", warmup)
	takeNodes()

	// The hook sees both halves of a send, asynq's enqueue included: each
	// is one round trip on its own. Without this, a hook that saw nothing
	// would pass the bounds below.
	t.Run("the hook counts the store and the queue", func(t *testing.T) {
		_, err := st.limiter.Admit(ctx, limits.Request{Email: "parts@example.com"})
		require.NoError(t, err)
		assert.Equal(t, []string{"pipeline(evalsha evalsha)"}, hook.take(),
			"get-or-create: the mailbox's and the code's scripts (no client here) in one pipeline")
		task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{Email: "parts@example.com", ExpiresAt: st.limiter.Now().Add(codes.DefaultTTL)})
		require.NoError(t, err)
		_, err = queue.EnqueueContext(ctx, task)
		require.NoError(t, err)
		assert.Equal(t, []string{"evalsha"}, hook.take(), "asynq's enqueue")
	})

	code := func(email string) string {
		c, err := plain.Get(ctx, codes.DefaultKeyPrefix+email).Result()
		require.NoError(t, err)
		return c
	}
	sendReq := service.SendRequest{Email: "someone@example.com", Locale: "en", Client: "203.0.113.5"}
	steps := []struct {
		name string
		max  int
		run  func(t *testing.T)
	}{
		{"send, new code", 2, func(t *testing.T) {
			sent, err := svc.SendCode(ctx, sendReq)
			require.NoError(t, err)
			require.True(t, sent.Created)
		}},
		// The admission only looks at a live code; once admitted the send
		// issues it in a round trip of its own (limits.Limiter.Admit).
		{"send again, live code re-mailed", 3, func(t *testing.T) {
			sent, err := svc.SendCode(ctx, sendReq)
			require.NoError(t, err)
			require.False(t, sent.Created)
		}},
		{"send refused by the cooldown and the gap (and its undo)", 2, func(t *testing.T) {
			_, err := limited.SendCode(ctx, service.SendRequest{Email: "cool@example.com", Client: "203.0.113.6"})
			require.NoError(t, err)
			hook.take() // counted above: the step is the refused one
			takeNodes()
			_, err = limited.SendCode(ctx, service.SendRequest{Email: "cool@example.com", Client: "203.0.113.6"})
			require.ErrorIs(t, err, service.ErrRateLimited)
		}},
		{"verify, wrong code", 1, func(t *testing.T) {
			wrong := "000000"
			if code(sendReq.Email) == wrong {
				wrong = "111111"
			}
			require.ErrorIs(t, svc.VerifyCode(ctx, service.VerifyRequest{Email: sendReq.Email, Code: wrong}), service.ErrMismatch)
		}},
		{"verify, right code", 1, func(t *testing.T) {
			c := code(sendReq.Email)
			require.NoError(t, svc.VerifyCode(ctx, service.VerifyRequest{Email: sendReq.Email, Code: c}))
		}},
		{"verify, no code", 1, func(t *testing.T) {
			require.ErrorIs(t, svc.VerifyCode(ctx, service.VerifyRequest{Email: sendReq.Email, Code: "123456"}), service.ErrNotFound)
		}},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			hook.take()
			takeNodes()
			step.run(t)
			trips := hook.take()
			t.Logf("%d round trips: %v", len(trips), trips)
			assert.NotEmpty(t, trips, "the hook saw the request")
			assert.LessOrEqual(t, len(trips), step.max, "%s: at most %d Redis round trips, got %d: %s",
				step.name, step.max, len(trips), fmt.Sprint(trips))
			for addr, trips := range takeNodes() {
				t.Logf("node %s: %d round trips: %v", addr, len(trips), trips)
				assert.LessOrEqual(t, len(trips), step.max, "%s: node %s sees at most %d round trips, got %s",
					step.name, addr, step.max, fmt.Sprint(trips))
			}
		})
	}
}

// handshake reports whether trip is part of opening a connection: the dial,
// HELLO and CLIENT SETINFO (alone or pipelined).
func handshake(trip string) bool {
	switch trip {
	case "dial", "hello", "auth", "client", "pipeline(client client)":
		return true
	}
	return false
}
