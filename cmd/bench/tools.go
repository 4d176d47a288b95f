package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

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

// ghzMessages writes n requests, each for a new address, for ghz to send
// in turn: cheaper for ghz than running a template per request.
func (e *env) ghzMessages(tag string, n int) ([]string, error) {
	var b bytes.Buffer
	sep := "["
	for i := range n {
		fmt.Fprintf(&b, `%s{"email":%q}`, sep, address(tag, i))
		sep = ","
	}
	b.WriteByte(']')
	path := filepath.Join(e.cfg.work, "logs", tag+".json")
	return []string{"--data-file", path, "--disable-template-data"}, os.WriteFile(path, b.Bytes(), 0o600)
}

// ghz runs ghz against call at addr with callers workers for d and waits
// for the calls in flight at the end; data are its request arguments.
func (e *env) ghz(ctx context.Context, call, addr string, callers int, d time.Duration, data ...string) (toolResult, error) {
	out, cpu, err := runTool(ctx, e.cfg.ghz, nil, append([]string{"--insecure", "--call", call, "-c", strconv.Itoa(callers),
		"-z", d.String(), "--duration-stop", "wait", "-O", "json", addr}, data...)...)
	if err != nil {
		return toolResult{}, err
	}
	res, err := parseGHZ(out)
	res.cpu = cpu
	return res, err
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
	_, cpu, err := runTool(ctx, e.cfg.vegeta, pr, "attack", "-format=json", "-lazy", "-rate=0",
		"-workers", n, "-max-workers", n, "-duration", d.String(), "-output", results)
	if err != nil {
		return toolResult{}, err
	}
	out, _, err := runTool(ctx, e.cfg.vegeta, nil, "report", "-type=json", results)
	if err != nil {
		return toolResult{}, err
	}
	res, err := parseVegeta(out)
	res.cpu = cpu
	return res, err
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

// runTool runs a load generator and returns its output and CPU use in cores.
func runTool(ctx context.Context, bin string, stdin io.Reader, args ...string) ([]byte, float64, error) {
	cmd := exec.CommandContext(ctx, bin, args...) //nolint:gosec // G204: ghz or vegeta, from the command line
	var stderr bytes.Buffer
	cmd.Stdin, cmd.Stderr = stdin, &stderr
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), args[0], err, stderr.Bytes())
	}
	ps := cmd.ProcessState
	return out, float64(ps.UserTime()+ps.SystemTime()) / float64(time.Since(start)), nil
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
