package delivery_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/internal/servicetest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/mail"
)

// TestMain closes the deployments redistest.Shared pooled.
func TestMain(m *testing.M) { os.Exit(redistest.Run(m)) }

var plusTags = mail.Identity{TagSeparators: mail.DefaultTagSeparators}

// testQueue is the asynq queue of the tests' tasks.
const testQueue = "delivery-test"

// stack is the records with the code store and the limits of a send, on
// a Redis of the test's own, of the mode VERIFYQ_TEST_REDIS_MODE names.
type stack struct {
	*codes.Store
	*delivery.Records
	limiter *limits.Limiter
}

func newStack(t *testing.T, lc limits.Config) (*stack, redis.UniversalClient) {
	t.Helper()
	rdb := redistest.Shared(t).UniversalClient(t)
	p := servicetest.NewParts(t, rdb, codes.Config{}, lc)
	return &stack{Store: p.Store, Records: p.Records, limiter: p.Limiter}, rdb
}

// GetOrCreate is a send.
func (s *stack) GetOrCreate(ctx context.Context, req limits.Request) (limits.Admission, error) {
	return s.limiter.Admit(ctx, req)
}

// Begin begins an attempt of task taskID of testQueue.
func (s *stack) Begin(ctx context.Context, id codes.ID, taskID string, ttl time.Duration) (delivery.Attempt, error) {
	return s.Records.Begin(ctx, id, delivery.Task{ID: taskID, Queue: testQueue}, ttl)
}
