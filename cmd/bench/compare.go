package main

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// compared are the front ends the comparison with the baseline runs.
var compared = []string{"grpc-legacy", "grpc-v1"}

// compare runs cfg.rounds rounds of the compared front ends and the 0 ms
// drain, in each the tree's build and then the baseline's (builds), on the
// same Redis and sink; it returns each build's phases in round order.
// ceiling are the single node's ceiling runs, whose rates size the
// messages of the gRPC runs.
func (e *env) compare(ctx context.Context, builds [2]build, ceiling []loadRun) ([2][]phase, error) {
	var out [2][]phase
	defer func(b build) { e.build, e.prefix = b, "" }(e.build)
	for r := 1; r <= e.cfg.rounds; r++ {
		for i, b := range builds {
			e.build, e.prefix = b, fmt.Sprintf("r%d-%s-", r, b.name)
			ph := phase{runs: slices.DeleteFunc(slices.Clone(ceiling), func(l loadRun) bool { return l.name != "ceiling" })}
			err := e.frontEnd(ctx, &ph, compared)
			if err == nil {
				ph.drain, err = e.drain(ctx, e.cfg.drain)
			}
			if err != nil {
				return out, err
			}
			out[i] = append(out[i], ph)
		}
	}
	return out, nil
}

// figure is one figure of a phase compared with the baseline. A target,
// if want is not "", holds when holds says so of the median ratio and the
// tree's median value (each target reads one of the two).
type figure struct {
	what, format string // format: of one value, for fmt
	value        func(ph *phase) float64
	want         string
	holds        func(ratio, value float64) bool
}

// figures are the compared figures with the targets of a run of cfg.
func figures(cfg config) []figure {
	var f, p99s []figure
	for _, name := range compared {
		f = append(f, figure{fmt.Sprintf("%s at %d callers, sends/s", name, cfg.high), "%.0f",
			func(ph *phase) float64 { return ph.run(name, cfg.high).okRate() }, ">= 1.25x", func(r, _ float64) bool { return r >= 1.25 }})
		p99s = append(p99s, figure{fmt.Sprintf("%s at %d callers, p99 ms", name, cfg.low), "%.2f",
			func(ph *phase) float64 { return float64(ph.run(name, cfg.low).res.lat.p99) / float64(time.Millisecond) }, "<= 0.8x", func(r, _ float64) bool { return r <= 0.8 }})
	}
	return append(append(f, p99s...),
		figure{fmt.Sprintf("worker drain into a 0 ms sink (WORKER_CONCURRENCY=%d), mails/s", cfg.drain.conc), "%.0f",
			func(ph *phase) float64 { return ph.drain.rate }, ">= 1.5x", func(r, _ float64) bool { return r >= 1.5 }},
		figure{"Redis commands inside scripts per send", "%.1f",
			func(ph *phase) float64 { return ph.perSend(func(c commands) float64 { return c.inScripts }) }, "<= 12", func(_, v float64) bool { return v <= 12 }},
		figure{"Redis commands inside scripts per mail", "%.1f", func(ph *phase) float64 { return ph.drain.cmds.inScripts }, "", nil},
		figure{"Redis CPU per send, µs (INFO commandstats)", "%.1f",
			func(ph *phase) float64 { return ph.perSend(func(c commands) float64 { return c.usec }) }, "", nil},
		figure{"Redis CPU per mail, µs", "%.1f", func(ph *phase) float64 { return ph.drain.cmds.usec }, "", nil},
	)
}

// perSend is the mean of pick over the front-end runs of ph (the ceiling's
// not), weighted by the sends of each.
func (ph *phase) perSend(pick func(commands) float64) float64 {
	var sum float64
	var n int
	for _, l := range ph.runs {
		if l.name != "ceiling" {
			sum, n = sum+pick(l.cmds)*float64(l.enqueued), n+l.enqueued
		}
	}
	return sum / float64(max(n, 1))
}

// spread is the median, the least and the greatest of some values.
type spread struct{ med, lo, hi float64 }

func spreadOf(xs []float64) spread {
	if len(xs) == 0 {
		return spread{}
	}
	s := slices.Sorted(slices.Values(xs))
	return spread{(s[(len(s)-1)/2] + s[len(s)/2]) / 2, s[0], s[len(s)-1]}
}

// format formats s with format for each value: "12.0 (11.0–13.0)", or one
// value when all are the same.
func (s spread) format(format string) string {
	if s.lo == s.hi {
		return fmt.Sprintf(format, s.med)
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", s.med, s.lo, s.hi)
}

// comparison is one figure over the rounds: the tree's values, the
// baseline's and the ratio of the two in each round.
type comparison struct {
	figure
	tree, base, ratio spread
	verdict           string // "holds", "holds in the median only", "**missed**" or "" without a target
}

// compareFigure reads f from the phases of the rounds, tree[i] and base[i]
// measured in round i.
func compareFigure(f figure, tree, base []phase) comparison {
	var t, b, r []float64
	for i := range min(len(tree), len(base)) {
		t, b = append(t, f.value(&tree[i])), append(b, f.value(&base[i]))
		r = append(r, t[i]/b[i])
	}
	c := comparison{figure: f, tree: spreadOf(t), base: spreadOf(b), ratio: spreadOf(r)}
	switch {
	case f.holds == nil:
	case !f.holds(c.ratio.med, c.tree.med):
		c.verdict = "**missed**"
	case f.holds(c.ratio.lo, c.tree.lo) && f.holds(c.ratio.hi, c.tree.hi):
		c.verdict = "holds"
	default: // some round missed it
		c.verdict = "holds in the median only"
	}
	return c
}
