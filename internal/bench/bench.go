// Package bench is the whole-system benchmark behind `make bench`: it builds
// the enqueuer and the worker, runs them as processes against a
// redis-server and an in-process SMTP sink of its own, drives them with
// internal/loadtest, measures the design's ceiling (the two Redis round
// trips of a send, with no RPC around them) in the same run, and writes
// BENCHMARKS.md from what it measured.
//
// Everything listens on loopback; every load loop is bounded in requests
// and in time.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/loadtest"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/tasks"
)

// Config says how long and how hard to run.
type Config struct {
	// Root is the module's directory (where go.mod is).
	Root string
	// WorkDir receives the binaries, process logs and profiles.
	WorkDir string
	// Warmup and Duration of each front-end and ceiling run. The
	// duration is split into Rounds segments, each with its own warm-up:
	// the ceiling and the front ends take turns, so that a change in the
	// machine's speed during the run (it is a VM) affects them alike.
	Warmup, Duration time.Duration
	Rounds           int
	// HighCallers and LowCallers are the two closed-loop concurrencies.
	HighCallers, LowCallers int
	// DrainMails is the queue length of the zero-latency drain;
	// LatencyMails that of the drain into the slow sink.
	DrainMails, LatencyMails int
	// DrainConcurrency is WORKER_CONCURRENCY of the zero-latency drain;
	// LatencyConcurrency that of the drain into the slow sink.
	DrainConcurrency, LatencyConcurrency int
	// SinkLatency is the SMTP latency of the slow-sink drain.
	SinkLatency time.Duration
	// E2ERate, E2EDuration, E2ESinkLatency and E2EConcurrency
	// (WORKER_CONCURRENCY) shape the request-to-mail run.
	E2ERate         float64
	E2EDuration     time.Duration
	E2ESinkLatency  time.Duration
	E2EConcurrency  int
	E2ETarget       string
	ProfileSeconds  int
	GoBenchtime     string
	Progress        io.Writer
	FrontEndTargets []string
	// QuietWait bounds the wait for a quiet machine before each phase.
	QuietWait time.Duration
	// Only, when not empty, runs just the phases named (gobench,
	// frontend, drain, e2e, profile): for work on the harness, the report
	// is then incomplete.
	Only map[string]bool
}

// DefaultConfig is what `make bench` runs: about five minutes on a 2-core
// machine.
func DefaultConfig() Config {
	return Config{
		Warmup:             time.Second,
		Duration:           10 * time.Second,
		Rounds:             2,
		HighCallers:        64,
		LowCallers:         8,
		DrainMails:         40_000,
		DrainConcurrency:   20,
		LatencyMails:       10_000,
		LatencyConcurrency: 50,
		SinkLatency:        50 * time.Millisecond,
		E2ERate:            500,
		E2EDuration:        20 * time.Second,
		E2ESinkLatency:     100 * time.Millisecond,
		E2EConcurrency:     100,
		E2ETarget:          loadtest.TargetGRPCLegacy,
		ProfileSeconds:     8,
		GoBenchtime:        "1s",
		FrontEndTargets:    loadtest.Targets,
		QuietWait:          time.Minute,
	}
}

// quiet waits for the machine to be quiet before a phase (see waitQuiet)
// and notes the wait in the report.
func (e *env) quiet(ctx context.Context, rep *Report, phase string) {
	waited, others := waitQuiet(ctx, map[string]int{"harness": os.Getpid(), "redis-server": e.redisPID}, e.cfg.QuietWait)
	if waited > 1500*time.Millisecond {
		e.logf("waited %s for other processes to go quiet before %s (they used %.2f cores at the last look)", waited.Round(time.Second), phase, others)
	}
	rep.QuietChecks = append(rep.QuietChecks, QuietCheck{Phase: phase, Waited: waited, Others: others})
}

// QuietCheck is the wait for a quiet machine before a phase.
type QuietCheck struct {
	Phase  string
	Waited time.Duration
	Others float64 // cores other processes used at the last look
}

func (c Config) runs(phase string) bool { return len(c.Only) == 0 || c.Only[phase] }

// env is what a run shares: Redis, the sink, the binaries.
type env struct {
	cfg      Config
	redis    *redistest.Server
	rdb      *redis.Client // the harness's own: flush, INFO, inspection
	redisPID int
	sink     *smtptest.Server
	binDir   string
	logDir   string
	profDir  string
	runs     atomic.Int64
}

