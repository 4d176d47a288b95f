package bench

import (
	"bytes"
	_ "embed"
	"fmt"
	"io"
	"strings"
	"text/template"
	"time"

	"github.com/verifyq/verifyq/internal/loadtest"
)

// Report is everything a run measured; Render turns it into BENCHMARKS.md.
type Report struct {
	Config       Config
	Machine      Machine
	Took         time.Duration
	GoBenchmarks string
	// Ceiling holds one run per concurrency; FrontEnd one per target and
	// concurrency.
	Ceiling, FrontEnd []LoadRun
	// EnqueuerFrontEndRSS is the enqueuer's VmHWM after all front-end runs.
	EnqueuerFrontEndRSS int64
	Drain, SlowDrain    DrainRun
	E2E                 E2ERun
	Profiles            []Profile
	Targets             []Target
	// PoolSize is the Redis pool of the ceiling's client, as the
	// enqueuer's (platform.NewRedis).
	PoolSize int
	// QuietChecks are the waits for a quiet machine, one per phase.
	QuietChecks []QuietCheck
	// Redone lists runs done again because other processes were busy;
	// Disturbed those that stayed disturbed and were kept.
	Redone, Disturbed []Disturbance

	finished time.Time
}

// Target is one of issue 6's targets and whether this run met it.
type Target struct {
	What     string
	Want     string
	Measured string
	Holds    bool
}

// Thresholds of the targets.
const (
	MinCeilingShare     = 0.50
	MaxP99LowCallers    = 3 * time.Millisecond
	MaxCommandsPerSend  = 2.0
	MinDrainRate        = 3000.0
	MinSlowDrainShare   = 0.95
	MaxE2EP99           = 300 * time.Millisecond
	MaxPeakRSS          = 40 << 20
	commandsPerSendSlop = 0.005 // readiness PINGs and connection set-up, spread over the run
)

// CeilingAt returns the ceiling run at callers.
func (r *Report) CeilingAt(callers int) (LoadRun, bool) {
	for _, c := range r.Ceiling {
		if c.Callers == callers {
			return c, true
		}
	}
	return LoadRun{}, false
}

// Share is run's OK throughput as a fraction of the ceiling at its
// concurrency.
func (r *Report) Share(run LoadRun) float64 {
	c, ok := r.CeilingAt(run.Callers)
	if !ok || c.Result.OKThroughput == 0 {
		return 0
	}
	return run.Result.OKThroughput / c.Result.OKThroughput
}

func isGRPC(target string) bool {
	return target == loadtest.TargetGRPCLegacy || target == loadtest.TargetGRPCV1
}

func (r *Report) evaluate() {
	r.Targets = nil
	add := func(what, want, measured string, holds bool) {
		r.Targets = append(r.Targets, Target{What: what, Want: want, Measured: measured, Holds: holds})
	}
	for _, run := range r.FrontEnd {
		if !isGRPC(run.Target) {
			continue
		}
		switch run.Callers {
		case r.Config.HighCallers:
			c, _ := r.CeilingAt(run.Callers)
			add(fmt.Sprintf("%s at %d callers, share of the ceiling", run.Target, run.Callers),
				fmt.Sprintf(">= %.0f%%", MinCeilingShare*100),
				fmt.Sprintf("%.0f%% (%.0f/s of %.0f/s)", r.Share(run)*100, run.Result.OKThroughput, c.Result.OKThroughput),
				r.Share(run) >= MinCeilingShare)
		case r.Config.LowCallers:
			add(fmt.Sprintf("%s at %d callers, p99", run.Target, run.Callers),
				"<= "+loadtest.Millis(MaxP99LowCallers), loadtest.Millis(run.Result.Latency.P99),
				run.Result.Latency.P99 <= MaxP99LowCallers)
		}
	}
	if r.Config.runs("frontend") {
		worst := 0.0
		for _, run := range r.FrontEnd {
			worst = max(worst, run.Commands.Sent)
		}
		add("Redis commands sent per send request (every front-end run, worst)",
			fmt.Sprintf("<= %.0f", MaxCommandsPerSend), fmt.Sprintf("%.3f", worst), worst <= MaxCommandsPerSend+commandsPerSendSlop)
	}
	if r.Config.runs("drain") {
		r.evaluateDrains(add)
	}
	if r.Config.runs("e2e") {
		r.evaluateE2E(add)
	}
}

