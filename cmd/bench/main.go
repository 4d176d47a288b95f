// Command bench is `make bench`: it builds the enqueuer and the worker, runs
// them against a redis-server and an SMTP sink (internal/smtptest) of its
// own on loopback, drives the front ends with ghz (gRPC) and vegeta (HTTP),
// measures what only verifyq can (the ceiling of a send's two Redis round
// trips, Redis commands per request, the worker's drain rate,
// request-to-SMTP-accept latency, peak RSS), runs the front ends and the
// drain again on a 3-master Redis Cluster beside the single node, and
// rewrites the generated block of BENCHMARKS.md. With -baseline it also
// builds a git ref in a temporary worktree and runs the gRPC front ends and
// the drain on both builds in alternating rounds, each figure with its ratio
// to the baseline's; with -profile it saves CPU profiles, Redis command
// counts and slow logs of the tree's runs and heap profiles after the
// request-to-accept load. Every run is bounded in time.
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/tasks"
)

type config struct {
	ghz, vegeta, work       string
	warmup, duration        time.Duration
	high, low               int       // callers of the closed-loop runs
	drain, slow             drainSpec // into a 0 ms sink and a slow one
	e2eRate, e2eConc        int
	e2eDuration, e2eLatency time.Duration
	benchtime               string
	baseline                string // a git ref to compare with; "" for none
	rounds                  int    // of the comparison
	profile                 string // directory for profiles; "" for none
}

var defaultConfig = config{warmup: time.Second, duration: 10 * time.Second, high: 64, low: 8,
	drain: drainSpec{40_000, 20, 0}, slow: drainSpec{10_000, 50, 50 * time.Millisecond},
	e2eRate: 500, e2eConc: 100, e2eDuration: 20 * time.Second, e2eLatency: 100 * time.Millisecond, benchtime: "1s", rounds: 3}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	cfg := defaultConfig
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&cfg.ghz, "ghz", "bin/ghz", "the ghz binary (make bench builds it from tools/go.mod)")
	fs.StringVar(&cfg.vegeta, "vegeta", "bin/vegeta", "the vegeta binary")
	fs.StringVar(&cfg.work, "work", "tmp-bench", "directory for binaries, logs and load results")
	fs.StringVar(&cfg.baseline, "baseline", "", "git ref whose build the tree's is compared with, in alternating rounds")
	fs.IntVar(&cfg.rounds, "rounds", cfg.rounds, "rounds of the comparison with -baseline")
	fs.StringVar(&cfg.profile, "profile", "", "directory for CPU profiles (64 callers, the 0 ms drain), Redis commandstats and slow logs, heap profiles (after the request-to-accept load)")
	out := fs.String("out", "BENCHMARKS.md", "file whose bench block is rewritten")
	quick := fs.Bool("quick", false, "short runs, to check the harness (about a minute; write to other files)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.rounds < 1 {
		return errors.New("-rounds: must be at least 1")
	}
	if *quick {
		cfg.warmup, cfg.duration, cfg.drain.mails, cfg.slow.mails = 300*time.Millisecond, 2*time.Second, 5000, 2000
		cfg.e2eDuration, cfg.benchtime = 4*time.Second, "100ms"
	}
	rep, err := measureAll(ctx, cfg)
	if err != nil {
		return err
	}
	return rewriteBlock(*out, rep.benchmarks())
}

// env is what the runs share.
type env struct {
	cfg      config
	build    build                 // whose binaries start runs
	redis    redistest.Deployment  // single or cluster
	rdb      redis.UniversalClient // the harness's and the ceiling's: queue lengths
	nodes    []*redis.Client       // one per master: flush, INFO
	redisPID []int                 // every master's
	shards   int                   // QUEUE_SHARDS: 1 on a single node, one per master on a cluster
	prefix   string                // of the cluster runs' names and logs
	sink     *smtptest.Server
	limiter  *limits.Limiter // the ceiling's
	queue    *asynq.Client   // the ceiling's
	version  string          // Redis's
	err      error           // the first error of a Redis read (see counts)
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...) }

