// Command loadtest measures verifyq under load.
//
//	loadtest run   -target grpc-legacy -addr 127.0.0.1:50051 -c 64 -d 10s
//	loadtest run   -target http -addr 127.0.0.1:8080 -rate 500 -d 20s
//	loadtest sink  -latency 50ms -d 5m
//	loadtest bench -out BENCHMARKS.md            (what `make bench` runs)
//
// run drives a running enqueuer with code requests for distinct addresses,
// at a number of callers (closed loop) or at a rate (open loop), and prints
// throughput, latency percentiles and outcomes. sink serves an SMTP server
// on loopback that accepts every mail after a set latency and prints how
// many it took. bench builds both binaries, runs them against a
// redis-server and a sink of its own, measures everything BENCHMARKS.md
// reports and writes it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/verifyq/verifyq/internal/bench"
	"github.com/verifyq/verifyq/internal/loadtest"
	"github.com/verifyq/verifyq/internal/smtptest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

const usage = "usage: loadtest run|sink|bench [flags]; loadtest <command> -h for the flags"

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "run":
		return runLoad(ctx, args[1:], stdout, stderr)
	case "sink":
		return runSink(ctx, args[1:], stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	}
	return errors.New(usage)
}

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("target", loadtest.TargetGRPCLegacy, "one of "+strings.Join(loadtest.Targets, ", "))
	addr := fs.String("addr", "127.0.0.1:50051", "the enqueuer's GRPC_ADDR or HTTP_ADDR")
	c := fs.Int("c", 64, "callers (closed loop), or the most requests in flight (open loop)")
	rate := fs.Float64("rate", 0, "requests per second (open loop); 0 means closed loop")
	d := fs.Duration("d", 10*time.Second, "measured duration")
	warmup := fs.Duration("warmup", 2*time.Second, "unmeasured warm-up")
	n := fs.Int("n", 0, fmt.Sprintf("most requests, warm-up included (0: %d)", loadtest.DefaultMaxRequests))
	conns := fs.Int("conns", 0, "connections: gRPC channels (default 1), HTTP connections (default -c)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *conns == 0 {
		*conns = 1
		if *target == loadtest.TargetHTTP {
			*conns = *c
		}
	}
	drv, err := loadtest.NewDriver(*target, *addr, *conns)
	if err != nil {
		return err
	}
	defer drv.Close()
	id := fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffffff)
	res, err := loadtest.Run(ctx, loadtest.Config{Concurrency: *c, Rate: *rate, Duration: *d, Warmup: *warmup, MaxRequests: *n},
		loadtest.Drive(drv, loadtest.Addresses(id)))
	if err != nil {
		return err
	}
	mode := fmt.Sprintf("%d callers", *c)
	if *rate > 0 {
		mode = fmt.Sprintf("%.0f/s, at most %d in flight", *rate, *c)
	}
	fmt.Fprintf(stdout, "%s %s, %s over %s\n", *target, *addr, mode, res.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(stdout, "  requests   %d (%.0f/s, ok %.0f/s)%s\n", res.Requests, res.Throughput, res.OKThroughput,
		map[bool]string{true: ", stopped by -n", false: ""}[res.Capped])
	fmt.Fprintf(stdout, "  latency    %s\n", res.Latency)
	fmt.Fprintf(stdout, "  outcomes   %s\n", loadtest.OutcomeString(res.Outcomes))
	return nil
}

func runSink(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	latency := fs.Duration("latency", 0, "wait before accepting each mail")
	d := fs.Duration("d", 10*time.Minute, "serve this long at most")
	if err := fs.Parse(args); err != nil {
		return err
	}
	srv, err := smtptest.New(smtptest.WithEnvelopeOnly())
	if err != nil {
		return err
	}
	defer srv.Close()
	srv.SetLatency(*latency)
	fmt.Fprintf(stdout, "sink on %s (SMTP_HOST=%s SMTP_PORT=%d SMTP_TLS=none), latency %s, for %s\n",
		srv.Addr(), srv.Host(), srv.Port(), *latency, *d)
	ctx, cancel := context.WithTimeout(ctx, *d)
	defer cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := 0
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintf(stdout, "accepted %d mails over %d connections\n", srv.Count(), srv.Connections())
			return nil
		case <-tick.C:
			n := srv.Count()
			if n != last {
				fmt.Fprintf(stdout, "accepted %d (+%d/s), connections %d\n", n, n-last, srv.Connections())
				last = n
			}
			if n > 1_000_000 {
				srv.ClearMessages() // only the count matters here
				last = 0
			}
		}
	}
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := bench.DefaultConfig()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "BENCHMARKS.md", "the report to write")
	readme := fs.String("readme", "", "a README whose bench block to rewrite with the headline numbers (make bench: README.md)")
	fs.StringVar(&cfg.WorkDir, "work", "tmp-bench", "binaries, process logs and profiles")
	quick := fs.Bool("quick", false, "short runs, to check the harness (the numbers mean little)")
	only := fs.String("only", "", "comma-separated phases to run alone (gobench, frontend, drain, e2e, profile); the report is then incomplete")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *quick {
		cfg = bench.QuickConfig(cfg)
	}
	if *only != "" {
		if *readme != "" {
			return errors.New("-readme needs a full run, not -only")
		}
		cfg.Only = map[string]bool{}
		for p := range strings.SplitSeq(*only, ",") {
			cfg.Only[strings.TrimSpace(p)] = true
		}
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	cfg.Root = root
	if cfg.WorkDir, err = filepath.Abs(cfg.WorkDir); err != nil {
		return err
	}
	cfg.Progress = stderr
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	if err := rep.Render(f); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s in %s\n", *out, rep.Took)
	if *readme != "" {
		if err := updateReadme(*readme, rep); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "updated the Performance block of %s\n", *readme)
	}
	for _, t := range rep.Targets {
		fmt.Fprintf(stdout, "  %-7s %s: %s (want %s)\n", map[bool]string{true: "holds", false: "MISSED"}[t.Holds], t.What, t.Measured, t.Want)
	}
	return nil
}

func updateReadme(path string, rep *bench.Report) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s, err := rep.UpdateReadme(string(b))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

// moduleRoot finds the directory of go.mod from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod here or above: run loadtest bench inside the repository")
		}
		dir = parent
	}
}
