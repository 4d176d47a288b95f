package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/verifyq/verifyq/internal/loadtest"
)

// Profile is a CPU profile taken from a binary's admin server
// (/debug/pprof/profile) while it was under load.
type Profile struct {
	Name string
	// Load says what the binary was doing.
	Load string
	File string
	// Top is `go tool pprof -top` of the profile, cut short.
	Top string
	// Shares are the CPU shares of groups of functions (cumulative), the
	// evidence the report quotes.
	Shares []Share
}

// Share is the cumulative share of the samples in which a function whose
// name matches one of Match is on the stack.
type Share struct {
	Label string
	Match []string
	// Ignore drops the samples with a matching function on the stack.
	Ignore  []string
	Percent float64
}

// fetchProfile asks admin for a CPU profile of seconds and writes it to
// path.
func fetchProfile(ctx context.Context, admin string, seconds int, path string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds+20)*time.Second)
	defer cancel()
	url := "http://" + admin + "/debug/pprof/profile?seconds=" + strconv.Itoa(seconds)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, res.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// pprofText runs go tool pprof with args on bin and path.
func pprofText(ctx context.Context, bin, path string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", append(append([]string{"tool", "pprof"}, args...), bin, path)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %w\n%s", err, out)
	}
	return string(out), nil
}

// top returns the first n function lines of `go tool pprof -top`, sorted
// by flat or cumulative time, with the header.
func top(ctx context.Context, bin, path string, n int, cum bool) (string, error) {
	args := []string{"-top", "-nodecount=" + strconv.Itoa(n)}
	if cum {
		args = append(args, "-cum")
	}
	out, err := pprofText(ctx, bin, path, args...)
	if err != nil {
		return "", err
	}
	// Drop the lines before "Showing nodes" (File:, Type:, Time:).
	if i := strings.Index(out, "Showing nodes"); i >= 0 {
		out = out[i:]
	}
	return strings.TrimRight(out, "\n"), nil
}

// share returns the percentage of samples with a function matching one of
// match on the stack (pprof -focus) and none matching ignore (-ignore).
func share(ctx context.Context, bin, path string, match, ignore []string) (float64, error) {
	// Every node, however small, so that "Showing nodes accounting for"
	// is the total of the samples the filters keep.
	args := []string{"-top", "-nodecount=1000000", "-nodefraction=0", "-edgefraction=0", "-focus=" + strings.Join(match, "|")}
	if len(ignore) > 0 {
		args = append(args, "-ignore="+strings.Join(ignore, "|"))
	}
	out, err := pprofText(ctx, bin, path, args...)
	if err != nil {
		return 0, err
	}
	// "Showing nodes accounting for 1.2s, 35.1% of 3.4s total"
	for line := range strings.SplitSeq(out, "\n") {
		if !strings.HasPrefix(line, "Showing nodes accounting for") {
			continue
		}
		f := strings.Fields(line)
		for _, w := range f {
			if strings.HasSuffix(w, "%") {
				return strconv.ParseFloat(strings.TrimSuffix(w, "%"), 64)
			}
		}
	}
	// No sample matched.
	return 0, nil
}

// Labels of the groups of functions the report quotes.
const (
	shareGRPC        = "gRPC server outside verifyq's handlers: transport, framing, protobuf"
	shareRedisClient = "Redis client (go-redis)"
	shareSyscalls    = "system calls (read, write, epoll, futex)"
	shareLogging     = "logging (slog JSON)"
	shareMetrics     = "metrics (Prometheus)"
	shareGC          = "garbage collection"
	shareStack       = "goroutine stack growth"
	shareSMTP        = "SMTP client (net/smtp, textproto)"
	shareCompose     = "composing and writing the mail (templates, gomail; its DATA writes included)"
	shareOwn         = "verifyq's own code (validation, masking, payloads, the sender's pool), outside the libraries it calls"
	shareConnCheck   = "go-redis's check of a pooled connection before each command"
	shareAsynq       = "asynq's own work (dequeue, done, heartbeats), outside the handler"
)