func measureAll(ctx context.Context, cfg config) (*report, error) {
	rep := &report{cfg: cfg, date: time.Now()}
	if err := os.MkdirAll(filepath.Join(cfg.work, "logs"), 0o750); err != nil { // go build makes bin/
		return nil, err
	}
	if err := os.MkdirAll(cmp.Or(cfg.profile, cfg.work), 0o750); err != nil {
		return nil, err
	}
	logf("go test -bench ./limits ./mail")
	out, err := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", ".", "-benchtime", cfg.benchtime, "./limits", "./mail").CombinedOutput() //nolint:gosec // G204: go and its arguments are the harness's own
	if err != nil {
		return nil, fmt.Errorf("go test -bench: %w\n%s", err, out)
	}
	rep.goBench = slices.DeleteFunc(strings.Split(string(out), "\n"), func(l string) bool { return !strings.HasPrefix(l, "Benchmark") && !strings.HasPrefix(l, "pkg:") })
	e := &env{cfg: cfg, build: build{name: "tree", bin: filepath.Join(cfg.work, "bin")}}
	logf("building the enqueuer and the worker")
	if err := e.build.compile(ctx, "."); err != nil {
		return nil, err
	}
	var base build
	if cfg.baseline != "" {
		logf("building %s in a temporary worktree", cfg.baseline)
		if base, err = checkout(ctx, cfg.baseline, filepath.Join(cfg.work, "bin-baseline")); err != nil {
			return nil, err
		}
	}
	if e.sink, err = smtptest.New(smtptest.WithEnvelopeOnly()); err != nil {
		return nil, err
	}
	defer func() { _ = e.sink.Close() }()
	// The front ends and the drain on a single node, then on a cluster; the
	// slow drain, the end-to-end run and the comparison with the baseline
	// on the single node only.
	for i, mode := range []string{redistest.ModeSingle, redistest.ModeCluster} {
		closeRedis, err := e.open(ctx, mode)
		ph := []*phase{&rep.single, &rep.cluster}[i]
		if err == nil {
			err = e.frontEnd(ctx, ph, frontEnds)
		}
		if err == nil {
			ph.drain, err = e.drain(ctx, cfg.drain)
		}
		if err == nil && mode == redistest.ModeSingle {
			if rep.slowDrain, err = e.drain(ctx, cfg.slow); err == nil {
				rep.e2e, err = e.endToEnd(ctx)
			}
			if err == nil && cfg.baseline != "" {
				rep.rounds, rep.floors, err = e.compare(ctx, [2]build{e.build, base}, rep.single.runs)
			}
		}
		closeRedis()
		if err != nil {
			return nil, err
		}
	}
	rep.took = time.Since(rep.date).Round(time.Second)
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	rep.machine = fmt.Sprintf("%d × %s, %s, Redis %s", runtime.NumCPU(), field(string(cpuinfo), "model name"), runtime.Version(), e.version)
	return rep, nil
}

// open starts the Redis deployment of mode and the harness's clients of it;
// the function it returns closes them all, also after an error.
func (e *env) open(ctx context.Context, mode string) (func(), error) {
	var d interface {
		redistest.Deployment
		Masters() ([]string, error)
	}
	var err error
	if e.nodes, e.redisPID, e.shards, e.prefix = nil, nil, 1, ""; mode == redistest.ModeCluster {
		d, err = redistest.NewCluster()
		e.shards, e.prefix = redistest.ClusterMasters, "cluster-"
	} else {
		d, err = redistest.New()
	}
	if err != nil {
		return func() {}, err
	}
	r, _ := platform.ParseRedis(mode, d.URL())
	e.redis, e.rdb = d, r.Client()
	closeAll := func() {
		for _, n := range e.nodes {
			_ = n.Close()
		}
		_ = e.rdb.Close()
		d.Close()
	}
	addrs, err := d.Masters()
	for _, a := range addrs {
		n := redis.NewClient(&redis.Options{Addr: a})
		info := n.Info(ctx, "server").Val()
		pid, _ := strconv.Atoi(field(info, "process_id"))
		e.nodes, e.redisPID, e.version = append(e.nodes, n), append(e.redisPID, pid), field(info, "redis_version")
	}
	if err == nil {
		var store *codes.Store
		store, err = codes.NewStore(e.rdb, codes.Config{KeyPrefix: codes.DefaultKeyPrefix, TTL: codes.DefaultTTL,
			Length: codes.DefaultLength, MaxAttempts: codes.DefaultMaxAttempts})
		if err == nil {
			l := limits.Default()
			l.Identity = mail.Identity{TagSeparators: mail.DefaultTagSeparators}
			e.limiter, err = limits.New(e.rdb, l, store)
		}
		e.queue = asynq.NewClientFromRedisClient(e.rdb)
	}
	return closeAll, err
}

