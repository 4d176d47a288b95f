// Package metricstest reads Prometheus text for tests: it scrapes a
// /metrics endpoint, fails the test unless the text parses, and looks up
// values by name and labels.
package metricstest

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families are parsed metric families by name.
type Families map[string]*dto.MetricFamily

// Parse parses the Prometheus text format.
func Parse(r io.Reader) (Families, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	return p.TextToMetricFamilies(r)
}

// Scrape GETs url (with the optional request tweak, e.g. basic auth), and
// fails the test unless the reply is 200 and valid Prometheus text.
func Scrape(t testing.TB, url string, tweak ...func(*http.Request)) Families {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatalf("metricstest: %v", err)
	}
	for _, f := range tweak {
		f(req)
	}
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("metricstest: scrape %s: %v", url, err)
	}
	defer func() { _ = res.Body.Close() }()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("metricstest: scrape %s: status %d", url, res.StatusCode)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("metricstest: scrape %s: Content-Type %q, want the text format", url, ct)
	}
	fams, err := Parse(res.Body)
	if err != nil {
		t.Fatalf("metricstest: scrape %s: not valid Prometheus text: %v", url, err)
	}
	return fams
}

// Value returns the value of the series of name whose labels include
// labels: a counter's or gauge's value, a histogram's sample count. ok is
// false when there is no such series.
func (f Families) Value(name string, labels map[string]string) (v float64, ok bool) {
	fam := f[name]
	if fam == nil {
		return 0, false
	}
	for _, m := range fam.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// LabelValues returns every value of every label of every series, as
// "name{label=value}", to check that no label holds what it must not.
func (f Families) LabelValues() []string {
	var out []string
	for name, fam := range f {
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				out = append(out, fmt.Sprintf("%s{%s=%s}", name, l.GetName(), l.GetValue()))
			}
		}
	}
	return out
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}
