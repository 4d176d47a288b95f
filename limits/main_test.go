package limits_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/internal/servicetest"
	"github.com/verifyq/verifyq/limits"
)

// TestMain closes the deployments redistest.Shared pooled.
func TestMain(m *testing.M) { os.Exit(redistest.Run(m)) }

// stack is a send step as the service runs it: the code store, its limits
// and its delivery records on one Redis.
type stack struct {
	*codes.Store
	*limits.Limiter
	records *delivery.Records
}

// newStack returns a stack on a Redis of the test's own, of the mode
// VERIFYQ_TEST_REDIS_MODE names (redistest.Shared): the suite runs against
// single, sentinel and cluster.
func newStack(t testing.TB, cc codes.Config, lc limits.Config) (*stack, redis.UniversalClient) {
	t.Helper()
	rdb := redistest.Shared(t).UniversalClient(t)
	p := servicetest.NewParts(t, rdb, cc, lc)
	return &stack{Store: p.Store, Limiter: p.Limiter, records: p.Records}, rdb
}

// GetOrCreate is a send: Admit.
func (s *stack) GetOrCreate(ctx context.Context, req limits.Request) (limits.Admission, error) {
	return s.Admit(ctx, req)
}

// Verify is a verify as the service makes it: the purpose, the client's
// cap, the code.
func (s *stack) Verify(ctx context.Context, id codes.ID, code, client string) error {
	if err := s.Check(id); err != nil {
		return err
	}
	if err := s.AdmitVerify(ctx, client); err != nil {
		return err
	}
	return s.Store.Verify(ctx, id, code)
}

// Status is a status read as the service makes it.
func (s *stack) Status(ctx context.Context, id codes.ID, now time.Time) (delivery.Status, error) {
	if err := s.Check(id); err != nil {
		return delivery.Status{}, err
	}
	return s.records.Status(ctx, id, now)
}

// Undo takes a back.
func (s *stack) Undo(ctx context.Context, a limits.Admission) error { return a.Undo(ctx) }

func wrongFor(code string) string {
	if code == "000000" {
		return "111111"
	}
	return "000000"
}

// exists counts the keys that exist.
func exists(ctx context.Context, t *testing.T, rdb redis.UniversalClient, keys ...string) int {
	t.Helper()
	n := 0
	for _, k := range keys {
		c, err := rdb.Exists(ctx, k).Result()
		require.NoError(t, err)
		n += int(c)
	}
	return n
}