// field returns the value of the first "key: value" line of text, or "".
func field(text, key string) string {
	for line := range strings.SplitSeq(text, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// build is the enqueuer and the worker of one tree: the work tree's or the
// baseline's.
type build struct {
	name    string // in the names of logs
	bin     string // the directory that holds the two binaries
	smtpURL bool   // the worker takes SMTP_URL (and refuses SMTP_HOST and the like)
}

// compile builds the enqueuer and the worker of the tree at src into b.bin
// and reads from its Go code which configuration the worker takes.
func (b *build) compile(ctx context.Context, src string) error {
	bin, err := filepath.Abs(b.bin)
	if err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "go", "build", "-C", src, "-o", bin+"/", "./cmd/enqueuer", "./cmd/worker").CombinedOutput(); err != nil { //nolint:gosec // G204: go and its arguments are the harness's own
		return fmt.Errorf("go build (%s): %w\n%s", b.name, err, out)
	}
	// git grep exits 1 when nothing matches; the harness itself names both forms.
	b.smtpURL = exec.CommandContext(ctx, "git", "-C", src, "grep", "-q", "SMTP_URL", "--", "*.go", ":(exclude)cmd/bench").Run() == nil //nolint:gosec // G204: git and its arguments are the harness's own
	return nil
}

// checkout builds ref in a temporary git worktree, removed afterwards,
// into bin.
func checkout(ctx context.Context, ref, bin string) (build, error) {
	tmp, err := os.MkdirTemp("", "verifyq-baseline-")
	if err != nil {
		return build{}, err
	}
	dir, b := filepath.Join(tmp, "tree"), build{name: "baseline", bin: bin}
	if out, err := exec.CommandContext(ctx, "git", "worktree", "add", "--detach", dir, ref).CombinedOutput(); err != nil { //nolint:gosec // G204: the ref is checked out, never run
		_ = os.RemoveAll(tmp)
		return b, fmt.Errorf("git worktree add %s: %w\n%s", ref, err, out)
	}
	err = b.compile(ctx, dir)
	out, rmErr := exec.Command("git", "worktree", "remove", "--force", dir).CombinedOutput() //nolint:gosec // G204: as above
	if rmErr != nil {
		rmErr = fmt.Errorf("git worktree remove %s: %w\n%s", dir, rmErr, out)
	}
	return b, errors.Join(err, rmErr, os.RemoveAll(tmp))
}

// workerEnv is the configuration the build's worker takes for the sink
// with conc slots: one SMTP_URL, or the separate variables of older trees,
// never both.
func (b build) workerEnv(sink *smtptest.Server, conc int) map[string]string {
	// As many connections as slots: the sink, unlike a provider's relay,
	// caps none (a build that predates SMTP_MAX_CONNECTIONS ignores it).
	env := map[string]string{"WORKER_CONCURRENCY": strconv.Itoa(conc), "SMTP_MAX_CONNECTIONS": strconv.Itoa(conc)}
	if b.smtpURL {
		env["SMTP_URL"] = "smtp://" + net.JoinHostPort(sink.Host(), strconv.Itoa(sink.Port())) + "?tls=none"
	} else {
		env["SMTP_HOST"], env["SMTP_PORT"], env["SMTP_TLS"] = sink.Host(), strconv.Itoa(sink.Port()), "none"
	}
	return env
}

// proc is a binary the harness started.
type proc struct {
	name, log string
	env       map[string]string
	cmd       *exec.Cmd
	done      chan error
}

// start runs the binary name from the work directory with env, its output
// in logs/<logName>.log, and waits until its admin server answers /readyz.
func (e *env) start(ctx context.Context, name, logName string, env map[string]string) (*proc, error) {
	admin := freeAddr()
	env["ADMIN_ADDR"], env["REDIS_MODE"], env["REDIS_URL"], env["QUEUE_SHARDS"] = admin, e.redis.Mode(), e.redis.URL(), strconv.Itoa(e.shards)
	p := &proc{name: name, env: env, log: filepath.Join(e.cfg.work, "logs", e.prefix+logName+".log"), done: make(chan error, 1)}
	f, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()                       // the child has its own descriptor
	p.cmd = exec.Command(filepath.Join(e.build.bin, name)) //nolint:gosec // G204: a binary the harness built
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.done <- p.cmd.Wait() }()
	for deadline := time.Now().Add(20 * time.Second); platform.HealthCheck(ctx, admin) != nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = p.stop()
			return nil, fmt.Errorf("%s not ready within 20s (log: %s)", name, p.log)
		}
	}
	return p, nil
}

// startEnqueuer starts an enqueuer with its defaults but the addresses (in env).
func (e *env) startEnqueuer(ctx context.Context, logName string) (*proc, error) {
	// The load generators are one source standing for many clients: their
	// 64 HTTP callers would fill the default share of one source exactly.
	return e.start(ctx, "enqueuer", logName, map[string]string{"GRPC_ADDR": freeAddr(), "HTTP_ADDR": freeAddr(),
		"MAX_CONNECTIONS_PER_SOURCE": "0"})
}

// startWorker starts a worker against the sink with conc slots.
func (e *env) startWorker(ctx context.Context, logName string, conc int) (*proc, error) {
	return e.start(ctx, "worker", logName, e.build.workerEnv(e.sink, conc))
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM, waits at most 30 s, then kills; it may be called again.
func (p *proc) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		err = fmt.Errorf("no exit within 30s of SIGTERM: %w", <-p.done)
	}
	p.done <- err
	if err != nil {
		return fmt.Errorf("%s: %w (log: %s)", p.name, err, p.log)
	}
	return nil
}

