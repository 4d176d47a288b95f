package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/verifyq/verifyq/bounce"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/tasks"
)

// Worker is the worker's metric set; it is the tasks.Observer of the
// send-code handler.
type Worker struct {
	sends    *prometheus.CounterVec
	smtp     *prometheus.HistogramVec
	delivery prometheus.Histogram
	inFlight prometheus.Gauge
	brkOpen  prometheus.Gauge
	brkTrips prometheus.Counter
	failures *prometheus.CounterVec
	bounces  *prometheus.CounterVec
}

var (
	_ tasks.Observer  = (*Worker)(nil)
	_ bounce.Observer = (*Worker)(nil)
)

// NewWorker registers the worker's metrics on reg.
func NewWorker(reg prometheus.Registerer) *Worker {
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
			Help:      "Time of one SMTP transaction, by result (ok: accepted; error: refused, failed or timed out).",
			Buckets:   []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"result"}),
		delivery: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace,
			Name:      "delivery_latency_seconds",
			Help:      "Time from the send request to the SMTP server accepting the mail (queue wait, retries and SMTP).",
			Buckets:   []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace,
			Name:      "sends_in_flight",
			Help:      "Send-code tasks being processed now.",
		}),
		brkOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace,
			Name:      "smtp_breaker_open",
			Help: "1 while this worker's SMTP breaker holds sends back (open, or half-open with one trial send), " +
				"0 while it is closed.",
		}),
		brkTrips: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "smtp_breaker_opened_total",
			Help:      "Times this worker's SMTP breaker opened (a failed trial send opens it again).",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "smtp_failures_total",
			Help: "Failed sends by class (delivery.Class): recipient_refused, message_refused, needs_smtputf8, " +
				"relay_refused (verifyq's configuration or the relay's policy: alert on it), recipient_deferred, " +
				"relay_deferred, throttled, undecryptable (a task sealed under a CODE_SECRET the worker does not hold: alert on it).",
		}, []string{"class"}),
		bounces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "bounces_total",
			Help: "Reports the bounce intake took, by result (bounce.Result): bounced, complained (recorded in the send's status), " +
				"stale (genuine, but the status is gone or a later send's), delayed, other (nothing to act on), " +
				"forged, expired, unmatched (no token, or no address to check it with), malformed (no report), " +
				"too_large (refused with 552), error (Redis failed; refused with 451, the MTA sends it again).",
		}, []string{"result"}),
	}
	reg.MustRegister(m.sends, m.smtp, m.delivery, m.inFlight, m.brkOpen, m.brkTrips, m.failures, m.bounces)
	for _, o := range tasks.Outcomes {
		m.sends.WithLabelValues(string(o))
	}
	for _, c := range delivery.Classes {
		m.failures.WithLabelValues(string(c))
	}
	for _, r := range bounce.Results {
		m.bounces.WithLabelValues(string(r))
	}
	return m
}

// BounceHandled implements bounce.Observer.
func (m *Worker) BounceHandled(r bounce.Result) { m.bounces.WithLabelValues(string(r)).Inc() }

// SendStarted implements tasks.Observer.
func (m *Worker) SendStarted() { m.inFlight.Inc() }

// SendFinished implements tasks.Observer.
func (m *Worker) SendFinished(r tasks.SendResult) {
	m.inFlight.Dec()
	m.sends.WithLabelValues(string(r.Outcome)).Inc()
	if r.Failure != "" {
		m.failures.WithLabelValues(string(r.Failure)).Inc()
	}
	if r.SMTP > 0 {
		result := "ok"
		if r.SMTPErr {
			result = "error"
		}
		m.smtp.WithLabelValues(result).Observe(r.SMTP.Seconds())
	}
	if r.Outcome == tasks.OutcomeSent && r.SinceRequest > 0 {
		m.delivery.Observe(r.SinceRequest.Seconds())
	}
}

// TaskExpired implements tasks.Observer.
func (m *Worker) TaskExpired() { m.sends.WithLabelValues(string(tasks.OutcomeExpired)).Inc() }

// BreakerChanged is the tasks.BreakerConfig.OnChange of the worker's
// breaker.
func (m *Worker) BreakerChanged(s tasks.BreakerState) {
	if s == tasks.BreakerClosed {
		m.brkOpen.Set(0)
		return
	}
	m.brkOpen.Set(1)
	if s == tasks.BreakerOpen {
		m.brkTrips.Inc()
	}
}
