package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/verifyq/verifyq/bounce"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/reconcile"
	"github.com/verifyq/verifyq/tasks"
)

// Worker is the worker's metric set; it is the tasks.Observer of the
// send-code handler.
type Worker struct {
	sends    *prometheus.CounterVec
	smtp     *prometheus.HistogramVec
	delivery *prometheus.HistogramVec
	inFlight prometheus.Gauge
	brkOpen  *prometheus.GaugeVec
	brkTrips *prometheus.CounterVec
	failures *prometheus.CounterVec
	bounces  *prometheus.CounterVec
	requeued *prometheus.CounterVec
	checked  prometheus.Counter
	open     prometheus.Gauge

	// Events counts the events the worker emitted and delivered.
	Events *Events
}

var (
	_ tasks.Observer     = (*Worker)(nil)
	_ bounce.Observer    = (*Worker)(nil)
	_ reconcile.Observer = (*Worker)(nil)
)

// NewWorker registers the worker's metrics on reg, with the series of
// each of relays (tasks.RelayPrimary, tasks.RelayFallback) made at once.
func NewWorker(reg prometheus.Registerer, relays ...string) *Worker {
	m := &Worker{
		sends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "sends_total",
			Help: "Send attempts by outcome: sent, retried (will run again), failed (archived without a mail), " +
				"expired (the code was gone before it could be sent).",
		}, []string{"outcome"}),
		smtp: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace,
			Name:      "smtp_duration_seconds",
			Help: "Time of one SMTP transaction, by relay (primary, fallback) and result (ok: accepted; " +
				"error: refused, failed or timed out); the count of ok is the mails each relay took.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"relay", "result"}),
		delivery: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace,
			Name:      "delivery_latency_seconds",
			Help:      "Time from the send request to a relay accepting the mail (queue wait, retries and SMTP), by the relay that took it.",
			Buckets:   []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}, []string{"relay"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace,
			Name:      "sends_in_flight",
			Help:      "Send-code tasks being processed now.",
		}),
		brkOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace,
			Name:      "smtp_breaker_open",
			Help: "1 while this worker's breaker of the relay holds sends to it back (open, or half-open with one trial send), " +
				"0 while it is closed.",
		}, []string{"relay"}),
		brkTrips: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "smtp_breaker_opened_total",
			Help:      "Times this worker's breaker of the relay opened (a failed trial send opens it again).",
		}, []string{"relay"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "smtp_failures_total",
			Help: "Failed sends by relay (primary, fallback; empty when no relay was tried) and class (delivery.Class): " +
				"recipient_refused, message_refused, needs_smtputf8, " +
				"relay_refused (verifyq's configuration or the relay's policy: alert on it), recipient_deferred, " +
				"relay_deferred, throttled, undecryptable (a task sealed under a CODE_SECRET the worker does not hold: alert on it).",
		}, []string{"relay", "class"}),
		bounces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "bounces_total",
			Help: "Reports the bounce intake took, by result (bounce.Result): bounced, complained (recorded in the send's status), " +
				"stale (genuine, but the status is gone or a later send's), delayed, other (nothing to act on), " +
				"forged, expired, unmatched (no token, or no address to check it with), malformed (no report), " +
				"too_large (refused with 552), error (Redis failed; refused with 451, the MTA sends it again).",
		}, []string{"result"}),
	}
	m.requeued = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace,
		Name:      "reconciled_total",
		Help: "Sends the reconciler queued again, by reason: lost (asynq had no task of the ID their status names: " +
			"lost in a failover, deleted, or never queued), orphaned (asynq held the task active and no live worker ran it), " +
			"given_up (not queued again: queued again too many times already; its mail is not sent: alert on it).",
	}, []string{"reason"})
	m.checked = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace,
		Name:      "reconcile_checked_total",
		Help:      "Open sends the reconciler looked at, summed over its passes (the passes of this worker).",
	})
	m.open = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace,
		Name:      "reconcile_open_sends",
		Help:      "Open sends (admitted, their task not ended) the last pass of this worker's reconciler read.",
	})
	m.Events = newEvents(reg, true)
	reg.MustRegister(m.sends, m.smtp, m.delivery, m.inFlight, m.brkOpen, m.brkTrips, m.failures, m.bounces,
		m.requeued, m.checked, m.open)
	for _, r := range reconcile.Reasons {
		m.requeued.WithLabelValues(r)
	}
	for _, o := range tasks.Outcomes {
		m.sends.WithLabelValues(string(o))
	}
	for _, r := range relays {
		for _, c := range delivery.Classes {
			if c != delivery.Undecryptable {
				m.failures.WithLabelValues(r, string(c))
			}
		}
		m.brkOpen.WithLabelValues(r)
		m.brkTrips.WithLabelValues(r)
	}
	// No relay is tried for a task sealed under a secret the worker does
	// not hold.
	m.failures.WithLabelValues(noRelay, string(delivery.Undecryptable))
	for _, r := range bounce.Results {
		m.bounces.WithLabelValues(string(r))
	}
	return m
}

// noRelay is the relay label of a failure before any relay was tried.
const noRelay = ""

// BounceHandled implements bounce.Observer.
func (m *Worker) BounceHandled(r bounce.Result) { m.bounces.WithLabelValues(string(r)).Inc() }

// SendStarted implements tasks.Observer.
func (m *Worker) SendStarted() { m.inFlight.Inc() }

// SendFinished implements tasks.Observer.
func (m *Worker) SendFinished(r tasks.SendResult) {
	m.inFlight.Dec()
	m.sends.WithLabelValues(string(r.Outcome)).Inc()
	for _, try := range r.Tries {
		result := "ok"
		if try.Failure != "" {
			result = "error"
			m.failures.WithLabelValues(try.Relay, string(try.Failure)).Inc()
		}
		m.smtp.WithLabelValues(try.Relay, result).Observe(try.Took.Seconds())
	}
	if len(r.Tries) == 0 && r.Failure != "" {
		m.failures.WithLabelValues(noRelay, string(r.Failure)).Inc()
	}
	if r.Outcome == tasks.OutcomeSent && r.SinceRequest > 0 {
		m.delivery.WithLabelValues(r.Relay).Observe(r.SinceRequest.Seconds())
	}
}

// TaskExpired implements tasks.Observer.
func (m *Worker) TaskExpired() { m.sends.WithLabelValues(string(tasks.OutcomeExpired)).Inc() }

// Checked implements reconcile.Observer.
func (m *Worker) Checked(n int) {
	m.checked.Add(float64(n))
	m.open.Set(float64(n))
}

// Reconciled implements reconcile.Observer.
func (m *Worker) Reconciled(reason string) { m.requeued.WithLabelValues(reason).Inc() }

// BreakerChanged returns the tasks.BreakerConfig.OnChange of the breaker
// of relay.
func (m *Worker) BreakerChanged(relay string) func(tasks.BreakerState) {
	open, trips := m.brkOpen.WithLabelValues(relay), m.brkTrips.WithLabelValues(relay)
	return func(s tasks.BreakerState) {
		if s == tasks.BreakerClosed {
			open.Set(0)
			return
		}
		open.Set(1)
		if s == tasks.BreakerOpen {
			trips.Inc()
		}
	}
}
