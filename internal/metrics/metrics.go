// Package metrics defines verifyq's Prometheus metrics: the enqueuer's
// requests, codes and rate limits, the worker's sends, and asynq's queue
// metrics. Each process owns its registry (NewRegistry), never the global
// default one, so tests can build many in parallel; the metric sets are
// injected into the packages that record into them through small interfaces
// those packages declare (api.RequestObserver, tasks.Observer).
//
// No label ever holds an address or a code: every label value comes from a
// small fixed set.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes verifyq's own metric names.
const Namespace = "verifyq"

// NewRegistry returns a registry holding the Go runtime and process
// collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler serves reg in the Prometheus text format. A collector that fails
// (asynq's, while Redis is away) does not fail the scrape: the other
// metrics are still served.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:      reg,
		ErrorHandling: promhttp.ContinueOnError,
	})
}
