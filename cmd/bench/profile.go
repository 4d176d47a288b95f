package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// profile, with -profile and when is true in the single-node runs of the
// tree's build (not the cluster's, not the comparison's), starts a CPU
// profile of p (its pprof on ADMIN_ADDR) for the run's length and logs
// every Redis command from now in the slow log. The function it returns
// waits for the profile and writes into the directory <run>.pprof,
// <run>.commandstats (the run's commands per request, from the counts
// before and after it, n requests) and <run>.slowlog (its script calls by
// time), <run> being p's name and name.
func (e *env) profile(ctx context.Context, when bool, p *proc, name string) func(before, after map[string]cmdstat, n int) error {
	if e.cfg.profile == "" || !when || e.prefix != "" {
		return func(map[string]cmdstat, map[string]cmdstat, int) error { return nil }
	}
	for _, n := range e.nodes { // every command, up to 100000 of them; the log is empty (see below)
		e.err = errors.Join(e.err, n.ConfigSet(ctx, "slowlog-max-len", "100000").Err(), n.ConfigSet(ctx, "slowlog-log-slower-than", "0").Err())
	}
	base, done := filepath.Join(e.cfg.profile, p.name+"-"+name), make(chan error, 1)
	go func() {
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.env["ADMIN_ADDR"], max(1, int(e.cfg.duration.Seconds())))
		done <- fetch(ctx, url, base+".pprof")
	}()
	return func(before, after map[string]cmdstat, n int) error {
		var calls, slow strings.Builder
		fmt.Fprintf(&calls, "# %s: Redis commands per request (%d requests), from INFO commandstats; evalsha's usec includes its scripts' commands\n%-24s %10s %10s %10s\n", name, n, "command", "calls/req", "usec/req", "usec/call")
		names := slices.Sorted(func(yield func(string) bool) {
			for k := range after {
				if k != "" && !slices.Contains(harness, k) && after[k].calls > before[k].calls && !yield(k) {
					return
				}
			}
		})
		for _, k := range names {
			c, u := after[k].calls-before[k].calls, after[k].usec-before[k].usec
			fmt.Fprintf(&calls, "%-24s %10.3f %10.2f %10.2f\n", k, float64(c)/float64(max(n, 1)), float64(u)/float64(max(n, 1)), float64(u)/float64(c))
		}
		for _, node := range e.nodes { // back to the default, and empty: resetting a long log takes a while
			e.err = errors.Join(e.err, node.ConfigSet(ctx, "slowlog-log-slower-than", "10000").Err())
			entries, err := node.SlowLogGet(ctx, -1).Result()
			e.err = errors.Join(e.err, err, node.SlowLogReset(ctx).Err())
			slow.WriteString(slowlogSummary(entries))
		}
		err := <-done
		return errors.Join(err, e.err, os.WriteFile(base+".commandstats", []byte(calls.String()), 0o600),
			os.WriteFile(base+".slowlog", []byte("# "+name+": the slow log (every command) by command and script, slowest in all first\n"+slow.String()), 0o600))
	}
}

// fetchTimeout bounds one fetch: longer than any run a profile samples.
const fetchTimeout = 5 * time.Minute

// fetch writes what url answers into the file path.
func fetch(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// The profile takes as long as the run it samples; the context bounds it.
	resp, err := (&http.Client{Timeout: fetchTimeout}).Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s: %s", url, resp.Status, b)
	}
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// slowlogSummary groups slow-log entries by command and, for EVALSHA and
// EVAL, script (its SHA1 or the first line of its source): calls, total,
// mean and greatest time, the greatest total first.
func slowlogSummary(entries []redis.SlowLog) string {
	type group struct {
		what       string
		calls      int
		total, max time.Duration
	}
	by := map[string]*group{}
	for _, e := range entries {
		what := strings.ToLower(e.Args[0])
		if (what == "evalsha" || what == "eval") && len(e.Args) > 1 {
			script, _, _ := strings.Cut(e.Args[1], "\n")
			what += " " + script
		}
		g := by[what]
		if g == nil {
			g = &group{what: what}
			by[what] = g
		}
		g.calls, g.total, g.max = g.calls+1, g.total+e.Duration, max(g.max, e.Duration)
	}
	groups := slices.SortedFunc(maps.Values(by), func(a, b *group) int { return cmp.Compare(b.total, a.total) })
	out := fmt.Sprintf("%8s %12s %10s %10s  %s\n", "calls", "total", "mean", "max", "command")
	for _, g := range groups {
		out += fmt.Sprintf("%8d %12s %10s %10s  %s\n", g.calls, g.total, g.total/time.Duration(g.calls), g.max, g.what)
	}
	return out
}