// freeAddr returns a free loopback address (on failure, one no process can use).
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// peakRSS returns VmHWM, the peak resident set size of pid, in bytes or 0.
func peakRSS(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	kb, _ := strconv.ParseInt(strings.TrimSuffix(field(string(b), "VmHWM"), " kB"), 10, 64)
	return kb << 10
}

// cpuTimes returns the user plus system CPU time the named processes have
// used, from utime and stime in /proc/<pid>/stat (in USER_HZ, 100 a
// second). A name may stand for several processes (every master of a cluster).
func cpuTimes(pids map[string][]int) map[string]time.Duration {
	used := map[string]time.Duration{}
	for name, ps := range pids {
		for _, pid := range ps {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:])); len(f) >= 13 { // the name may hold spaces
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				used[name] += time.Duration(ut+st) * 10 * time.Millisecond
			}
		}
	}
	return used
}

// cpuMeter starts measuring the named processes' CPU; the function it
// returns gives each one's use since, in cores (1.00: one core all the time).
func cpuMeter(pids map[string][]int) func() map[string]float64 {
	start, at := cpuTimes(pids), time.Now()
	return func() map[string]float64 {
		out := map[string]float64{}
		for name, used := range cpuTimes(pids) {
			out[name] = float64(used-start[name]) / float64(time.Since(at))
		}
		return out
	}
}

// grpcCalls are the gRPC front ends as ghz names them; "http" is vegeta's.
var grpcCalls = map[string]string{"grpc-legacy": "message.VarifyService.GetVarifyCode", "grpc-v1": "verifyq.v1.CodeService.SendCode"}

// queued counts the tasks in state over every queue shard: asynq keeps the
// pending ones in a list, the others in sorted sets.
func (e *env) queued(ctx context.Context, state string) (n int64) {
	for _, q := range tasks.Queues(e.shards) {
		if key := "asynq:{" + q + "}:" + state; state == "pending" {
			n += e.rdb.LLen(ctx, key).Val()
		} else {
			n += e.rdb.ZCard(ctx, key).Val()
		}
	}
	return n
}

// send does in Redis what a send request does for email: the ceiling, the
// design's limit, is its two round trips (get-or-create with the default
// limits, enqueue) with no RPC, as the enqueuer makes them.
func (e *env) send(ctx context.Context, email string) error {
	now := time.Now()
	issued, err := e.limiter.Admit(ctx, limits.Request{Email: email})
	if err != nil {
		return err
	}
	task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{Email: email, Locale: "zh-CN", RequestedAt: now, ExpiresAt: now.Add(issued.ExpiresIn)})
	if err == nil {
		_, err = e.queue.EnqueueContext(ctx, task, asynq.Queue(tasks.QueueFor(email, e.shards)))
	}
	return err
}

// ceiling sends for new addresses, callers at a time (a closed loop), until
// n are sent or d has passed.
func (e *env) ceiling(ctx context.Context, tag string, callers, n int, d time.Duration) toolResult {
	var next, failed atomic.Int64
	start, lats := time.Now(), make([][]time.Duration, callers)
	var wg sync.WaitGroup
	for w := range callers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n && time.Since(start) < d && ctx.Err() == nil; i = int(next.Add(1)) - 1 {
				t := time.Now()
				if e.send(ctx, address(tag, i)) != nil {
					failed.Add(1)
					continue
				}
				lats[w] = append(lats[w], time.Since(t))
			}
		})
	}
	wg.Wait()
	all := slices.Concat(lats...)
	return toolResult{statuses: map[string]int{"ok": len(all), "error": int(failed.Load())}, elapsed: time.Since(start), lat: percentiles(all)}
}

// topLevel are the commands clients send; every other one counted during
// a run (but the harness's INFO) was run by a Lua script.
var topLevel = []string{"evalsha", "eval", "sadd", "ping", "hello", "client|setinfo", "select", "auth", "script|load"}

// cmdstat is one command's calls and the CPU time Redis spent in them.
type cmdstat struct{ calls, usec int64 }

// counts reads Redis's commandstats by command, and under "" the calls of
// all commands, the scripts' included, summed over the masters; the first
// error is kept in e.err.
func (e *env) counts(ctx context.Context) map[string]cmdstat {
	c := map[string]cmdstat{}
	for _, n := range e.nodes {
		info, err := n.InfoMap(ctx, "stats", "commandstats").Result()
		e.err = errors.Join(e.err, err)
		addCommandstats(c, info)
	}
	return c
}

// addCommandstats adds the Stats and Commandstats sections of one INFO to c.
func addCommandstats(c map[string]cmdstat, info map[string]map[string]string) {
	total, _ := strconv.ParseInt(info["Stats"]["total_commands_processed"], 10, 64)
	c[""] = cmdstat{calls: c[""].calls + total}
	for name, fields := range info["Commandstats"] { // cmdstat_evalsha: calls=2,usec=15,usec_per_call=7.50,...
		s := c[strings.TrimPrefix(name, "cmdstat_")]
		for f := range strings.SplitSeq(fields, ",") {
			k, v, _ := strings.Cut(f, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				s.calls += n
			case "usec":
				s.usec += n
			}
		}
		c[strings.TrimPrefix(name, "cmdstat_")] = s
	}
}

