// Command bench is `make bench`: it builds the enqueuer and the worker, runs
// them against a redis-server and an SMTP sink (internal/smtptest) of its
// own on loopback, drives the front ends with ghz (gRPC) and vegeta (HTTP),
// measures what only verifyq can (the ceiling of a send's two Redis round
// trips, Redis commands per request, the worker's drain rate,
// request-to-SMTP-accept latency, peak RSS), runs the front ends and the
// drain again on a 3-master Redis Cluster beside the single node, and
// rewrites the generated blocks of BENCHMARKS.md and README.md. Every run is
// bounded in time.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/mail"
)

type config struct {
	ghz, vegeta, work       string
	warmup, duration        time.Duration
	high, low               int       // callers of the closed-loop runs
	drain, slow             drainSpec // into a 0 ms sink and a slow one
	e2eRate, e2eConc        int
	e2eDuration, e2eLatency time.Duration
	benchtime               string
}

var defaultConfig = config{warmup: time.Second, duration: 10 * time.Second, high: 64, low: 8,
	drain: drainSpec{40_000, 20, 0}, slow: drainSpec{10_000, 50, 50 * time.Millisecond},
	e2eRate: 500, e2eConc: 100, e2eDuration: 20 * time.Second, e2eLatency: 100 * time.Millisecond, benchtime: "1s"}

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
	out := fs.String("out", "BENCHMARKS.md", "file whose bench block is rewritten")
	readme := fs.String("readme", "README.md", "README whose bench block is rewritten")
	quick := fs.Bool("quick", false, "short runs, to check the harness (about a minute; write to other files)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *quick {
		cfg.warmup, cfg.duration, cfg.drain.mails, cfg.slow.mails = 300*time.Millisecond, 2*time.Second, 5000, 2000
		cfg.e2eDuration, cfg.benchtime = 4*time.Second, "100ms"
	}
	rep, err := measureAll(ctx, cfg)
	if err != nil {
		return err
	}
	return errors.Join(rewriteBlock(*out, rep.benchmarks()), rewriteBlock(*readme, rep.readme()))
}

// env is what the runs share.
type env struct {
	cfg      config
	redis    redistest.Deployment  // single or cluster
	rdb      redis.UniversalClient // the harness's and the ceiling's: queue lengths
	nodes    []*redis.Client       // one per master: flush, INFO
	redisPID []int                 // every master's
	shards   int                   // QUEUE_SHARDS: 1 on a single node, one per master on a cluster
	prefix   string                // of the cluster runs' names and logs
	sink     *smtptest.Server
	store    *codes.Store  // the ceiling's
	queue    *asynq.Client // the ceiling's
	version  string        // Redis's
	err      error         // the first error of a Redis read (see counts)
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...) }