func (e *env) logf(format string, args ...any) {
	if e.cfg.Progress != nil {
		fmt.Fprintf(e.cfg.Progress, "bench: "+format+"\n", args...)
	}
}

// runID names the addresses of one load run, distinct across runs.
func (e *env) runID() string {
	return strconv.FormatInt(time.Now().Unix()%100000, 36) + "r" + strconv.FormatInt(e.runs.Add(1), 10)
}

// Run runs every benchmark and returns the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	began := time.Now()
	e := &env{cfg: cfg,
		binDir:  filepath.Join(cfg.WorkDir, "bin"),
		logDir:  filepath.Join(cfg.WorkDir, "logs"),
		profDir: filepath.Join(cfg.WorkDir, "profiles"),
	}
	for _, d := range []string{e.binDir, e.logDir, e.profDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	rep := &Report{Config: cfg}
	var err error
	if rep.Machine, err = describeMachine(ctx); err != nil {
		return nil, err
	}

	if cfg.runs("gobench") {
		e.logf("go test -bench (codes, mail)")
		if rep.GoBenchmarks, err = goBenchmarks(ctx, cfg.Root, cfg.GoBenchtime); err != nil {
			return nil, err
		}
	}

	e.logf("building the enqueuer and the worker")
	if err := build(ctx, cfg.Root, e.binDir); err != nil {
		return nil, err
	}
	if e.redis, err = redistest.New(); err != nil {
		return nil, err
	}
	defer e.redis.Close()
	e.rdb = redis.NewClient(&redis.Options{Addr: e.redis.Addr()})
	defer e.rdb.Close()
	if e.redisPID, err = redisPID(ctx, e.rdb); err != nil {
		return nil, err
	}
	if e.sink, err = smtptest.New(smtptest.WithEnvelopeOnly()); err != nil {
		return nil, err
	}
	defer e.sink.Close()

	if cfg.runs("frontend") {
		e.quiet(ctx, rep, "the front-end runs")
		if err := e.frontEnd(ctx, rep); err != nil {
			return nil, err
		}
	}
	if cfg.runs("drain") {
		e.quiet(ctx, rep, "the worker drains")
		if err := e.workerDrains(ctx, rep); err != nil {
			return nil, err
		}
	}
	if cfg.runs("e2e") {
		e.quiet(ctx, rep, "the request-to-mail run")
		if err := e.endToEnd(ctx, rep); err != nil {
			return nil, err
		}
	}
	if cfg.runs("profile") {
		e.quiet(ctx, rep, "the profiles")
		if err := e.profiles(ctx, rep); err != nil {
			return nil, err
		}
	}
	rep.finished = time.Now()
	rep.Took = rep.finished.Sub(began).Round(time.Second)
	rep.evaluate()
	return rep, nil
}

func redisPID(ctx context.Context, rdb *redis.Client) (int, error) {
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("no process_id in INFO server")
}

// flush empties Redis between runs so that each starts alike. The scripts
// stay cached.
func (e *env) flush(ctx context.Context) error { return e.rdb.FlushDB(ctx).Err() }

// LoadRun is one measured load run.
type LoadRun struct {
	Name     string
	Target   string
	Callers  int
	Rate     float64
	Result   loadtest.Result
	Commands commandsPerRequest
	// ClientCommands counts commands per request as the ceiling's go-redis
	// client sent them (ceiling runs only).
	ClientCommands float64
	// CPU is each process's CPU use during the run, in cores.
	CPU map[string]float64
	// Segments is the number of runs merged into this one.
	Segments int

	redisDelta redisStats
}

// mergeRuns merges segments of the same load taken at different times.
func mergeRuns(segs []LoadRun) LoadRun {
	if len(segs) == 0 {
		return LoadRun{}
	}
	m := segs[0]
	m.Segments = len(segs)
	var results []loadtest.Result
	delta := redisStats{calls: map[string]int64{}}
	cpu := map[string]float64{}
	var wall float64
	for _, s := range segs {
		results = append(results, s.Result)
		delta = delta.add(s.redisDelta)
		w := s.Result.Elapsed.Seconds()
		wall += w
		for k, v := range s.CPU {
			cpu[k] += v * w
		}
	}
	for k := range cpu {
		cpu[k] /= wall
	}
	m.Result = loadtest.Merge(results...)
	m.redisDelta = delta
	m.Commands = perRequestDelta(delta, m.Result.Requests+m.Result.WarmupRequests)
	m.CPU = cpu
	return m
}

