package events

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
)

// Queue is the asynq queue of the events' tasks (deliveries and expiry
// checks), apart from the mail queues: a worker serves it with a server
// of its own, DeliverConcurrency tasks at once, so that an endpoint that
// is down or slow never holds a slot a mail needs.
const Queue = "webhooks"

// TypeDeliver is the task type: POST one event to one endpoint.
const TypeDeliver = "event:deliver"

// EmitTimeout bounds queuing one event (one enqueue per endpoint),
// detached from the caller's cancellation.
const EmitTimeout = 3 * time.Second

// Enqueuer puts tasks on the queue (asynq.Client).
type Enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

var _ Enqueuer = (*asynq.Client)(nil)

// Observer counts the events emitted and delivered (the binaries'
// metrics). It must not block.
type Observer interface {
	// Emitted is told each event queued for its endpoints (ok), or that
	// could not be queued for some endpoint (not ok: lost for it).
	Emitted(t Type, ok bool)
	// Delivered is told how each delivery attempt ended (Results).
	Delivered(t Type, r Result)
}

// Emitter queues events, one delivery task per endpoint. A nil *Emitter
// is never handed out: events are off when no endpoint is configured, and
// the callers then hold a nil interface and build no event.
type Emitter struct {
	queue Enqueuer
	urls  []string
	obs   Observer
	log   *slog.Logger
}

// NewEmitter returns the Emitter of urls (ParseURLs) onto queue; nil when
// urls is empty. obs may be nil.
func NewEmitter(queue Enqueuer, urls []string, obs Observer, logger *slog.Logger) *Emitter {
	if len(urls) == 0 {
		return nil
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Emitter{queue: queue, urls: urls, obs: obs, log: logger.With("component", "events")}
}

// deliverPayload is the payload of a delivery task: the body is made once,
// when the event is emitted, and every attempt signs and POSTs those
// bytes.
type deliverPayload struct {
	ID   string          `json:"id"`
	Type Type            `json:"type"`
	URL  string          `json:"url"`
	Body json.RawMessage `json:"body"`
}

// MaxRetry bounds a delivery's retries; with RetryDelay they span about
// 42 hours (RetryWindow).
const MaxRetry = 20

// deliverTimeout is asynq's bound of one delivery attempt: the request's
// (RequestTimeout) and some.
const deliverTimeout = RequestTimeout + 5*time.Second

// Emit queues ev for every endpoint, under a task ID made of its
// webhook-id and the endpoint, so that the same fact emitted again while
// a delivery of it is pending or retrying is not queued twice. It logs
// (without the address) and returns what could not be queued; the
// callers log it and go on: an event never fails what it reports.
func (e *Emitter) Emit(ctx context.Context, ev Event) error {
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	if ev.Fact == "" {
		var r [16]byte
		_, _ = rand.Read(r[:]) // crypto/rand.Read does not fail
		ev.Fact = "random:" + hex.EncodeToString(r[:])
	}
	b, err := ev.Body()
	if err != nil {
		return fmt.Errorf("event %s: %w", ev.Type, err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), EmitTimeout)
	defer cancel()
	id := ev.ID()
	var errs []error
	for _, u := range e.urls {
		p, err := json.Marshal(deliverPayload{ID: id, Type: ev.Type, URL: u, Body: b})
		if err == nil {
			_, err = e.queue.EnqueueContext(ctx, asynq.NewTask(TypeDeliver, p),
				asynq.Queue(Queue), asynq.TaskID(deliveryTaskID(id, u)), asynq.MaxRetry(MaxRetry), asynq.Timeout(deliverTimeout))
		}
		if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			errs = append(errs, fmt.Errorf("queue event %s for %s: %w", ev.Type, endpointName(u), err))
		}
	}
	err = errors.Join(errs...)
	if e.obs != nil {
		e.obs.Emitted(ev.Type, err == nil)
	}
	if err != nil {
		e.log.WarnContext(ctx, "event not queued: its endpoints will not get it", "type", string(ev.Type), "webhook_id", id, "err", err)
		return err
	}
	e.log.DebugContext(ctx, "event queued", "type", string(ev.Type), "webhook_id", id)
	return nil
}

// deliveryTaskID is the asynq task ID of the delivery of the event id to
// the endpoint u.
func deliveryTaskID(id, u string) string {
	sum := sha256.Sum256([]byte(u))
	return "wh:" + id + ":" + hex.EncodeToString(sum[:6])
}
