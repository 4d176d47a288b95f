package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/verifyq/verifyq/internal/loadtest"
	"github.com/verifyq/verifyq/tasks"
)

// enqueuer is a running enqueuer process and its addresses.
type enqueuer struct {
	*proc
	http, grpc string
}

// startEnqueuer starts the enqueuer binary with the production defaults
// (limits and log level included); only the addresses are set.
func (e *env) startEnqueuer(ctx context.Context, name string) (*enqueuer, error) {
	var addrs [3]string
	for i := range addrs {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	p, err := startProc(ctx, name, filepath.Join(e.binDir, "enqueuer"), filepath.Join(e.logDir, name+".log"),
		map[string]string{"REDIS_URL": e.redis.URL(), "HTTP_ADDR": addrs[0], "GRPC_ADDR": addrs[1], "ADMIN_ADDR": addrs[2]})
	if err != nil {
		return nil, err
	}
	return &enqueuer{proc: p, http: addrs[0], grpc: addrs[1]}, nil
}

// startWorker starts the worker binary against the sink with concurrency
// WORKER_CONCURRENCY, everything else at its defaults.
func (e *env) startWorker(ctx context.Context, name string, concurrency int) (*proc, error) {
	admin, err := freeAddr()
	if err != nil {
		return nil, err
	}
	env := map[string]string{
		"REDIS_URL": e.redis.URL(), "ADMIN_ADDR": admin,
		"SMTP_HOST": e.sink.Host(), "SMTP_PORT": strconv.Itoa(e.sink.Port()), "SMTP_TLS": "none",
		"WORKER_CONCURRENCY": strconv.Itoa(concurrency),
	}
	return startProc(ctx, name, filepath.Join(e.binDir, "worker"), filepath.Join(e.logDir, name+".log"), env)
}

func (e *env) loadConfig(callers int) loadtest.Config {
	return loadtest.Config{Concurrency: callers, Duration: e.cfg.Duration, Warmup: e.cfg.Warmup}
}

// frontEnd measures the ceiling and each front end at both concurrencies.
func (e *env) frontEnd(ctx context.Context, rep *Report) error {
	ceil, err := newCeiling(e.redis.URL())
	if err != nil {
		return err
	}
	defer ceil.Close()
	rep.PoolSize = ceil.rdb.Options().PoolSize
	enq, err := e.startEnqueuer(ctx, "enqueuer-frontend")
	if err != nil {
		return err
	}
	defer func() { _ = enq.stop(30 * time.Second) }()

	rounds := max(e.cfg.Rounds, 1)
	seg := e.loadConfig(0)
	seg.Duration /= time.Duration(rounds)
	for _, callers := range []int{e.cfg.HighCallers, e.cfg.LowCallers} {
		seg.Concurrency = callers
		segs := map[string][]LoadRun{}
		for round := range rounds {
			name := fmt.Sprintf("ceiling, %d callers, round %d", callers, round+1)
			run, err := redo(ctx, e, rep, name, loadOthers, func(ctx context.Context) (LoadRun, error) {
				return e.ceilingRun(ctx, name, seg, ceil)
			})
			if err != nil {
				return err
			}
			segs["ceiling"] = append(segs["ceiling"], run)
			for _, target := range e.cfg.FrontEndTargets {
				name := fmt.Sprintf("%s, %d callers, round %d", target, callers, round+1)
				run, err := redo(ctx, e, rep, name, loadOthers, func(ctx context.Context) (LoadRun, error) {
					return e.frontEndRun(ctx, name, target, seg, enq)
				})
				if err != nil {
					return err
				}
				segs[target] = append(segs[target], run)
			}
		}
		rep.Ceiling = append(rep.Ceiling, mergeRuns(segs["ceiling"]))
		for _, target := range e.cfg.FrontEndTargets {
			rep.FrontEnd = append(rep.FrontEnd, mergeRuns(segs[target]))
		}
	}
	rep.EnqueuerFrontEndRSS, err = peakRSS(enq.pid())
	if err != nil {
		return err
	}
	return enq.stop(30 * time.Second)
}

// ceilingRun measures the ceiling: the two Redis round trips, in process.
func (e *env) ceilingRun(ctx context.Context, name string, lc loadtest.Config, ceil *ceiling) (LoadRun, error) {
	addr := loadtest.Addresses(e.runID())
	if err := e.flush(ctx); err != nil {
		return LoadRun{}, err
	}
	sent := ceil.counts.n.Load()
	run, err := e.measure(ctx, name, lc, map[string]int{},
		func(ctx context.Context, i int) string { return ceil.send(ctx, addr(i)) })
	if err != nil {
		return run, err
	}
	run.Target = "ceiling"
	if n := run.Result.Requests + run.Result.WarmupRequests; n > 0 {
		run.ClientCommands = float64(ceil.counts.n.Load()-sent) / float64(n)
	}
	return run, nil
}

// frontEndRun measures target on the running enqueuer.
func (e *env) frontEndRun(ctx context.Context, name, target string, lc loadtest.Config, enq *enqueuer) (LoadRun, error) {
	dst := enq.grpc
	conns := 1 // one channel, as the gateway keeps
	if target == loadtest.TargetHTTP {
		dst, conns = enq.http, lc.Concurrency
	}
	d, err := loadtest.NewDriver(target, dst, conns)
	if err != nil {
		return LoadRun{}, err
	}
	defer d.Close()
	if err := e.flush(ctx); err != nil {
		return LoadRun{}, err
	}
	run, err := e.measure(ctx, name, lc, map[string]int{"enqueuer": enq.pid()}, loadtest.Drive(d, loadtest.Addresses(e.runID())))
	run.Target = target
	return run, err
}

// prefill puts n send-code tasks (and their codes) in Redis, as n requests
// would, through the ceiling's path.
func (e *env) prefill(ctx context.Context, n int) error {
	ceil, err := newCeiling(e.redis.URL())
	if err != nil {
		return err
	}
	defer ceil.Close()
	addr := loadtest.Addresses(e.runID())
	res, err := loadtest.Run(ctx, loadtest.Config{Concurrency: 64, Duration: 2 * time.Minute, MaxRequests: n},
		func(ctx context.Context, i int) string { return ceil.send(ctx, addr(i)) })
	if err != nil {
		return err
	}
	if res.Outcomes[loadtest.OK] != n {
		return fmt.Errorf("prefill: %s, want ok=%d", loadtest.OutcomeString(res.Outcomes), n)
	}
	return nil
}

// DrainRun is a worker emptying a full queue into the sink.
type DrainRun struct {
	Name        string
	Mails       int
	Concurrency int
	SinkLatency time.Duration
	// Delivered counts mails the sink accepted; Rate is per second from
	// the first to the last.
	Delivered int
	Elapsed   time.Duration
	Rate      float64
	// Bound is the rate Concurrency allows at SinkLatency (0 when the
	// latency is 0).
	Bound float64
	// Connections is the number of SMTP connections the sink accepted.
	Connections int
	// Queue state after the drain.
	Retry, Archived, Pending int
	Commands                 commandsPerRequest
	CPU                      map[string]float64
	PeakRSS                  int64
}

// drain fills the queue with mails tasks, starts a worker with
// concurrency slots against the sink at latency, and measures how fast it
// empties the queue.
func (e *env) drain(ctx context.Context, name string, mails, concurrency int, latency time.Duration) (DrainRun, error) {
	r := DrainRun{Name: name, Mails: mails, Concurrency: concurrency, SinkLatency: latency}
	if latency > 0 {
		r.Bound = float64(concurrency) / latency.Seconds()
	}
	if err := e.flush(ctx); err != nil {
		return r, err
	}
	if err := e.prefill(ctx, mails); err != nil {
		return r, err
	}
	e.sink.ClearMessages()
	e.sink.SetLatency(latency)
	defer e.sink.SetLatency(0)
	conns := e.sink.Connections()
	before, err := readRedisStats(ctx, e.rdb)
	if err != nil {
		return r, err
	}
	w, err := e.startWorker(ctx, name, concurrency)
	if err != nil {
		return r, err
	}
	meter := newCPUMeter(map[string]int{"worker": w.pid(), "redis-server": e.redisPID, "harness (sink)": os.Getpid()})
	// Bounded: at a tenth of the expected rate plus a margin.
	limit := 30*time.Second + time.Duration(float64(mails)/300*float64(time.Second))
	waitCount(ctx, e.sink, mails, limit, 5*time.Second)
	r.CPU = meter.read()
	msgs := e.sink.Messages()
	r.Delivered = len(msgs)
	if len(msgs) > 1 {
		r.Elapsed = msgs[len(msgs)-1].Accepted.Sub(msgs[0].Accepted)
		r.Rate = float64(len(msgs)-1) / r.Elapsed.Seconds()
	}
	r.Connections = e.sink.Connections() - conns
	after, err := readRedisStats(ctx, e.rdb)
	if err != nil {
		return r, err
	}
	r.Commands = perRequest(before, after, max(r.Delivered, 1))
	if info, err := asynq.NewInspectorFromRedisClient(e.rdb).GetQueueInfo(tasks.Queue); err == nil {
		r.Retry, r.Archived, r.Pending = info.Retry, info.Archived, info.Pending
	}
	if r.PeakRSS, err = peakRSS(w.pid()); err != nil {
		return r, err
	}
	e.logf("%-34s %8.0f mails/s over %s, %d connections, retry=%d archived=%d  cpu %s",
		name, r.Rate, r.Elapsed.Round(time.Millisecond), r.Connections, r.Retry, r.Archived, cpuString(r.CPU))
	return r, w.stop(30 * time.Second)
}

// waitCount waits until the sink holds n messages, at most limit, or until
// none arrived for idle.
func waitCount(ctx context.Context, s interface{ Count() int }, n int, limit, idle time.Duration) {
	deadline := time.Now().Add(limit)
	last, lastChange := s.Count(), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		c := s.Count()
		if c >= n {
			return
		}
		if c != last {
			last, lastChange = c, time.Now()
		} else if time.Since(lastChange) > idle {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) workerDrains(ctx context.Context, rep *Report) error {
	var err error
	if rep.Drain, err = redo(ctx, e, rep, "worker-drain-0ms", drainOthers, func(ctx context.Context) (DrainRun, error) {
		return e.drain(ctx, "worker-drain-0ms", e.cfg.DrainMails, e.cfg.DrainConcurrency, 0)
	}); err != nil {
		return err
	}
	name := fmt.Sprintf("worker-drain-%s", e.cfg.SinkLatency)
	rep.SlowDrain, err = redo(ctx, e, rep, name, drainOthers, func(ctx context.Context) (DrainRun, error) {
		return e.drain(ctx, name, e.cfg.LatencyMails, e.cfg.LatencyConcurrency, e.cfg.SinkLatency)
	})
	return err
}

// E2ERun is requests at a fixed rate through the enqueuer and the worker
// to the sink.
type E2ERun struct {
	Load          LoadRun
	SinkLatency   time.Duration
	Concurrency   int
	ToAccept      loadtest.Percentiles
	Measured      int // measured requests answered OK
	Delivered     int // of those, mails the sink accepted
	Duplicates    int
	EnqueuerRSS   int64
	WorkerRSS     int64
	SMTPConns     int
	WaitedForMail time.Duration
}

func (e *env) endToEnd(ctx context.Context, rep *Report) error {
	r, err := redo(ctx, e, rep, "the request-to-mail run", func(r E2ERun) float64 { return r.Load.CPU[cpuOthers] }, e.e2eOnce)
	rep.E2E = r
	return err
}

// e2eOnce runs the request-to-mail measurement once.
func (e *env) e2eOnce(ctx context.Context) (E2ERun, error) {
	r := E2ERun{SinkLatency: e.cfg.E2ESinkLatency, Concurrency: e.cfg.E2EConcurrency}
	if err := e.flush(ctx); err != nil {
		return r, err
	}
	e.sink.ClearMessages()
	e.sink.SetLatency(r.SinkLatency)
	defer e.sink.SetLatency(0)
	conns := e.sink.Connections()
	enq, err := e.startEnqueuer(ctx, "enqueuer-e2e")
	if err != nil {
		return r, err
	}
	defer func() { _ = enq.stop(30 * time.Second) }()
	wrk, err := e.startWorker(ctx, "worker-e2e", r.Concurrency)
	if err != nil {
		return r, err
	}
	defer func() { _ = wrk.stop(30 * time.Second) }()

	d, err := loadtest.NewDriver(e.cfg.E2ETarget, enq.grpc, 1)
	if err != nil {
		return r, err
	}
	defer d.Close()
	id := e.runID()
	addr := loadtest.Addresses(id)
	lc := loadtest.Config{Concurrency: 64, Rate: e.cfg.E2ERate, Duration: e.cfg.E2EDuration, Warmup: e.cfg.Warmup}
	lc.MaxRequests = int(e.cfg.E2ERate*(lc.Warmup+lc.Duration).Seconds()) + 16
	starts := make([]atomic.Int64, lc.MaxRequests)
	oks := make([]atomic.Bool, lc.MaxRequests)
	measureFrom := time.Now().Add(lc.Warmup)
	r.Load, err = e.measure(ctx, fmt.Sprintf("e2e %s %.0f/s", e.cfg.E2ETarget, lc.Rate), lc,
		map[string]int{"enqueuer": enq.pid(), "worker": wrk.pid()},
		func(ctx context.Context, i int) string {
			starts[i].Store(time.Now().UnixNano())
			out := d.Send(ctx, addr(i))
			oks[i].Store(out == loadtest.OK)
			return out
		})
	if err != nil {
		return r, err
	}
	r.Load.Target = e.cfg.E2ETarget
	total := 0
	for i := range oks {
		if oks[i].Load() {
			total++
		}
	}
	waitStart := time.Now()
	waitCount(ctx, e.sink, total, 60*time.Second, 5*time.Second)
	r.WaitedForMail = time.Since(waitStart)
	r.SMTPConns = e.sink.Connections() - conns
	if r.EnqueuerRSS, err = peakRSS(enq.pid()); err != nil {
		return r, err
	}
	if r.WorkerRSS, err = peakRSS(wrk.pid()); err != nil {
		return r, err
	}

	seen := make([]bool, lc.MaxRequests)
	var lat []time.Duration
	for _, m := range e.sink.Messages() {
		if len(m.To) != 1 {
			continue
		}
		i := loadtest.Index(id, m.To[0])
		if i < 0 || i >= len(starts) {
			continue
		}
		if seen[i] {
			r.Duplicates++
			continue
		}
		seen[i] = true
		start := time.Unix(0, starts[i].Load())
		if start.Before(measureFrom) || !oks[i].Load() {
			continue
		}
		lat = append(lat, m.Accepted.Sub(start))
	}
	for i := range oks {
		if oks[i].Load() && !time.Unix(0, starts[i].Load()).Before(measureFrom) {
			r.Measured++
		}
	}
	r.Delivered = len(lat)
	r.ToAccept = loadtest.Summarise(lat)
	e.logf("%-34s request to SMTP accept %s, %d/%d delivered, RSS enqueuer %s worker %s",
		"e2e", r.ToAccept, r.Delivered, r.Measured, mb(r.EnqueuerRSS), mb(r.WorkerRSS))
	return r, errors.Join(wrk.stop(30*time.Second), enq.stop(30*time.Second))
}

// maxRedo bounds how often one run is done again because other processes
// disturbed it.
const maxRedo = 2

// redo runs f, and runs it again (at most maxRedo times, each after waiting
// for the machine to be quiet) while other processes used quietCores or
// more during it: a measurement that shared the cores with foreign work
// says little. A run still disturbed after that is kept and listed in the
// report.
func redo[T any](ctx context.Context, e *env, rep *Report, name string, others func(T) float64, f func(context.Context) (T, error)) (T, error) {
	for attempt := 0; ; attempt++ {
		v, err := f(ctx)
		if err != nil {
			return v, err
		}
		o := others(v)
		if o < quietCores {
			return v, nil
		}
		if attempt == maxRedo {
			rep.Disturbed = append(rep.Disturbed, Disturbance{Run: name, Others: o})
			e.logf("%s: other processes used %.2f cores, still, after %d runs; keeping it, marked", name, o, attempt+1)
			return v, nil
		}
		rep.Redone = append(rep.Redone, Disturbance{Run: name, Others: o})
		e.logf("%s: other processes used %.2f cores during it; running it again when they are quiet", name, o)
		waitQuiet(ctx, map[string]int{"harness": os.Getpid(), "redis-server": e.redisPID}, e.cfg.QuietWait)
	}
}

// Disturbance is a run during which other processes used the cores.
type Disturbance struct {
	Run    string
	Others float64 // cores
}

func loadOthers(r LoadRun) float64   { return r.CPU[cpuOthers] }
func drainOthers(r DrainRun) float64 { return r.CPU[cpuOthers] }

func mb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }
