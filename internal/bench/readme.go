package bench

import (
	"bytes"
	_ "embed"
	"errors"
	"strings"
	"text/template"

	"github.com/verifyq/verifyq/internal/loadtest"
)

// Markers of the README's block that UpdateReadme rewrites.
const (
	readmeStart = "<!-- bench:start: written by make bench from its run; do not edit -->"
	readmeEnd   = "<!-- bench:end -->"
)

//go:embed readme.md.tmpl
var readmeTemplate string

// UpdateReadme returns readme with the block between the bench markers
// replaced by this run's headline numbers, so that the README and
// BENCHMARKS.md always quote the same run.
func (r *Report) UpdateReadme(readme string) (string, error) {
	i := strings.Index(readme, readmeStart)
	j := strings.Index(readme, readmeEnd)
	if i < 0 || j < i {
		return "", errors.New("README has no " + readmeStart + " ... " + readmeEnd + " block")
	}
	t, err := template.New("readme").Funcs(funcs).Parse(readmeTemplate)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, r); err != nil {
		return "", err
	}
	return readme[:i+len(readmeStart)] + "\n" + b.String() + readme[j:], nil
}

// Held counts the targets that hold.
func (r *Report) Held() int {
	n := 0
	for _, t := range r.Targets {
		if t.Holds {
			n++
		}
	}
	return n
}

// P99 returns the p99 of target at callers, formatted, or "–".
func (r *Report) P99(target string, callers int) string {
	if f, ok := r.frontEnd(target, callers); ok {
		return loadtest.Millis(f.Result.Latency.P99)
	}
	return "–"
}
