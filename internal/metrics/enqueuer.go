package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/hibiken/asynq"
	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/outcome"
	"github.com/verifyq/verifyq/service"
)

// Enqueuer is the enqueuer's metric set.
type Enqueuer struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	codes         *prometheus.CounterVec
	limited       *prometheus.CounterVec
	enqueueErrors prometheus.Counter
	connRefused   *prometheus.CounterVec
	outcomes      map[string]bool // the known values of the outcome label

	// Events counts the events the enqueuer emitted.
	Events *Events
}

// NewEnqueuer registers the enqueuer's metrics on reg. With a non-nil insp it
// also registers asynq's queue collector (asynq_queue_size,
// asynq_queue_latency_seconds, asynq_tasks_processed_total, ...), which
// reads every queue's state from Redis at each scrape.
func NewEnqueuer(reg prometheus.Registerer, insp *asynq.Inspector) *Enqueuer {
	m := &Enqueuer{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "requests_total",
			Help:      "Requests answered, by API (http, grpc), route, caller (the API key's name in API_KEYS_FILE; anonymous without keys; legacy for the old service's keyless callers; empty when no caller was admitted) and outcome.",
		}, []string{"api", "route", "caller", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace,
			Name:      "request_duration_seconds",
			Help:      "Time to answer a request, by API, route and outcome.",
			Buckets:   []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"api", "route", "outcome"}),
		codes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "codes_issued_total",
			Help:      "Send requests that got a code: result=created (a new code), reused (the live code, its lifetime unchanged) or coalesced (an old-service resend inside the cooldown: nothing queued).",
		}, []string{"result"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "rate_limited_total",
			Help:      "Requests refused by a limit, by limit (sends: cooldown, address, client, domain, global; verifies: client_verify).",
		}, []string{"limit"}),
		enqueueErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "enqueue_errors_total",
			Help:      "Send-code tasks that could not be put on the queue (the request failed as unavailable).",
		}),
		connRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "connections_refused_total",
			Help:      "Connections closed on accept because their source held its share (MAX_CONNECTIONS_PER_SOURCE), by listener (http, grpc).",
		}, []string{"listener"}),
	}
	m.outcomes = map[string]bool{}
	for _, label := range outcome.Metrics() {
		m.outcomes[label] = true
	}
	m.Events = newEvents(reg, false)
	reg.MustRegister(m.requests, m.duration, m.codes, m.limited, m.enqueueErrors, m.connRefused)
	if insp != nil {
		reg.MustRegister(asynqmetrics.NewQueueMetricsCollector(insp))
	}
	for _, r := range []string{"created", "reused", "coalesced"} {
		m.codes.WithLabelValues(r)
	}
	for _, l := range limits.Names {
		m.limited.WithLabelValues(l)
	}
	for _, l := range []string{"http", "grpc", "grpc_legacy"} {
		m.connRefused.WithLabelValues(l)
	}
	return m
}

// ConnectionRefused counts a connection that listener ("http", "grpc", or
// "grpc_legacy" on LEGACY_GRPC_ADDR) closed because its source held its
// share.
func (m *Enqueuer) ConnectionRefused(listener string) {
	m.connRefused.WithLabelValues(listener).Inc()
}

// ObserveRequest records one answered request: api is "http" or "grpc",
// route a fixed name of the endpoint or method, caller the admitted
// caller's name (auth.Caller.Name: a name of the key file, so the label's
// values are bounded by it) or "", label an outcome's Metric (anything else
// is recorded as outcome.MetricError). Both edges call it. The duration
// histogram has no caller label, to keep its series few.
func (m *Enqueuer) ObserveRequest(api, route, caller, label string, d time.Duration) {
	if !m.outcomes[label] {
		label = outcome.MetricError
	}
	m.requests.WithLabelValues(api, route, caller, label).Inc()
	m.duration.WithLabelValues(api, route, label).Observe(d.Seconds())
}

// SendVerifier is what the edges call (service.Service).
type SendVerifier interface {
	SendCode(ctx context.Context, req service.SendRequest) (service.Sent, error)
	VerifyCode(ctx context.Context, req service.VerifyRequest) error
	Status(ctx context.Context, id codes.ID) (delivery.Status, error)
}

var _ SendVerifier = (*service.Service)(nil)

// Service returns svc counting, whichever edge calls it, codes created and
// reused and sends refused by a limit.
func (m *Enqueuer) Service(svc SendVerifier) SendVerifier {
	return instrumentedService{SendVerifier: svc, m: m}
}

type instrumentedService struct {
	SendVerifier
	m *Enqueuer
}

func (s instrumentedService) SendCode(ctx context.Context, req service.SendRequest) (service.Sent, error) {
	sent, err := s.SendVerifier.SendCode(ctx, req)
	switch {
	case err == nil && sent.Coalesced:
		s.m.codes.WithLabelValues("coalesced").Inc()
	case err == nil && sent.Created:
		s.m.codes.WithLabelValues("created").Inc()
	case err == nil:
		s.m.codes.WithLabelValues("reused").Inc()
	default:
		s.m.countLimit(err)
	}
	return sent, err
}

func (s instrumentedService) VerifyCode(ctx context.Context, req service.VerifyRequest) error {
	err := s.SendVerifier.VerifyCode(ctx, req)
	s.m.countLimit(err)
	return err
}

// countLimit counts err if a limit refused the request.
func (m *Enqueuer) countLimit(err error) {
	var limit *service.RateLimitError
	if errors.As(err, &limit) {
		name := limit.Limit
		if name == "" {
			name = "unknown"
		}
		m.limited.WithLabelValues(name).Inc()
	}
}

// Queue returns q counting enqueue errors.
func (m *Enqueuer) Queue(q service.Enqueuer) service.Enqueuer {
	return instrumentedQueue{next: q, m: m}
}

type instrumentedQueue struct {
	next service.Enqueuer
	m    *Enqueuer
}

func (q instrumentedQueue) EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	info, err := q.next.EnqueueContext(ctx, task, opts...)
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) { // the task is queued: see service.SendCode
		q.m.enqueueErrors.Inc()
	}
	return info, err
}
