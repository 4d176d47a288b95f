package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/verifyq/verifyq/internal/redistest"
)

// The generated block of BENCHMARKS.md lies between these markers;
// everything outside is written by hand and kept.
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
	rounds          [2][]phase // with -baseline: the tree's and the baseline's
	floors          []phase    // with -baseline: the floor of each round (floor.go)
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

// targets are the targets that hold on any machine: counts, bounds and
// memory. Speed targets are ratios to a baseline build of the same run
// (figures, in compare.go); a rate or a latency in absolute terms would
// speak of the machine more than of verifyq.
func (r *report) targets() []target {
	var t []target
	var worst float64
	for _, l := range r.single.runs {
		worst = max(worst, l.cmds.evalsha+l.cmds.eval)
	}
	t = append(t, target{"Redis scripts (EVALSHA + EVAL) per send request, worst run: the mailbox's and the code's (one pipeline, one round trip), the enqueue",
		"<= 3", fmt.Sprintf("%.3f", worst), worst <= 3})
	s, e := r.slowDrain, r.e2e
	return append(t,
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
	if r.cfg.baseline != "" {
		p("### Against %s\n\n%d rounds, in each the tree's build and then %s's, on the same Redis and sink: the gRPC front ends "+
			"as below and the 0 ms drain; then the floor: the same ghz runs against a grpc-go server that answers at once, and "+
			"the drain's tasks through an asynq server (%d slots) whose handler returns at once. No build can beat the floor on "+
			"these cores: a target beyond the floor's ratio to %s cannot hold here. Each value is the median of the rounds "+
			"(least–greatest); a ratio is to the baseline within each round; a target is judged on the median, and holds only in "+
			"the median when some round missed it.\n\n| figure | this tree | %s | ratio | floor | floor / %s | target | |\n|---|---|---|---|---|---|---|---|\n",
			r.cfg.baseline, r.cfg.rounds, r.cfg.baseline, r.cfg.drain.conc, r.cfg.baseline, r.cfg.baseline, r.cfg.baseline)
		for _, f := range figures(r.cfg) {
			c := compareFigure(f, r.rounds[0], r.rounds[1], r.floors)
			floor, floorRatio := "–", "–"
			if f.floored {
				floor, floorRatio = c.floor.format(c.format), c.floorRatio.format("%.2fx")
			}
			p("| %s | %s | %s | %s | %s | %s | %s | %s |\n", c.what, c.tree.format(c.format), c.base.format(c.format), c.ratio.format("%.2fx"),
				floor, floorRatio, c.want, c.verdict)
		}
		p("\n")
	}
	p("### Targets\n\n%s", r.targetTable())
	p("\n### Front ends and ceiling\n\nClosed loop, %s measured per row after a %s warm-up.\n\n"+
		"| run | callers | ok/s | share | p50 | p90 | p99 | max | answered | tasks queued | CPU: enqueuer | load generator | redis |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n", r.cfg.duration, r.cfg.warmup)
	for _, l := range r.single.runs {
		p("| %s | %d | %.0f | %.0f%% | %s | %s | %s | %s | %s | %d | %.2f | %.2f | %.2f |\n", l.name, l.callers, l.okRate(), 100*r.share(l),
			ms(l.res.lat.p50), ms(l.res.lat.p90), ms(l.res.lat.p99), ms(l.res.lat.max), counts(l.res.statuses),
			l.enqueued, l.cpu["enqueuer"], l.cpu["load"], l.cpu["redis"])
	}
	p("\nThe enqueuer's peak RSS after these runs: %s.\n", mb(r.single.rss))
	p("\n### Redis commands per send request\n\n| run | callers | sent | EVALSHA | EVAL | other sent | in scripts | Redis CPU µs |\n|---|---|---|---|---|---|---|---|\n")
	for _, l := range r.single.runs {
		c := l.cmds
		p("| %s | %d | %.3f | %.3f | %.3f | %.3f | %.1f | %.1f |\n", l.name, l.callers, c.sent, c.evalsha, c.eval, c.other, c.inScripts, c.usec)
	}
	p("\n### Worker\n\n| run | mails | WORKER_CONCURRENCY | sink latency | mails/s | bound | SMTP connections | retry / archived | Redis sent per mail | CPU: worker | sink | redis | peak RSS |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, d := range []drainRun{r.single.drain, r.slowDrain} {
		bound := map[bool]string{true: fmt.Sprintf("%.0f", d.bound), false: "–"}[d.bound > 0]
		p("| %s | %d of %d | %d | %s | %.0f | %s | %d | %d / %d | %.2f | %.2f | %.2f | %.2f | %s |\n", d.name, d.delivered, d.mails, d.conc,
			d.latency, d.rate, bound, d.conn, d.retry, d.archived, d.cmds.sent, d.cpu["worker"], d.cpu["sink"], d.cpu["redis"], mb(d.rss))
	}
	p("\n### Single node and Redis Cluster\n\nThe same front-end runs and 0 ms drain on a Redis Cluster of %d masters (QUEUE_SHARDS=%d) on the same cores; ratio = cluster / single.\n\n"+
		"| run | callers | single ok/s | cluster ok/s | ratio | cluster p99 | Redis sent/req | CPU: redis (all masters) |\n|---|---|---|---|---|---|---|---|\n", redistest.ClusterMasters, redistest.ClusterMasters)
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
	p("\n### Benchmarks next to the code\n\n`go test -run '^$' -bench . -benchtime %s ./limits ./mail`:\n\n```\n%s\n```\n", r.cfg.benchtime, strings.Join(r.goBench, "\n"))
	return b.String()
}

// targetTable is the targets against this run's figures.
func (r *report) targetTable() string {
	b := "| target | want | measured | |\n|---|---|---|---|\n"
	for _, t := range r.targets() {
		b += fmt.Sprintf("| %s | %s | %s | %s |\n", t.what, t.want, t.measured, map[bool]string{true: "holds", false: "**missed**"}[t.holds])
	}
	return b
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
