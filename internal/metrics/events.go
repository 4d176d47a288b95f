package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/verifyq/verifyq/events"
)

// Events counts the events a binary emitted and, in a worker, the
// deliveries it attempted; it is their events.Observer.
type Events struct {
	emitted    *prometheus.CounterVec
	deliveries *prometheus.CounterVec // nil in the enqueuer
}

var _ events.Observer = (*Events)(nil)

// newEvents registers the events' metrics on reg; with deliveries (the
// worker) the deliveries' too.
func newEvents(reg prometheus.Registerer, deliveries bool) *Events {
	m := &Events{emitted: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace,
		Name:      "events_emitted_total",
		Help: "Events (webhooks) emitted, by type and result: queued (a delivery task per endpoint), " +
			"lost (Redis did not take it for some endpoint; alert on it).",
	}, []string{"type", "result"})}
	reg.MustRegister(m.emitted)
	if deliveries {
		m.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "webhook_deliveries_total",
			Help: "Delivery attempts of events to endpoints, by type and result (events.Result): delivered (2xx), " +
				"retried (another status, a timeout, no connection), failed (the last retry failed: given up), " +
				"dropped (an endpoint no longer configured).",
		}, []string{"type", "result"})
		reg.MustRegister(m.deliveries)
	}
	for _, s := range events.Types {
		for _, r := range []string{"queued", "lost"} {
			m.emitted.WithLabelValues(string(s.Type), r)
		}
		if m.deliveries != nil {
			for _, r := range events.Results {
				m.deliveries.WithLabelValues(string(s.Type), string(r))
			}
		}
	}
	return m
}

// Emitted implements events.Observer.
func (m *Events) Emitted(t events.Type, ok bool) {
	r := "queued"
	if !ok {
		r = "lost"
	}
	m.emitted.WithLabelValues(string(t), r).Inc()
}

// Delivered implements events.Observer.
func (m *Events) Delivered(t events.Type, r events.Result) {
	if m.deliveries != nil {
		m.deliveries.WithLabelValues(string(t), string(r)).Inc()
	}
}