func (r *Report) evaluateDrains(add func(what, want, measured string, holds bool)) {
	add(fmt.Sprintf("worker drain into a 0 ms sink, WORKER_CONCURRENCY=%d", r.Drain.Concurrency),
		fmt.Sprintf(">= %.0f mails/s", MinDrainRate), fmt.Sprintf("%.0f mails/s", r.Drain.Rate),
		r.Drain.Rate >= MinDrainRate && r.Drain.Delivered == r.Drain.Mails)
	sd := r.SlowDrain
	add(fmt.Sprintf("worker drain into a %s sink, WORKER_CONCURRENCY=%d", sd.SinkLatency, sd.Concurrency),
		fmt.Sprintf(">= %.0f%% of %.0f mails/s", MinSlowDrainShare*100, sd.Bound),
		fmt.Sprintf("%.0f mails/s (%.1f%%)", sd.Rate, 100*sd.Rate/max(sd.Bound, 1)),
		sd.Rate >= MinSlowDrainShare*sd.Bound && sd.Delivered == sd.Mails)
	add(fmt.Sprintf("SMTP connections opened in that drain of %d mails", sd.Mails),
		fmt.Sprintf("<= WORKER_CONCURRENCY (%d)", sd.Concurrency), fmt.Sprint(sd.Connections),
		sd.Connections <= sd.Concurrency)
}

func (r *Report) evaluateE2E(add func(what, want, measured string, holds bool)) {
	e := r.E2E
	add(fmt.Sprintf("request to SMTP accept at %.0f/s, %s sink, p99", e.Load.Rate, e.SinkLatency),
		"<= "+loadtest.Millis(MaxE2EP99), loadtest.Millis(e.ToAccept.P99),
		e.ToAccept.P99 <= MaxE2EP99 && e.Delivered == e.Measured && e.Measured > 0)
	add("enqueuer peak RSS under that load", fmt.Sprintf("<= %s", mb(MaxPeakRSS)), mb(e.EnqueuerRSS), e.EnqueuerRSS <= MaxPeakRSS)
	add("worker peak RSS under that load", fmt.Sprintf("<= %s", mb(MaxPeakRSS)), mb(e.WorkerRSS), e.WorkerRSS <= MaxPeakRSS)
}

// AllHold reports whether every target holds.
func (r *Report) AllHold() bool {
	for _, t := range r.Targets {
		if !t.Holds {
			return false
		}
	}
	return true
}

//go:embed benchmarks.md.tmpl
var reportTemplate string

var funcs = template.FuncMap{
	"ms":  loadtest.Millis,
	"mb":  mb,
	"pct": func(f float64) string { return fmt.Sprintf("%.0f%%", f*100) },
	"f0":  func(f float64) string { return fmt.Sprintf("%.0f", f) },
	"f1":  func(f float64) string { return fmt.Sprintf("%.1f", f) },
	"f2":  func(f float64) string { return fmt.Sprintf("%.2f", f) },
	"f3":  func(f float64) string { return fmt.Sprintf("%.3f", f) },
	"outcomes": func(m map[string]int) string {
		return loadtest.OutcomeString(m)
	},
	"cores": func(m map[string]float64, name string) string {
		v, ok := m[name]
		if !ok {
			return "–"
		}
		return fmt.Sprintf("%.2f", v)
	},
	"check": func(ok bool) string {
		if ok {
			return "holds"
		}
		return "**missed**"
	},
	"disturbances": func(ds []Disturbance) string {
		parts := make([]string, len(ds))
		for i, d := range ds {
			parts[i] = fmt.Sprintf("%s (others %.2f cores)", d.Run, d.Others)
		}
		return strings.Join(parts, ", ")
	},
	"indent": func(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") },
	"date":   func(t time.Time) string { return t.UTC().Format("2006-01-02") },
}

// Render writes BENCHMARKS.md.
func (r *Report) Render(w io.Writer) error {
	t, err := template.New("BENCHMARKS.md").Funcs(funcs).Parse(reportTemplate)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, r); err != nil {
		return err
	}
	_, err = w.Write(b.Bytes())
	return err
}