// harness are the commands the harness itself sends during a run.
var harness = []string{"info", "config|set", "slowlog|get", "slowlog|reset"}

// commands is a run's cost in Redis per request: commands sent (round
// trips), the script calls among them, the rest, commands the scripts ran,
// and the CPU time Redis spent in the commands sent (the time of EVALSHA
// includes the commands its script ran, which commandstats also counts on
// their own: they are not added twice).
type commands struct{ sent, evalsha, eval, other, inScripts, usec float64 }

func perRequest(before, after map[string]cmdstat, n int) commands {
	d := func(name string) float64 { return float64(after[name].calls-before[name].calls) / float64(max(n, 1)) }
	var c commands
	for _, name := range topLevel {
		c.sent += d(name)
		c.usec += float64(after[name].usec-before[name].usec) / float64(max(n, 1))
	}
	c.evalsha, c.eval = d("evalsha"), d("eval")
	c.other = c.sent - c.evalsha - c.eval
	c.inScripts = d("") - c.sent
	for _, name := range harness {
		c.inScripts -= d(name)
	}
	return c
}

// loadRun is one measured closed-loop run of a front end or the ceiling.
type loadRun struct {
	name              string
	callers, enqueued int // enqueued: send tasks that reached the queue
	res               toolResult
	cmds              commands
	cpu               map[string]float64
}

// okRate is the send requests a second whose task reached the queue.
func (r loadRun) okRate() float64 { return float64(r.enqueued) / r.res.elapsed.Seconds() }

// phase is what the front ends and the 0 ms drain measured on one deployment.
type phase struct {
	runs  []loadRun
	rss   int64 // the enqueuer's peak after the runs
	drain drainRun
}

// run returns the front-end (or ceiling) run name at callers.
func (ph *phase) run(name string, callers int) loadRun {
	for _, l := range ph.runs {
		if l.name == name && l.callers == callers {
			return l
		}
	}
	return loadRun{res: toolResult{elapsed: 1}}
}

// frontEnds are the runs of frontEnd: the ceiling first, since the gRPC
// runs size their messages by its rate.
var frontEnds = []string{"ceiling", "grpc-legacy", "grpc-v1", "http"}

// frontEnd measures the named runs (one enqueuer, production defaults) at
// both concurrencies, each on an empty Redis, into ph.
func (e *env) frontEnd(ctx context.Context, ph *phase, names []string) (err error) {
	enq, err := e.startEnqueuer(ctx, "enqueuer-frontend")
	if err != nil {
		return err
	}
	defer func() { _ = enq.stop() }()
	for _, callers := range []int{e.cfg.high, e.cfg.low} {
		for _, name := range names {
			load := func(tag string, d time.Duration) (toolResult, error) {
				switch name {
				case "ceiling":
					return e.ceiling(ctx, tag, callers, math.MaxInt, d), nil
				case "http":
					return e.vegeta(ctx, enq.env["HTTP_ADDR"], tag, callers, d)
				}
				// More messages than the ceiling's rate allows: a repeated
				// address would be refused and show as a missing task.
				data, err := e.ghzMessages(tag, 1000+int(1.5*d.Seconds()*ph.run("ceiling", callers).okRate()))
				if err != nil {
					return toolResult{}, err
				}
				return e.ghzFor(ctx, name, enq.env["GRPC_ADDR"], callers, d, data)
			}
			tag := fmt.Sprintf("%s%s-%d-%d", e.prefix, name, callers, time.Now().Unix())
			if _, err := load(tag+"w", e.cfg.warmup); err != nil { // warm-up, not counted
				return err
			}
			e.reset(0)
			r := loadRun{name: name, callers: callers}
			before, meter := e.counts(ctx), cpuMeter(map[string][]int{"enqueuer": {enq.pid()}, "redis": e.redisPID, "load": {os.Getpid()}})
			profiled := e.profile(ctx, callers == e.cfg.high && name != "ceiling", enq, name)
			if r.res, err = load(tag, e.cfg.duration); err != nil {
				return err
			}
			r.cpu = meter()
			if r.res.cpu > 0 { // a load generator of its own, not the harness
				r.cpu["load"] = r.res.cpu
			}
			after, n := e.counts(ctx), int(e.queued(ctx, "pending")) // in this order: queued's commands are not the run's
			r.enqueued, r.cmds = n, perRequest(before, after, n)
			ph.runs = append(ph.runs, r)
			if err := profiled(before, after, n); err != nil {
				return err
			}
			logf("%s%-12s %2d callers %7.0f ok/s  p50 %s p99 %s  %s  %.3f sent/req", e.prefix, name, callers, r.okRate(), ms(r.res.lat.p50), ms(r.res.lat.p99), counts(r.res.statuses), r.cmds.sent)
			if e.err != nil {
				return e.err
			}
		}
	}
	ph.rss = peakRSS(enq.pid())
	return enq.stop()
}

