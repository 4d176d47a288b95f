package bench

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/loadtest"
	"github.com/verifyq/verifyq/internal/redistest"
)

func TestProcReaders(t *testing.T) {
	t.Parallel()
	rss, err := peakRSS(os.Getpid())
	require.NoError(t, err)
	assert.Greater(t, rss, int64(1<<20), "a Go test binary holds more than 1 MB")

	// Burn some CPU and see it counted.
	before, err := cpuTime(os.Getpid())
	require.NoError(t, err)
	m := newCPUMeter(map[string]int{"self": os.Getpid()})
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := cpuTime(os.Getpid())
	require.NoError(t, err)
	assert.Greater(t, after, before)
	got := m.read()
	assert.Greater(t, got["self"], 0.3, "busy for the whole interval, on one core at least")
	assert.Contains(t, got, cpuOthers)

	_, err = peakRSS(-1)
	assert.Error(t, err)
}

func TestRedisStatsPerRequest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	before, err := readRedisStats(ctx, rdb)
	require.NoError(t, err)
	// Two requests' worth: one script call each, running two commands.
	for range 2 {
		require.NoError(t, rdb.Eval(ctx, "redis.call('SET', KEYS[1], '1'); return redis.call('GET', KEYS[1])", []string{"k"}).Err())
	}
	after, err := readRedisStats(ctx, rdb)
	require.NoError(t, err)
	c := perRequest(before, after, 2)
	assert.InDelta(t, 1.0, c.Eval, 1e-9)
	assert.InDelta(t, 0.0, c.EvalSHA, 1e-9)
	assert.InDelta(t, 1.0, c.Sent, 1e-9, "only the EVALs were sent (the INFO is the harness's)")
	assert.InDelta(t, 2.0, c.InScripts, 1e-9, "SET and GET ran inside")
}

func TestMergeRuns(t *testing.T) {
	t.Parallel()
	seg := func(n int, cpu float64) LoadRun {
		return LoadRun{Target: "grpc-legacy", Callers: 8,
			Result: loadtest.Result{Requests: n, Elapsed: time.Second, Outcomes: map[string]int{loadtest.OK: n},
				Latencies: []time.Duration{time.Millisecond}},
			CPU:        map[string]float64{"enqueuer": cpu},
			redisDelta: redisStats{total: int64(14 * n), calls: map[string]int64{"evalsha": int64(2 * n)}},
		}
	}
	m := mergeRuns([]LoadRun{seg(100, 1.0), seg(300, 0.5)})
	assert.Equal(t, 2, m.Segments)
	assert.Equal(t, 400, m.Result.Requests)
	assert.InDelta(t, 200, m.Result.OKThroughput, 1e-9)
	assert.InDelta(t, 0.75, m.CPU["enqueuer"], 1e-9, "weighted by time")
	assert.InDelta(t, 2.0, m.Commands.EvalSHA, 1e-9)
	assert.InDelta(t, 12.0, m.Commands.InScripts, 1e-9)
}

// A report renders from any run, complete or not, and says which targets
// hold.
func TestReportRendersAndEvaluates(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	run := func(target string, callers int, okPerSecond float64, p99 time.Duration) LoadRun {
		n := int(okPerSecond * 10)
		return LoadRun{Target: target, Callers: callers, Result: loadtest.Result{
			Requests: n, Elapsed: 10 * time.Second, Throughput: okPerSecond, OKThroughput: okPerSecond,
			Outcomes: map[string]int{loadtest.OK: n}, Latency: loadtest.Percentiles{P99: p99}},
			Commands: commandsPerRequest{Sent: 2, EvalSHA: 2, InScripts: 12},
			CPU:      map[string]float64{"enqueuer": 0.9, "harness": 0.3, "redis-server": 0.5}}
	}
	rep := &Report{Config: cfg, Machine: Machine{CPUs: 2, CPUModel: "test"}, finished: time.Now(),
		Ceiling: []LoadRun{run("ceiling", 64, 15000, 10*time.Millisecond), run("ceiling", 8, 12000, time.Millisecond)},
		FrontEnd: []LoadRun{
			run(loadtest.TargetGRPCLegacy, 64, 8000, 15*time.Millisecond),
			run(loadtest.TargetGRPCLegacy, 8, 6000, 4*time.Millisecond),
		},
		Drain:     DrainRun{Name: "d", Mails: 10, Delivered: 10, Concurrency: 20, Rate: 3500},
		SlowDrain: DrainRun{Name: "s", Mails: 10, Delivered: 10, Concurrency: 50, SinkLatency: 50 * time.Millisecond, Bound: 1000, Rate: 960, Connections: 50},
		E2E: E2ERun{Load: LoadRun{Rate: 500}, SinkLatency: 100 * time.Millisecond, Concurrency: 100, Measured: 10, Delivered: 10,
			ToAccept: loadtest.Percentiles{P99: 200 * time.Millisecond}, EnqueuerRSS: 30 << 20, WorkerRSS: 30 << 20},
	}
	rep.evaluate()
	holds := map[string]bool{}
	for _, tg := range rep.Targets {
		holds[tg.What] = tg.Holds
	}
	assert.True(t, holds["grpc-legacy at 64 callers, share of the ceiling"], "8000 of 15000")
	assert.False(t, holds["grpc-legacy at 8 callers, p99"], "4 ms")
	assert.False(t, rep.AllHold())

	var b bytes.Buffer
	require.NoError(t, rep.Render(&b))
	out := b.String()
	assert.Contains(t, out, "| grpc-legacy at 8 callers, p99 | <= 3.00ms | 4.00ms | **missed** |")
	assert.Contains(t, out, "is missed by 1.00ms")
	assert.Contains(t, out, "8000 requests/s at 64 callers")
	assert.NotContains(t, out, "<no value>")

	readme := "# x\n\n" + readmeStart + "\nold numbers\n" + readmeEnd + "\n\n## next\n"
	got, err := rep.UpdateReadme(readme)
	require.NoError(t, err)
	assert.NotContains(t, got, "old numbers")
	assert.Contains(t, got, "**8000/s**")
	assert.Contains(t, got, "## next")
	again, err := rep.UpdateReadme(got)
	require.NoError(t, err)
	assert.Equal(t, got, again, "rewriting is idempotent")
	_, err = rep.UpdateReadme("# no block")
	assert.Error(t, err)

	// An empty report renders too (a run of -only).
	b.Reset()
	require.NoError(t, (&Report{Config: cfg}).Render(&b))
	assert.True(t, strings.HasPrefix(b.String(), "# verifyq benchmarks"))
}

func TestRedoDisturbedRuns(t *testing.T) {
	t.Parallel()
	e := &env{cfg: Config{QuietWait: time.Millisecond}}
	rep := &Report{}
	seq := func(others ...float64) (func(context.Context) (float64, error), *int) {
		n := new(int)
		return func(context.Context) (float64, error) {
			v := others[*n]
			*n++
			return v, nil
		}, n
	}
	id := func(v float64) float64 { return v }

	f, calls := seq(0.9, 0.1)
	v, err := redo(context.Background(), e, rep, "a", id, f)
	require.NoError(t, err)
	assert.InDelta(t, 0.1, v, 1e-9, "the quiet run is kept")
	assert.Equal(t, 2, *calls)
	assert.Equal(t, []Disturbance{{Run: "a", Others: 0.9}}, rep.Redone)
	assert.Empty(t, rep.Disturbed)

	f, calls = seq(0.9, 0.8, 0.7, 0.0)
	v, err = redo(context.Background(), e, rep, "b", id, f)
	require.NoError(t, err)
	assert.Equal(t, 1+maxRedo, *calls, "bounded")
	assert.InDelta(t, 0.7, v, 1e-9)
	assert.Equal(t, []Disturbance{{Run: "b", Others: 0.7}}, rep.Disturbed)
}
