package loadtest_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/loadtest"
)

func TestSummarise(t *testing.T) {
	t.Parallel()
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	p := loadtest.Summarise(d)
	assert.Equal(t, loadtest.Percentiles{P50: 50 * time.Millisecond, P90: 90 * time.Millisecond,
		P99: 99 * time.Millisecond, Max: 100 * time.Millisecond}, p)
	assert.Equal(t, loadtest.Percentiles{}, loadtest.Summarise(nil))
}

func TestClosedLoopCountsOutcomesAfterWarmup(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Concurrency: 4, Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond,
	}, func(_ context.Context, i int) string {
		calls.Add(1)
		time.Sleep(time.Millisecond)
		if i%10 == 0 {
			return "rate_limited"
		}
		return loadtest.OK
	})
	require.NoError(t, err)
	assert.Less(t, res.Requests, int(calls.Load()), "warm-up requests are not measured")
	assert.Equal(t, res.Requests, res.Outcomes[loadtest.OK]+res.Outcomes["rate_limited"])
	assert.NotZero(t, res.Outcomes["rate_limited"])
	assert.InDelta(t, 200*time.Millisecond, res.Elapsed, float64(50*time.Millisecond))
	assert.GreaterOrEqual(t, res.Latency.P50, time.Millisecond)
	assert.Greater(t, res.Throughput, res.OKThroughput)
}

func TestMaxRequestsBoundsTheRun(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Concurrency: 8, Duration: time.Minute, MaxRequests: 100,
	}, func(context.Context, int) string { calls.Add(1); return loadtest.OK })
	require.NoError(t, err)
	assert.True(t, res.Capped)
	assert.Equal(t, int64(100), calls.Load())
	assert.Equal(t, 100, res.Requests)
}

func TestOpenLoopKeepsTheRate(t *testing.T) {
	t.Parallel()
	seen := make([]atomic.Bool, 1000)
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Concurrency: 8, Rate: 500, Duration: 400 * time.Millisecond,
	}, func(_ context.Context, i int) string { seen[i].Store(true); return loadtest.OK })
	require.NoError(t, err)
	assert.InDelta(t, 200, res.Requests, 2, "500/s for 0.4 s")
	for i := range res.Requests {
		assert.True(t, seen[i].Load(), "request %d sent", i)
	}
}

// A saturated open loop shows its backlog as latency, counted from when each
// request was due.
func TestOpenLoopLatencyIncludesTheBacklog(t *testing.T) {
	t.Parallel()
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Concurrency: 1, Rate: 1000, Duration: 100 * time.Millisecond,
	}, func(context.Context, int) string { time.Sleep(5 * time.Millisecond); return loadtest.OK })
	require.NoError(t, err)
	assert.Greater(t, res.Latency.Max, 50*time.Millisecond)
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	err := loadtest.Config{Concurrency: 0, Rate: -1, Duration: 0, MaxRequests: -1}.Validate()
	require.Error(t, err)
	for _, s := range []string{"concurrency", "rate", "duration", "max requests"} {
		assert.Contains(t, err.Error(), s)
	}
	assert.Error(t, loadtest.Config{Concurrency: 1, Duration: time.Hour}.Validate())
}

func TestAddressesAreDistinctAndIndexed(t *testing.T) {
	t.Parallel()
	addr := loadtest.Addresses("r1")
	assert.NotEqual(t, addr(1), addr(2))
	assert.NotEqual(t, addr(1), loadtest.Addresses("r2")(1))
	assert.Equal(t, 42, loadtest.Index("r1", addr(42)))
	assert.Equal(t, -1, loadtest.Index("r2", addr(42)))
	assert.Equal(t, -1, loadtest.Index("r1", "someone@example.com"))
}

func TestMerge(t *testing.T) {
	t.Parallel()
	a := loadtest.Result{Requests: 2, Elapsed: time.Second, Outcomes: map[string]int{loadtest.OK: 2},
		Latencies: []time.Duration{1 * time.Millisecond, 3 * time.Millisecond}}
	b := loadtest.Result{Requests: 2, Elapsed: time.Second, Outcomes: map[string]int{loadtest.OK: 1, "unavailable": 1},
		Latencies: []time.Duration{2 * time.Millisecond, 4 * time.Millisecond}, WarmupRequests: 5}
	m := loadtest.Merge(a, b)
	assert.Equal(t, 4, m.Requests)
	assert.Equal(t, 5, m.WarmupRequests)
	assert.Equal(t, 2*time.Second, m.Elapsed)
	assert.InDelta(t, 2.0, m.Throughput, 1e-9)
	assert.InDelta(t, 1.5, m.OKThroughput, 1e-9)
	assert.Equal(t, map[string]int{loadtest.OK: 3, "unavailable": 1}, m.Outcomes)
	assert.Equal(t, 2*time.Millisecond, m.Latency.P50)
	assert.Equal(t, 4*time.Millisecond, m.Latency.Max)
}