// drainSpec is a drain's mails, the worker's slots and the sink's latency.
type drainSpec struct {
	mails, conc int
	latency     time.Duration
}

// drainRun is one worker emptying a full queue into the sink.
type drainRun struct {
	drainSpec
	name            string
	delivered, conn int
	rate, bound     float64 // mails a second; what conc allows at latency
	retry, archived int64
	cmds            commands
	cpu             map[string]float64
	wall            time.Duration // over which cpu was measured
	rss             int64
}

// drain fills the queue with s.mails send tasks (and their codes) through
// the build's enqueuer, so that they are of the build's own making, and
// measures how fast a worker with s.conc slots empties it into the sink at
// s.latency, from the first mail the sink accepted to the last.
func (e *env) drain(ctx context.Context, s drainSpec) (drainRun, error) {
	r := drainRun{drainSpec: s, name: fmt.Sprintf("worker-drain-%dms", s.latency.Milliseconds())}
	if s.latency > 0 {
		r.bound = float64(s.conc) / s.latency.Seconds()
	}
	e.reset(s.latency)
	if err := e.fill(ctx, r.name, s.mails); err != nil {
		return r, err
	}
	conns, before := e.sink.Connections(), e.counts(ctx)
	w, err := e.startWorker(ctx, r.name, s.conc)
	if err != nil {
		return r, err
	}
	defer func() { _ = w.stop() }()
	meter, metered := cpuMeter(map[string][]int{"worker": {w.pid()}, "sink": {os.Getpid()}, "redis": e.redisPID}), time.Now()
	profiled := e.profile(ctx, s.latency == 0, w, "drain")
	e.waitMails(ctx, s.mails)
	r.cpu, r.wall = meter(), time.Since(metered)
	msgs, after := e.sink.Messages(), e.counts(ctx)
	r.delivered, r.conn, r.cmds = len(msgs), e.sink.Connections()-conns, perRequest(before, after, len(msgs))
	if err := profiled(before, after, len(msgs)); err != nil {
		return r, err
	}
	if len(msgs) > 1 {
		byTime := func(a, b smtptest.Message) int { return a.Accepted.Compare(b.Accepted) }
		r.rate = float64(len(msgs)-1) / slices.MaxFunc(msgs, byTime).Accepted.Sub(slices.MinFunc(msgs, byTime).Accepted).Seconds()
	}
	r.retry, r.archived, r.rss = e.queued(ctx, "retry"), e.queued(ctx, "archived"), peakRSS(w.pid())
	logf("%s%-18s %5.0f mails/s, %d of %d, %d SMTP connections", e.prefix, r.name, r.rate, r.delivered, s.mails, r.conn)
	return r, errors.Join(e.err, w.stop())
}

// fill queues n send tasks through an enqueuer of the build (grpc-v1, 64
// callers) and stops it.
func (e *env) fill(ctx context.Context, tag string, n int) error {
	enq, err := e.startEnqueuer(ctx, tag+"-fill")
	if err != nil {
		return err
	}
	defer func() { _ = enq.stop() }()
	data, err := e.ghzMessages(e.prefix+tag, n)
	if err == nil {
		_, err = e.ghz(ctx, grpcCalls["grpc-v1"], enq.env["GRPC_ADDR"], 64, append([]string{"-n", strconv.Itoa(n)}, data...)...)
	}
	if err != nil {
		return err
	}
	if q := e.queued(ctx, "pending"); q != int64(n) {
		return fmt.Errorf("filling the queue: %d tasks, want %d (log: %s)", q, n, enq.log)
	}
	return enq.stop()
}

// reset empties Redis, every master (an error goes to e.err), and the
// sink, at latency.
func (e *env) reset(latency time.Duration) {
	for _, n := range e.nodes {
		e.err = errors.Join(e.err, n.FlushAll(context.Background()).Err())
	}
	e.sink.ClearMessages()
	e.sink.SetLatency(latency)
}