func measureAll(ctx context.Context, cfg config) (*report, error) {
	rep := &report{cfg: cfg, date: time.Now()}
	if err := os.MkdirAll(filepath.Join(cfg.work, "logs"), 0o750); err != nil { // go build makes bin/
		return nil, err
	}
	logf("go test -bench ./codes ./mail")
	out, err := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", ".", "-benchtime", cfg.benchtime, "./codes", "./mail").CombinedOutput() //nolint:gosec // G204: go and its arguments are the harness's own
	if err != nil {
		return nil, fmt.Errorf("go test -bench: %w\n%s", err, out)
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.HasPrefix(line, "Benchmark") || strings.HasPrefix(line, "pkg:") {
			rep.goBench = append(rep.goBench, line)
		}
	}
	logf("building the enqueuer and the worker")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(cfg.work, "bin")+"/", "./cmd/enqueuer", "./cmd/worker").CombinedOutput(); err != nil { //nolint:gosec // G204: as above
		return nil, fmt.Errorf("go build: %w\n%s", err, out)
	}
	e := &env{cfg: cfg}
	if e.sink, err = smtptest.New(smtptest.WithEnvelopeOnly()); err != nil {
		return nil, err
	}
	defer func() { _ = e.sink.Close() }()
	// The front ends and the drain on a single node, then on a cluster; the
	// slow drain and the end-to-end run on the single node only.
	for i, mode := range []string{redistest.ModeSingle, redistest.ModeCluster} {
		closeRedis, err := e.open(ctx, mode)
		ph := []*phase{&rep.single, &rep.cluster}[i]
		if err == nil {
			err = e.frontEnd(ctx, ph)
		}
		if err == nil {
			ph.drain, err = e.drain(ctx, cfg.drain)
		}
		if err == nil && mode == redistest.ModeSingle {
			if rep.slowDrain, err = e.drain(ctx, cfg.slow); err == nil {
				rep.e2e, err = e.endToEnd(ctx)
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
		e.store, err = codes.NewStore(e.rdb, codes.Config{KeyPrefix: codes.DefaultKeyPrefix, TTL: codes.DefaultTTL,
			Length: codes.DefaultLength, Limits: codes.DefaultLimits(), Identity: mail.Identity{TagSeparators: mail.DefaultTagSeparators}})
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
	defer func() { _ = f.Close() }()                             // the child has its own descriptor
	p.cmd = exec.Command(filepath.Join(e.cfg.work, "bin", name)) //nolint:gosec // G204: a binary the harness built
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

// startEnqueuer starts an enqueuer with its defaults but the addresses,
// which its env holds.
func (e *env) startEnqueuer(ctx context.Context, logName string) (*proc, error) {
	return e.start(ctx, "enqueuer", logName, map[string]string{"GRPC_ADDR": freeAddr(), "HTTP_ADDR": freeAddr()})
}

// startWorker starts a worker against the sink with conc slots.
func (e *env) startWorker(ctx context.Context, logName string, conc int) (*proc, error) {
	return e.start(ctx, "worker", logName, map[string]string{"SMTP_HOST": e.sink.Host(),
		"SMTP_PORT": strconv.Itoa(e.sink.Port()), "SMTP_TLS": "none", "WORKER_CONCURRENCY": strconv.Itoa(conc)})
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM and waits at most 30 s, then kills; it may be called
// again.
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

// The generated block of BENCHMARKS.md and README.md lies between these
// markers; everything outside is written by hand and kept.
const (
	blockStart = "<!-- bench:start: written by make bench from its run; do not edit -->"
	blockEnd   = "<!-- bench:end -->"
)

// report is everything one run measured.
type report struct {
	cfg             config
	date            time.Time
	took            time.Duration
	machine         string // where the run took place: cores, CPU, Go, Redis
	goBench         []string
	single, cluster phase // the cluster: 3 masters
	slowDrain       drainRun
	e2e             e2eRun
}

// share is l's rate as a part of the ceiling's at the same callers.
func (r *report) share(l loadRun) float64 {
	if c := r.single.run("ceiling", l.callers).okRate(); c > 0 {
		return l.okRate() / c
	}
	return 0
}

// target is one of the performance targets verifyq is held to.
type target struct {
	what, want, measured string
	holds                bool
}

func (r *report) targets() []target {
	var t []target
	ceil := r.single.run("ceiling", r.cfg.high).okRate()
	var p99s []target // after the shares
	for _, name := range []string{"grpc-legacy", "grpc-v1"} {
		l, p99 := r.single.run(name, r.cfg.high), r.single.run(name, r.cfg.low).res.lat.p99
		t = append(t, target{fmt.Sprintf("%s at %d callers, share of the ceiling", name, r.cfg.high), ">= 50%",
			fmt.Sprintf("%.0f%% (%.0f/s of %.0f/s)", 100*r.share(l), l.okRate(), ceil), r.share(l) >= 0.5})
		p99s = append(p99s, target{fmt.Sprintf("%s at %d callers, p99", name, r.cfg.low), "<= 3ms", ms(p99), p99 <= 3*time.Millisecond})
	}
	t = append(t, p99s...)
	var worst float64
	for _, l := range r.single.runs {
		worst = max(worst, l.cmds.evalsha+l.cmds.eval)
	}
	t = append(t, target{"Redis scripts (EVALSHA + EVAL) per send request, worst run: the mailbox's and the code's (one pipeline, one round trip), the enqueue",
		"<= 3", fmt.Sprintf("%.3f", worst), worst <= 3})
	d, s, e := r.single.drain, r.slowDrain, r.e2e
	return append(t,
		target{fmt.Sprintf("worker drain into a 0 ms sink, WORKER_CONCURRENCY=%d", d.conc), ">= 3000 mails/s",
			fmt.Sprintf("%.0f mails/s", d.rate), d.rate >= 3000},
		target{fmt.Sprintf("worker drain into a %s sink, WORKER_CONCURRENCY=%d", s.latency, s.conc),
			fmt.Sprintf(">= 95%% of %.0f mails/s", s.bound), fmt.Sprintf("%.0f mails/s (%.1f%%)", s.rate, 100*s.rate/s.bound), s.rate >= 0.95*s.bound},
		target{fmt.Sprintf("SMTP connections opened in that drain of %d mails", s.mails), fmt.Sprintf("<= %d", s.conc),
			fmt.Sprint(s.conn), s.conn <= s.conc},
		target{fmt.Sprintf("request to SMTP accept at %d/s, %s sink, p99", r.cfg.e2eRate, r.cfg.e2eLatency), "<= 300ms",
			ms(e.toAccept.p99), e.toAccept.p99 > 0 && e.toAccept.p99 <= 300*time.Millisecond},
		target{"enqueuer peak RSS under that load", "<= 40 MB", mb(e.enqRSS), e.enqRSS <= 40<<20},
		target{"worker peak RSS under that load", "<= 40 MB", mb(e.wrkRSS), e.wrkRSS <= 40<<20},
	)
}

// benchmarks is BENCHMARKS.md's generated block: this run's tables.
func (r *report) benchmarks() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("Run of %s (it took %s) on %s.\n\n", r.date.Format(time.DateOnly), r.took, r.machine)
	table, _ := r.targetTable()
	p("### Targets\n\n%s", table)
	p("\n### Front ends and ceiling\n\nClosed loop, %s measured per row after a %s warm-up.\n\n"+
		"| run | callers | ok/s | share | p50 | p90 | p99 | max | answered | tasks queued | CPU: enqueuer | load generator | redis |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n", r.cfg.duration, r.cfg.warmup)
	for _, l := range r.single.runs {
		p("| %s | %d | %.0f | %.0f%% | %s | %s | %s | %s | %s | %d | %.2f | %.2f | %.2f |\n", l.name, l.callers, l.okRate(), 100*r.share(l),
			ms(l.res.lat.p50), ms(l.res.lat.p90), ms(l.res.lat.p99), ms(l.res.lat.max), counts(l.res.statuses),
			l.enqueued, l.cpu["enqueuer"], l.cpu["load"], l.cpu["redis"])
	}
	p("\nThe enqueuer's peak RSS after these runs: %s.\n", mb(r.single.rss))
	p("\n### Redis commands per send request\n\n| run | callers | sent | EVALSHA | EVAL | other sent | in scripts |\n|---|---|---|---|---|---|---|\n")
	for _, l := range r.single.runs {
		c := l.cmds
		p("| %s | %d | %.3f | %.3f | %.3f | %.3f | %.1f |\n", l.name, l.callers, c.sent, c.evalsha, c.eval, c.other, c.inScripts)
	}
	p("\n### Worker\n\n| run | mails | WORKER_CONCURRENCY | sink latency | mails/s | bound | SMTP connections | retry / archived | Redis sent per mail | CPU: worker | sink | redis | peak RSS |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, d := range []drainRun{r.single.drain, r.slowDrain} {
		bound := "–"
		if d.bound > 0 {
			bound = fmt.Sprintf("%.0f", d.bound)
		}
		p("| %s | %d of %d | %d | %s | %.0f | %s | %d | %d / %d | %.2f | %.2f | %.2f | %.2f | %s |\n", d.name, d.delivered, d.mails, d.conc,
			d.latency, d.rate, bound, d.conn, d.retry, d.archived, d.cmds.sent, d.cpu["worker"], d.cpu["sink"], d.cpu["redis"], mb(d.rss))
	}
	p("\n### Single node and Redis Cluster\n\nThe same front-end runs and 0 ms drain on a Redis Cluster of %d masters (QUEUE_SHARDS=%d) on the same cores; ratio = cluster / single.\n\n", redistest.ClusterMasters, redistest.ClusterMasters)
	p("| run | callers | single ok/s | cluster ok/s | ratio | cluster p99 | Redis sent/req | CPU: redis (all masters) |\n|---|---|---|---|---|---|---|---|\n")
	for _, c := range r.cluster.runs {
		s := r.single.run(c.name, c.callers)
		p("| %s | %d | %.0f | %.0f | %.2f | %s | %.3f | %.2f |\n", c.name, c.callers, s.okRate(), c.okRate(), c.okRate()/s.okRate(), ms(c.res.lat.p99), c.cmds.sent, c.cpu["redis"])
	}
	d, c := r.single.drain, r.cluster.drain
	p("| worker drain, mails/s | %d | %.0f | %.0f | %.2f | – | %.2f | %.2f |\n", c.conc, d.rate, c.rate, c.rate/d.rate, c.cmds.sent, c.cpu["redis"])
	e := r.e2e
	p("\n### Request to SMTP accept\n\n`grpc-legacy` at %d requests/s for %s after a %s warm-up, WORKER_CONCURRENCY=%d, a sink that takes %s per mail.\n\n| | |\n|---|---|\n",
		r.cfg.e2eRate, r.cfg.e2eDuration, r.cfg.warmup, r.cfg.e2eConc, r.cfg.e2eLatency)
	p("| requests answered, warm-up included | %s |\n", counts(e.res.statuses))
	p("| their mails accepted by the sink | %d (%d duplicates) |\n", e.mailed, e.duplicates)
	p("| requests sent after the warm-up | %d |\n", e.measured)
	p("| request → SMTP accept | p50 %s, p90 %s, **p99 %s**, max %s |\n", ms(e.toAccept.p50), ms(e.toAccept.p90), ms(e.toAccept.p99), ms(e.toAccept.max))
	p("| the request itself | p50 %s, p99 %s, max %s |\n", ms(e.res.lat.p50), ms(e.res.lat.p99), ms(e.res.lat.max))
	p("| SMTP connections opened | %d |\n| peak RSS | enqueuer **%s**, worker **%s** |\n", e.conns, mb(e.enqRSS), mb(e.wrkRSS))
	p("| CPU | enqueuer %.2f, worker %.2f, redis %.2f, ghz %.2f, sink %.2f |\n", e.cpu["enqueuer"], e.cpu["worker"], e.cpu["redis"], e.cpu["load"], e.cpu["sink"])
	p("\n### Benchmarks next to the code\n\n`go test -run '^$' -bench . -benchtime %s ./codes ./mail`:\n\n```\n%s\n```\n", r.cfg.benchtime, strings.Join(r.goBench, "\n"))
	return b.String()
}

// targetTable is the targets against this run's figures; held count.
func (r *report) targetTable() (string, int) {
	b, held := "| target | want | measured | |\n|---|---|---|---|\n", 0
	for _, t := range r.targets() {
		b += fmt.Sprintf("| %s | %s | %s | %s |\n", t.what, t.want, t.measured, map[bool]string{true: "holds", false: "**missed**"}[t.holds])
		held += map[bool]int{true: 1}[t.holds]
	}
	return b, held
}

// readme is README.md's generated block: the machine and the targets.
func (r *report) readme() string {
	table, held := r.targetTable()
	ceil, c := r.single.run("ceiling", r.cfg.high), r.cluster.run("ceiling", r.cfg.high)
	return fmt.Sprintf("From the last run (%s; %s; the load generators, Redis and both binaries share those %d cores), %d of %d targets hold:\n\n%s"+
		"\nOn a 3-master Redis Cluster on the same cores: the ceiling at %d callers %.0f/s (%.2f × the single node's), the worker drain %.0f mails/s (%.2f ×).\n",
		r.date.Format(time.DateOnly), r.machine, runtime.NumCPU(), held, len(r.targets()), table,
		r.cfg.high, c.okRate(), c.okRate()/ceil.okRate(), r.cluster.drain.rate, r.cluster.drain.rate/r.single.drain.rate)
}

// counts formats a count map in key order: "[OK:81041]".
func counts(m map[string]int) string { return strings.TrimPrefix(fmt.Sprint(m), "map") }

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }
func mb(b int64) string         { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }

// replaceBlock returns doc with block between the bench markers.
func replaceBlock(doc, block string) (string, error) {
	i, j := strings.Index(doc, blockStart), strings.Index(doc, blockEnd)
	if i < 0 || j < i {
		return "", fmt.Errorf("no %s ... %s block", blockStart, blockEnd)
	}
	return doc[:i+len(blockStart)] + "\n" + block + doc[j:], nil
}

// rewriteBlock replaces the block of the file at path (made if missing).
func rewriteBlock(path, block string) error {
	doc, err := os.ReadFile(path) //nolint:gosec // G304: a file named on the command line
	if errors.Is(err, fs.ErrNotExist) {
		doc, err = []byte(blockStart+"\n"+blockEnd+"\n"), nil
	}
	if err != nil {
		return err
	}
	out, err := replaceBlock(string(doc), block)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, []byte(out), 0o600) //nolint:gosec // G703: as above; an existing file keeps its mode
}