var (
	matchSyscalls = []string{`^syscall\.`, `^internal/runtime/syscall`, `^runtime\.netpoll`, `^runtime\.futex`}
	matchGC       = []string{`^runtime\.gcBgMarkWorker`, `^runtime\.gcAssist`, `^runtime\.bgsweep`, `^runtime\.bgscavenge`}

	// verifyq's code runs under gRPC's frames (enqueuer) or asynq's
	// processor (worker); what it calls into is ignored.
	ownIgnore = []string{`^github\.com/redis/go-redis`, `^github\.com/hibiken/asynq/internal`, `^github\.com/hibiken/asynq\.\(\*Client\)`,
		`^log/slog\.`, `^github\.com/prometheus/`, `^google\.golang\.org/protobuf`, `^net/smtp\.`, `^net/textproto\.`, `^gopkg\.in/gomail`}
	ownShare = Share{Label: shareOwn, Match: []string{`^github\.com/verifyq/verifyq/`}, Ignore: ownIgnore}

	enqueuerShares = []Share{
		ownShare,
		{Label: shareGRPC, Match: []string{`^google\.golang\.org/grpc`, `^golang\.org/x/net/http2`, `^google\.golang\.org/protobuf`},
			Ignore: []string{`^github\.com/verifyq/verifyq/`}},
		{Label: shareRedisClient, Match: []string{`^github\.com/redis/go-redis`}},
		{Label: shareConnCheck, Match: []string{`go-redis/v9/internal/pool\.connCheck`}},
		{Label: shareSyscalls, Match: matchSyscalls},
		{Label: shareLogging, Match: []string{`^log/slog\.`}},
		{Label: shareMetrics, Match: []string{`^github\.com/prometheus/`}},
		{Label: shareGC, Match: matchGC},
		{Label: shareStack, Match: []string{`^runtime\.newstack$`}},
	}
	workerShares = []Share{
		ownShare,
		{Label: shareSMTP, Match: []string{`^net/smtp\.`, `^net/textproto\.`}},
		{Label: shareCompose, Match: []string{`^github\.com/verifyq/verifyq/mail\.Compose`, `^gopkg\.in/gomail`}},
		{Label: shareRedisClient, Match: []string{`^github\.com/redis/go-redis`}},
		{Label: shareAsynq, Match: []string{`^github\.com/hibiken/asynq`}, Ignore: []string{`^github\.com/verifyq/verifyq/tasks\.`}},
		{Label: shareSyscalls, Match: matchSyscalls},
		{Label: shareLogging, Match: []string{`^log/slog\.`}},
		{Label: shareGC, Match: matchGC},
	}
)

func (e *env) analyse(ctx context.Context, p *Profile, bin string, shares []Share) error {
	var err error
	if p.Top, err = top(ctx, bin, p.File, 25, false); err != nil {
		return err
	}
	for _, s := range shares {
		if s.Percent, err = share(ctx, bin, p.File, s.Match, s.Ignore); err != nil {
			return err
		}
		p.Shares = append(p.Shares, s)
	}
	return nil
}

// profiles takes a CPU profile of the enqueuer under the high-concurrency
// gRPC load and of the worker draining into the zero-latency sink. They are
// separate runs so that profiling does not slow the measured ones.
func (e *env) profiles(ctx context.Context, rep *Report) error {
	secs := e.cfg.ProfileSeconds

	enq, err := e.startEnqueuer(ctx, "enqueuer-profile")
	if err != nil {
		return err
	}
	defer func() { _ = enq.stop(30 * time.Second) }()
	if err := e.flush(ctx); err != nil {
		return err
	}
	d, err := loadtest.NewDriver(loadtest.TargetGRPCLegacy, enq.grpc, 1)
	if err != nil {
		return err
	}
	p := Profile{Name: "enqueuer", Load: fmt.Sprintf("%s, %d callers", loadtest.TargetGRPCLegacy, e.cfg.HighCallers),
		File: filepath.Join(e.profDir, "enqueuer.cpu.pb.gz")}
	errc := make(chan error, 1)
	go func() {
		time.Sleep(time.Second) // past the warm-up
		errc <- fetchProfile(ctx, enq.admin, secs, p.File)
	}()
	_, err = loadtest.Run(ctx, loadtest.Config{Concurrency: e.cfg.HighCallers, Warmup: time.Second,
		Duration: time.Duration(secs+1) * time.Second}, loadtest.Drive(d, loadtest.Addresses(e.runID())))
	_ = d.Close()
	if err := firstErr(err, <-errc); err != nil {
		return err
	}
	if err := e.analyse(ctx, &p, filepath.Join(e.binDir, "enqueuer"), enqueuerShares); err != nil {
		return err
	}
	rep.Profiles = append(rep.Profiles, p)
	if err := enq.stop(30 * time.Second); err != nil {
		return err
	}
	e.logf("profiled the enqueuer: %s", p.File)

	// The worker: a queue long enough to keep it busy while profiled.
	if err := e.flush(ctx); err != nil {
		return err
	}
	if err := e.prefill(ctx, e.cfg.DrainMails); err != nil {
		return err
	}
	e.sink.ClearMessages()
	w, err := e.startWorker(ctx, "worker-profile", e.cfg.DrainConcurrency)
	if err != nil {
		return err
	}
	defer func() { _ = w.stop(30 * time.Second) }()
	p = Profile{Name: "worker", Load: fmt.Sprintf("draining into the 0 ms sink, WORKER_CONCURRENCY=%d", e.cfg.DrainConcurrency),
		File: filepath.Join(e.profDir, "worker.cpu.pb.gz")}
	wsecs := max(1, min(secs, e.cfg.DrainMails/4000))
	if err := fetchProfile(ctx, w.admin, wsecs, p.File); err != nil {
		return err
	}
	if err := e.analyse(ctx, &p, filepath.Join(e.binDir, "worker"), workerShares); err != nil {
		return err
	}
	rep.Profiles = append(rep.Profiles, p)
	e.logf("profiled the worker: %s", p.File)
	return w.stop(30 * time.Second)
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
