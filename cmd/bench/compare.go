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
// same Redis and sink, and then the floor (floor.go); it returns each
// build's phases and the floors in round order. ceiling are the single
// node's ceiling runs, whose rates size the messages of the gRPC runs.
func (e *env) compare(ctx context.Context, builds [2]build, ceiling []loadRun) (out [2][]phase, floors []phase, err error) {
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
				return out, floors, err
			}
			out[i] = append(out[i], ph)
		}
		e.build, e.prefix = builds[0], fmt.Sprintf("r%d-", r) // the tree's enqueuer fills the floor's queue
		ph, err := e.floor(ctx)
		if err != nil {
			return out, floors, err
		}
		floors = append(floors, ph)
	}
	return out, floors, nil
}

// figure is one figure of a phase compared with the baseline. A target,
// if want is not "", holds when holds says so of the median ratio and the
// tree's median value (each target reads one of the two).
type figure struct {
	what, format string // format: of one value, for fmt
	value        func(ph *phase) float64
	want         string
	holds        func(ratio, value float64) bool
	// floored: value also reads the floor's phase, and the floor's ratio
	// to the baseline is the best any build could reach on the machine.
	floored bool
}

// figures are the compared figures with the targets of a run of cfg.
func figures(cfg config) []figure {
	var f, p99s []figure
	for _, name := range compared {
		f = append(f, figure{fmt.Sprintf("%s at %d callers, sends/s", name, cfg.high), "%.0f",
			func(ph *phase) float64 { return ph.run(name, cfg.high).okRate() }, ">= 1.25x", func(r, _ float64) bool { return r >= 1.25 }, true})
		p99s = append(p99s, figure{fmt.Sprintf("%s at %d callers, p99 ms", name, cfg.low), "%.2f",
			func(ph *phase) float64 { return float64(ph.run(name, cfg.low).res.lat.p99) / float64(time.Millisecond) }, "<= 0.8x", func(r, _ float64) bool { return r <= 0.8 }, true})
	}
	return append(append(f, p99s...),
		figure{fmt.Sprintf("worker drain into a 0 ms sink (WORKER_CONCURRENCY=%d), mails/s", cfg.drain.conc), "%.0f",
			func(ph *phase) float64 { return ph.drain.rate }, ">= 1.5x", func(r, _ float64) bool { return r >= 1.5 }, true},
		figure{"Redis commands inside scripts per send", "%.1f",
			func(ph *phase) float64 { return ph.perSend(func(c commands) float64 { return c.inScripts }) }, "<= 12", func(_, v float64) bool { return v <= 12 }, false},
		figure{"Redis commands inside scripts per mail", "%.1f", func(ph *phase) float64 { return ph.drain.cmds.inScripts }, "", nil, false},
		figure{"Redis CPU per send, µs (INFO commandstats)", "%.1f",
			func(ph *phase) float64 { return ph.perSend(func(c commands) float64 { return c.usec }) }, "", nil, false},
		figure{"Redis CPU per mail, µs", "%.1f", func(ph *phase) float64 { return ph.drain.cmds.usec }, "", nil, false},
		figure{"enqueuer CPU per send, µs (its user and system time)", "%.1f", (*phase).enqueuerCPU, "", nil, false},
		figure{"worker CPU per mail, µs", "%.1f", func(ph *phase) float64 { return ph.drain.workerCPU() }, "", nil, false},
	)
}

// enqueuerCPU is the enqueuer's CPU time per send over the front-end runs
// of ph (the ceiling's not), in µs.
func (ph *phase) enqueuerCPU() float64 {
	var used float64
	var n int
	for _, l := range ph.runs {
		if l.name != "ceiling" {
			used, n = used+l.cpu["enqueuer"]*l.res.elapsed.Seconds(), n+l.enqueued
		}
	}
	return 1e6 * used / float64(max(n, 1))
}

// workerCPU is the worker's CPU time per mail delivered in d, in µs.
func (d drainRun) workerCPU() float64 {
	return 1e6 * d.cpu["worker"] * d.wall.Seconds() / float64(max(d.delivered, 1))
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
// baseline's and the ratio of the two in each round, and for a floored
// figure the floor's values and their ratio to the baseline's.
type comparison struct {
	figure
	tree, base, ratio spread
	floor, floorRatio spread
	verdict           string // "holds", "holds in the median only", "**missed**" (", beyond the floor") or "" without a target
}

// compareFigure reads f from the phases of the rounds, tree[i], base[i]
// and floor[i] measured in round i.
func compareFigure(f figure, tree, base, floor []phase) comparison {
	var t, b, r, fl, fr []float64
	for i := range min(len(tree), len(base)) {
		t, b = append(t, f.value(&tree[i])), append(b, f.value(&base[i]))
		r = append(r, t[i]/b[i])
		if f.floored && i < len(floor) {
			fl = append(fl, f.value(&floor[i]))
			fr = append(fr, fl[i]/b[i])
		}
	}
	c := comparison{figure: f, tree: spreadOf(t), base: spreadOf(b), ratio: spreadOf(r), floor: spreadOf(fl), floorRatio: spreadOf(fr)}
	switch {
	case f.holds == nil:
	case !f.holds(c.ratio.med, c.tree.med):
		c.verdict = "**missed**"
		if len(fr) > 0 && !f.holds(c.floorRatio.med, c.floor.med) {
			c.verdict += ", beyond the floor"
		}
	case f.holds(c.ratio.lo, c.tree.lo) && f.holds(c.ratio.hi, c.tree.hi):
		c.verdict = "holds"
	default: // some round missed it
		c.verdict = "holds in the median only"
	}
	return c
}