// ceiling is the design's limit: the two Redis round trips of a send
// (get-or-create with the production limits, enqueue), with no RPC around
// them, on a client configured as the enqueuer's.
type ceiling struct {
	store  *codes.Store
	queue  *asynq.Client
	rdb    *redis.Client
	counts *countHook
}

func newCeiling(redisURL string) (*ceiling, error) {
	opt, err := platform.ParseRedisURL(redisURL)
	if err != nil {
		return nil, err
	}
	rdb := platform.NewRedis(opt) // as the enqueuer's
	hook := &countHook{}
	rdb.AddHook(hook)
	store, err := codes.NewStore(rdb, codes.Config{KeyPrefix: codes.DefaultKeyPrefix, TTL: codes.DefaultTTL,
		Length: codes.DefaultLength, Limits: codes.DefaultLimits()})
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	return &ceiling{store: store, queue: asynq.NewClientFromRedisClient(rdb), rdb: rdb, counts: hook}, nil
}

func (c *ceiling) Close() error { return c.rdb.Close() }

// send is what service.SendCode does in Redis for email.
func (c *ceiling) send(ctx context.Context, email string) string {
	now := time.Now()
	issued, err := c.store.GetOrCreate(ctx, codes.Request{Email: email})
	if errors.Is(err, codes.ErrRateLimited) {
		return "rate_limited"
	}
	if err != nil {
		return "redis_error"
	}
	task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{Email: email, Locale: "zh-CN",
		RequestedAt: now, ExpiresAt: now.Add(issued.ExpiresIn)})
	if err != nil {
		return "error"
	}
	if _, err := c.queue.EnqueueContext(ctx, task); err != nil {
		return "redis_error"
	}
	return loadtest.OK
}

// countHook counts the commands a go-redis client sends (pipelines
// included).
type countHook struct{ n atomic.Int64 }

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// measure runs req as lc says between Redis and CPU snapshots.
func (e *env) measure(ctx context.Context, name string, lc loadtest.Config, pids map[string]int, req loadtest.Request) (LoadRun, error) {
	before, err := readRedisStats(ctx, e.rdb)
	if err != nil {
		return LoadRun{}, err
	}
	pids["redis-server"] = e.redisPID
	pids["harness"] = os.Getpid()
	// Measure CPU over the measured part only: start the meter after the
	// warm-up.
	var meter atomic.Pointer[cpuMeter]
	timer := time.AfterFunc(lc.Warmup, func() { meter.Store(newCPUMeter(pids)) })
	res, err := loadtest.Run(ctx, lc, req)
	timer.Stop()
	if err != nil {
		return LoadRun{}, err
	}
	after, err := readRedisStats(ctx, e.rdb)
	if err != nil {
		return LoadRun{}, err
	}
	run := LoadRun{Name: name, Callers: lc.Concurrency, Rate: lc.Rate, Result: res}
	if m := meter.Load(); m != nil {
		run.CPU = m.read()
	}
	// The warm-up's requests are in the Redis counters too: divide by all
	// requests sent, not only the measured ones.
	run.redisDelta = after.sub(before)
	run.Commands = perRequestDelta(run.redisDelta, res.Requests+res.WarmupRequests)
	e.logf("%-34s %8.0f/s  %s  %s  cpu %s", name, res.Throughput, res.Latency, loadtest.OutcomeString(res.Outcomes), cpuString(run.CPU))
	return run, nil
}

// QuickConfig shortens every run of cfg, to check the harness end to end
// in about a minute.
func QuickConfig(cfg Config) Config {
	cfg.Warmup = 500 * time.Millisecond
	cfg.Duration = 2 * time.Second
	cfg.DrainMails = 5000
	cfg.LatencyMails = 2000
	cfg.E2EDuration = 4 * time.Second
	cfg.ProfileSeconds = 2
	cfg.GoBenchtime = "100ms"
	return cfg
}

// cpuString formats CPU shares: "enqueuer 0.93 redis-server 0.71".
func cpuString(m map[string]float64) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	var b strings.Builder
	for i, k := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s %.2f", k, m[k])
	}
	return b.String()
}
