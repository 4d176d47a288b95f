package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/reconcile"
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
	requeued *prometheus.CounterVec
	checked  prometheus.Counter
	open     prometheus.Gauge
}

var (
	_ tasks.Observer     = (*Worker)(nil)
	_ reconcile.Observer = (*Worker)(nil)
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
	reg.MustRegister(m.sends, m.smtp, m.delivery, m.inFlight, m.brkOpen, m.brkTrips, m.failures, m.requeued, m.checked, m.open)
	for _, r := range reconcile.Reasons {
		m.requeued.WithLabelValues(r)
	}
	for _, o := range tasks.Outcomes {
		m.sends.WithLabelValues(string(o))
	}
	for _, c := range delivery.Classes {
		m.failures.WithLabelValues(string(c))
	}
	return m
}

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

// Checked implements reconcile.Observer.
func (m *Worker) Checked(n int) {
	m.checked.Add(float64(n))
	m.open.Set(float64(n))
}

// Reconciled implements reconcile.Observer.
func (m *Worker) Reconciled(reason string) { m.requeued.WithLabelValues(reason).Inc() }

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
