package metrics_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/httpapi"
	"github.com/verifyq/verifyq/internal/doctable"
	"github.com/verifyq/verifyq/internal/metrics"
	"github.com/verifyq/verifyq/outcome"
	"github.com/verifyq/verifyq/tasks"
)

// operations is the reference whose "## Metrics" tables list every metric.
const operations = "../../docs/OPERATIONS.md"

// metricRow matches a row of a metrics table: | `name` | type | labels | meaning |.
var metricRow = regexp.MustCompile("^\\| `((?:verifyq|asynq)_[a-z_]+)` \\| ([a-z]+) \\|(.*?)\\| .+ \\|$")

// backticked finds the `words` of a labels cell.
var backticked = regexp.MustCompile("`([a-z_]+)`")

// documentedMetrics reads the tables under "## Metrics" in OPERATIONS.md:
// each metric's type and label names (the backticked words of its labels
// cell outside parentheses, which hold the label's values).
func documentedMetrics(t *testing.T) map[string][2]string {
	t.Helper()
	out := map[string][2]string{}
	for _, m := range doctable.Rows(t, operations, "Metrics", metricRow) {
		_, twice := out[m[1]]
		assert.False(t, twice, "%s is documented twice", m[1])
		var labels []string
		for _, w := range backticked.FindAllStringSubmatch(outsideParens(m[3]), -1) {
			labels = append(labels, w[1])
		}
		slices.Sort(labels)
		out[m[1]] = [2]string{m[2], strings.Join(labels, ",")}
	}
	return out
}

// outsideParens drops every parenthesized part of s, nested ones too.
func outsideParens(s string) string {
	var b strings.Builder
	depth := 0
	for _, r := range s {
		switch {
		case r == '(':
			depth++
		case r == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// registered gathers reg: each verifyq_ metric's type and label names.
func registered(t *testing.T, reg *prometheus.Registry, into map[string][2]string) {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range families {
		name := mf.GetName()
		if !strings.HasPrefix(name, metrics.Namespace+"_") {
			continue
		}
		require.NotEmpty(t, mf.GetMetric(), "%s has no series: record one above", name)
		var labels []string
		for _, l := range mf.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		slices.Sort(labels)
		into[name] = [2]string{strings.ToLower(mf.GetType().String()), strings.Join(labels, ",")}
	}
}

// The metrics tables of OPERATIONS.md name every metric of verifyq's own
// that either binary registers, with its type and labels, and no other.
func TestOperationsListsEveryMetric(t *testing.T) {
	t.Parallel()
	got := map[string][2]string{}

	reg := metrics.NewRegistry()
	metrics.NewEnqueuer(reg, nil).ObserveRequest("http", httpapi.RouteSend, "anonymous", outcome.MetricOK, time.Millisecond)
	registered(t, reg, got)

	reg = metrics.NewRegistry()
	w := metrics.NewWorker(reg, tasks.RelayPrimary, tasks.RelayFallback)
	w.SendFinished(tasks.SendResult{Outcome: tasks.OutcomeSent, SinceRequest: time.Second, Relay: tasks.RelayPrimary,
		Tries: []tasks.Try{{Relay: tasks.RelayPrimary, Took: time.Millisecond}}})
	registered(t, reg, got)

	docs := documentedMetrics(t)
	for name, want := range got {
		doc, ok := docs[name]
		if assert.True(t, ok, "%s is not in %s", name, operations) {
			assert.Equal(t, want[0], doc[0], "the type of %s", name)
			assert.Equal(t, want[1], doc[1], "the labels of %s", name)
		}
	}
	for name := range docs {
		if strings.HasPrefix(name, metrics.Namespace+"_") {
			_, ok := got[name]
			assert.True(t, ok, "%s is documented, and neither binary registers it", name)
		}
	}
}
