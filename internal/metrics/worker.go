package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/verifyq/verifyq/tasks"
)

// Worker is the worker's metric set; it is the tasks.Observer of the
// send-code handler.
type Worker struct {
	sends    *prometheus.CounterVec
	smtp     *prometheus.HistogramVec
	delivery prometheus.Histogram
	inFlight prometheus.Gauge
}

var _ tasks.Observer = (*Worker)(nil)

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
	}
	reg.MustRegister(m.sends, m.smtp, m.delivery, m.inFlight)
	for _, o := range tasks.Outcomes {
		m.sends.WithLabelValues(string(o))
	}
	return m
}

// SendStarted implements tasks.Observer.
func (m *Worker) SendStarted() { m.inFlight.Inc() }

// SendFinished implements tasks.Observer.
func (m *Worker) SendFinished(r tasks.SendResult) {
	m.inFlight.Dec()
	m.sends.WithLabelValues(string(r.Outcome)).Inc()
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
