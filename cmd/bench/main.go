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

	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/internal/smtptest"
)

type config struct {
	ghz, vegeta, work       string
	warmup, duration        time.Duration
	high, low               int // callers of the closed-loop runs
	drainMails, drainConc   int
	slowMails, slowConc     int
	slowLatency             time.Duration
	e2eRate, e2eConc        int
	e2eDuration, e2eLatency time.Duration
	benchtime               string
}

var defaultConfig = config{warmup: time.Second, duration: 10 * time.Second, high: 64, low: 8,
	drainMails: 40_000, drainConc: 20, slowMails: 10_000, slowConc: 50, slowLatency: 50 * time.Millisecond,
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
		cfg.warmup, cfg.duration, cfg.drainMails, cfg.slowMails = 300*time.Millisecond, 2*time.Second, 5000, 2000
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
	ceil     *ceiling
	err      error // the first error of a Redis read (see counts)
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...) }

func measureAll(ctx context.Context, cfg config) (*report, error) {
	began := time.Now()
	rep := &report{cfg: cfg, date: began}
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
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	rep.machine = machine{strconv.Itoa(runtime.NumCPU()), field(string(cpuinfo), "model name"), runtime.Version(), ""}
	e := &env{cfg: cfg}
	if e.sink, err = smtptest.New(smtptest.WithEnvelopeOnly()); err != nil {
		return nil, err
	}
	defer func() { _ = e.sink.Close() }()
	// The front ends and the drain on a single node, then on a cluster; the
	// slow drain and the end-to-end run on the single node only.
	for _, mode := range []string{redistest.ModeSingle, redistest.ModeCluster} {
		closeRedis, err := e.open(ctx, mode, &rep.machine)
		runs, drain, single, rss := &rep.frontEnd, &rep.drain, mode == redistest.ModeSingle, int64(0)
		if !single {
			runs, drain = &rep.cluster, &rep.clusterDrain
		}
		if err == nil {
			rss, err = e.frontEnd(ctx, runs)
		}
		if err == nil {
			*drain, err = e.drain(ctx, "worker-drain-0ms", cfg.drainMails, cfg.drainConc, 0)
		}
		if err == nil && single {
			rep.enqueuerRSS = rss
			if rep.slowDrain, err = e.drain(ctx, "worker-drain-"+cfg.slowLatency.String(), cfg.slowMails, cfg.slowConc, cfg.slowLatency); err == nil {
				rep.e2e, err = e.endToEnd(ctx)
			}
		}
		closeRedis()
		if err != nil {
			return nil, err
		}
	}
	rep.took = time.Since(began).Round(time.Second)
	return rep, nil
}

// open starts the Redis deployment of mode and the harness's clients of it;
// the function it returns closes them all, also after an error.
func (e *env) open(ctx context.Context, mode string, m *machine) (func(), error) {
	var d interface {
		redistest.Deployment
		Masters() ([]string, error)
	}
	var addrs []string
	var err error
	if e.nodes, e.redisPID, e.shards, e.prefix = nil, nil, 1, ""; mode == redistest.ModeCluster {
		d, err = redistest.NewCluster()
		e.shards, e.prefix = redistest.ClusterMasters, "cluster-"
	} else {
		d, err = redistest.New()
	}
	if err == nil {
		if addrs, err = d.Masters(); err != nil {
			d.Close()
		}
	}
	if err != nil {
		return func() {}, err
	}
	r, _ := platform.ParseRedis(mode, d.URL())
	e.redis, e.rdb = d, r.Client()
	for _, a := range addrs {
		n := redis.NewClient(&redis.Options{Addr: a})
		info := n.Info(ctx, "server").Val()
		pid, _ := strconv.Atoi(field(info, "process_id"))
		e.nodes, e.redisPID, m.redis = append(e.nodes, n), append(e.redisPID, pid), field(info, "redis_version")
	}
	e.ceil, err = newCeiling(e.rdb, e.shards)
	return func() {
		for _, n := range e.nodes {
			_ = n.Close()
		}
		_ = e.rdb.Close()
		d.Close()
	}, err
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

// machine describes where the run took place.
type machine struct{ cpus, model, goVersion, redis string }

// proc is a binary the harness started.
type proc struct {
	name, log string
	cmd       *exec.Cmd
	done      chan error
}

// start runs the binary name from the work directory with env, its output
// in logs/<logName>.log, and waits until its admin server answers /readyz.
func (e *env) start(ctx context.Context, name, logName string, env map[string]string) (*proc, error) {
	admin := freeAddr()
	env["ADMIN_ADDR"], env["REDIS_MODE"], env["REDIS_URL"], env["QUEUE_SHARDS"] = admin, e.redis.Mode(), e.redis.URL(), strconv.Itoa(e.shards)
	p := &proc{name: name, log: filepath.Join(e.cfg.work, "logs", e.prefix+logName+".log"), done: make(chan error, 1)}
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

// startEnqueuer starts an enqueuer with its defaults but the addresses.
func (e *env) startEnqueuer(ctx context.Context, logName string) (p *proc, grpcAddr, httpAddr string, err error) {
	grpcAddr, httpAddr = freeAddr(), freeAddr()
	p, err = e.start(ctx, "enqueuer", logName, map[string]string{"GRPC_ADDR": grpcAddr, "HTTP_ADDR": httpAddr})
	return p, grpcAddr, httpAddr, err
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

// cpuTime returns the user plus system CPU time pids have used, from
// utime and stime in /proc/<pid>/stat (in USER_HZ, 100 a second).
func cpuTime(pids ...int) (d time.Duration) {
	for _, pid := range pids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:])); len(f) >= 13 { // the name may hold spaces
			ut, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			d += time.Duration(ut+st) * 10 * time.Millisecond
		}
	}
	return d
}

// cpuMeter starts measuring the named processes' CPU; the function it
// returns gives each one's use since, in cores (1.00: one core all the time).
// A name may stand for several processes (every master of a cluster).
func cpuMeter(pids map[string][]int) func() map[string]float64 {
	start, at := map[string]time.Duration{}, time.Now()
	for name, p := range pids {
		start[name] = cpuTime(p...)
	}
	return func() map[string]float64 {
		out := map[string]float64{}
		for name, p := range pids {
			out[name] = float64(cpuTime(p...)-start[name]) / float64(time.Since(at))
		}
		return out
	}
}