// waitMails waits until the sink holds n mails, or none came for 5 s.
func (e *env) waitMails(ctx context.Context, n int) {
	last, since := -1, time.Now()
	for c := e.sink.Count(); c < n && ctx.Err() == nil && time.Since(since) < 5*time.Second; c = e.sink.Count() {
		if c != last {
			last, since = c, time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// e2eRun is requests at a fixed rate through an enqueuer and a worker.
type e2eRun struct {
	res                                 toolResult // the requests, as ghz saw them
	mailed, duplicates, measured, conns int
	toAccept                            latencies // from sending a request to the sink's accepting its mail
	cpu                                 map[string]float64
	enqRSS, wrkRSS                      int64
}

func (e *env) endToEnd(ctx context.Context) (e2eRun, error) {
	var r e2eRun
	e.reset(e.cfg.e2eLatency)
	conns := e.sink.Connections()
	enq, err := e.startEnqueuer(ctx, "enqueuer-e2e")
	if err != nil {
		return r, err
	}
	defer func() { _ = enq.stop() }()
	wrk, err := e.startWorker(ctx, "worker-e2e", e.cfg.e2eConc)
	if err != nil {
		return r, err
	}
	defer func() { _ = wrk.stop() }()
	meter := cpuMeter(map[string][]int{"enqueuer": {enq.pid()}, "worker": {wrk.pid()}, "redis": e.redisPID, "sink": {os.Getpid()}})
	from := time.Now().Add(e.cfg.warmup) // requests made before are the warm-up
	if r.res, err = e.ghz(ctx, grpcCalls["grpc-legacy"], enq.env["GRPC_ADDR"], 50, "-z", (e.cfg.warmup + e.cfg.e2eDuration).String(),
		"--duration-stop", "wait", "-r", strconv.Itoa(e.cfg.e2eRate), "-d", e2eData); err != nil {
		return r, err
	}
	r.cpu = meter()
	r.cpu["load"] = r.res.cpu
	e.waitMails(ctx, r.res.statuses["OK"])
	r.conns = e.sink.Connections() - conns
	seen := map[string]bool{}
	var lat []time.Duration
	for _, m := range e.sink.Messages() {
		if len(m.To) != 1 || seen[m.To[0]] {
			r.duplicates++
			continue
		}
		seen[m.To[0]] = true
		if sent, ok := sentAt(m.To[0]); ok && !sent.Before(from) {
			lat = append(lat, m.Accepted.Sub(sent))
		}
	}
	r.mailed, r.measured, r.toAccept = len(seen), len(lat), percentiles(lat)
	r.enqRSS, r.wrkRSS = peakRSS(enq.pid()), peakRSS(wrk.pid())
	if e.cfg.profile != "" { // what the heap holds at the end of the load: the peak RSS's live part
		for _, p := range []*proc{enq, wrk} {
			e.err = errors.Join(e.err, fetch(ctx, "http://"+p.env["ADMIN_ADDR"]+"/debug/pprof/heap", filepath.Join(e.cfg.profile, p.name+"-e2e.heap.pprof")))
		}
	}
	logf("e2e: %d requests answered OK, %d mailed, p99 %s", r.res.statuses["OK"], r.mailed, ms(r.toAccept.p99))
	return r, errors.Join(e.err, wrk.stop(), enq.stop())
}

// latencies are the percentiles a run reports.
type latencies struct{ p50, p90, p99, max time.Duration }

// toolResult is what one load run reports.
type toolResult struct {
	statuses map[string]int // answers by gRPC code, HTTP status or outcome
	elapsed  time.Duration
	lat      latencies
	cpu      float64 // the load generator's CPU use in cores; 0 for the harness
}

// address is the email address of request i of the run tagged tag.
func address(tag string, i int) string { return fmt.Sprintf("%s-%d@bench.verifyq.test", tag, i) }

// e2eData is ghz's template of a request whose address ends in the time
// ghz made it; sentAt reads that time back.
const e2eData = `{"email":"e2e-{{.RequestNumber}}-{{.TimestampUnixNano}}@bench.verifyq.test"}`

func sentAt(email string) (time.Time, bool) {
	local, _, _ := strings.Cut(email, "@")
	ns, err := strconv.ParseInt(local[strings.LastIndexByte(local, '-')+1:], 10, 64)
	return time.Unix(0, ns), err == nil
}

// ghzFor runs ghz for d against the compared front end name at addr, with
// callers calls in flight and the requests of data (ghzMessages), and
// waits for the calls in flight at the end.
func (e *env) ghzFor(ctx context.Context, name, addr string, callers int, d time.Duration, data []string) (toolResult, error) {
	return e.ghz(ctx, grpcCalls[name], addr, callers, append([]string{"-z", d.String(), "--duration-stop", "wait"}, data...)...)
}

// ghzMessages writes n requests, each for a new address, for ghz to send
// in turn: cheaper for ghz than running a template per request.
func (e *env) ghzMessages(tag string, n int) ([]string, error) {
	msgs := make([]map[string]string, n)
	for i := range msgs {
		msgs[i] = map[string]string{"email": address(tag, i)}
	}
	b, _ := json.Marshal(msgs) // maps of strings always marshal
	path := filepath.Join(e.cfg.work, "logs", tag+".json")
	return []string{"--data-file", path, "--disable-template-data"}, os.WriteFile(path, b, 0o600)
}

// ghz runs ghz against call at addr with callers workers; args say how
// long (-z or -n) and what to send.
func (e *env) ghz(ctx context.Context, call, addr string, callers int, args ...string) (toolResult, error) {
	return runTool(ctx, e.cfg.ghz, nil, parseGHZ, append([]string{"--insecure", "--call", call, "-c", strconv.Itoa(callers),
		"-O", "json", addr}, args...)...)
}

func parseGHZ(b []byte) (toolResult, error) {
	var r struct {
		Count    int            `json:"count"`
		Total    time.Duration  `json:"total"`
		Slowest  time.Duration  `json:"slowest"`
		Statuses map[string]int `json:"statusCodeDistribution"`
		Errors   map[string]int `json:"errorDistribution"`
		Dist     []struct {
			Percentage int           `json:"percentage"`
			Latency    time.Duration `json:"latency"`
		} `json:"latencyDistribution"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return toolResult{}, fmt.Errorf("ghz report: %w", err)
	}
	if r.Count == 0 {
		return toolResult{}, fmt.Errorf("ghz: no request answered (errors: %v)", r.Errors)
	}
	res := toolResult{statuses: r.Statuses, elapsed: r.Total, lat: latencies{max: r.Slowest}}
	at := map[int]*time.Duration{50: &res.lat.p50, 90: &res.lat.p90, 99: &res.lat.p99}
	for _, d := range r.Dist {
		if p := at[d.Percentage]; p != nil {
			*p = d.Latency
		}
	}
	return res, nil
}

// vegeta runs vegeta's closed loop on POST /v1/codes, a new address a request.
func (e *env) vegeta(ctx context.Context, addr, tag string, callers int, d time.Duration) (toolResult, error) {
	// vegeta's JSON targets (body in base64) until pr is closed after the run.
	pr, pw := io.Pipe()
	defer func() { _ = pr.Close() }()
	go func() {
		for i, err := 0, error(nil); err == nil; i++ {
			body := base64.StdEncoding.EncodeToString(fmt.Appendf(nil, `{"email":%q}`, address(tag, i)))
			_, err = fmt.Fprintf(pw, `{"method":"POST","url":"http://%s/v1/codes","header":{"Content-Type":["application/json"]},"body":"%s"}`+"\n", addr, body)
		}
	}()
	results, n := filepath.Join(e.cfg.work, "logs", tag+".vegeta"), strconv.Itoa(callers)
	report := func([]byte) (toolResult, error) { // the attack's CPU use is the one that counts
		return runTool(ctx, e.cfg.vegeta, nil, parseVegeta, "report", "-type=json", results)
	}
	return runTool(ctx, e.cfg.vegeta, pr, report, "attack", "-format=json", "-lazy", "-rate=0",
		"-workers", n, "-max-workers", n, "-duration", d.String(), "-output", results)
}

func parseVegeta(b []byte) (toolResult, error) {
	var r struct {
		Latencies struct {
			P50 time.Duration `json:"50th"`
			P90 time.Duration `json:"90th"`
			P99 time.Duration `json:"99th"`
			Max time.Duration `json:"max"`
		} `json:"latencies"`
		Duration time.Duration  `json:"duration"`
		Wait     time.Duration  `json:"wait"`
		Requests int            `json:"requests"`
		Statuses map[string]int `json:"status_codes"`
		Errors   []string       `json:"errors"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return toolResult{}, fmt.Errorf("vegeta report: %w", err)
	}
	if r.Requests == 0 {
		return toolResult{}, fmt.Errorf("vegeta: no request sent (errors: %v)", r.Errors)
	}
	l := r.Latencies
	return toolResult{statuses: r.Statuses, elapsed: r.Duration + r.Wait, lat: latencies{l.P50, l.P90, l.P99, l.Max}}, nil
}

// runTool runs a load generator, reads its output with parse and adds its
// CPU use in cores.
func runTool(ctx context.Context, bin string, stdin io.Reader, parse func([]byte) (toolResult, error), args ...string) (toolResult, error) {
	cmd := exec.CommandContext(ctx, bin, args...) //nolint:gosec // G204: ghz or vegeta, from the command line
	var stderr bytes.Buffer
	cmd.Stdin, cmd.Stderr = stdin, &stderr
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		return toolResult{}, fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), args[0], err, stderr.Bytes())
	}
	ps := cmd.ProcessState
	cpu := float64(ps.UserTime()+ps.SystemTime()) / float64(time.Since(start))
	res, err := parse(out)
	res.cpu = cpu
	return res, err
}

// percentiles returns the nearest-rank percentiles of d, which it sorts.
func percentiles(d []time.Duration) latencies {
	if len(d) == 0 {
		return latencies{}
	}
	slices.Sort(d)
	at := func(p float64) time.Duration { return d[max(0, int(math.Ceil(p*float64(len(d))))-1)] }
	return latencies{at(.50), at(.90), at(.99), d[len(d)-1]}
}
