package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/verifyq/verifyq/codes"
)

// TypeExpiry is the task type of the check behind code.expired: at a
// code's expiry, see whether it expired unused.
//
// Its cost, only with events on: the worker queues one such task,
// scheduled at the code's expiry, when it first finds the code live for a
// send (one more Redis round trip per send, on the worker, none on the
// enqueuer); it waits in the webhooks queue's scheduled set (a sorted set
// entry and a task hash of about 300 bytes per code alive); at its time it
// reads the code's status and lifetime (one round trip) and emits
// code.expired only when the code expired unused.
const TypeExpiry = "event:expiry"

// ExpiryGrace is how long after the code's expiry its check is scheduled:
// beyond the clocks' difference between a worker and Redis. asynq moves a
// scheduled task to the queue within seconds of its time.
const ExpiryGrace = time.Second

// expiryPayload is the payload of an expiry check: the code and the send
// that mails it.
type expiryPayload struct {
	Email   string `json:"email"`
	Purpose string `json:"purpose,omitempty"`
	Task    string `json:"task"`
}

// ScheduleExpiry queues the check of id's code, mailed by the send task,
// for when the code expires (at): once per send, whatever the attempts
// (the task ID is the send's).
func (e *Emitter) ScheduleExpiry(ctx context.Context, id codes.ID, task string, at time.Time) error {
	if task == "" {
		return nil
	}
	p, err := json.Marshal(expiryPayload{Email: id.Email, Purpose: id.Purpose, Task: task})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), EmitTimeout)
	defer cancel()
	_, err = e.queue.EnqueueContext(ctx, asynq.NewTask(TypeExpiry, p), asynq.Queue(Queue), asynq.TaskID("exp:"+task),
		asynq.ProcessAt(at.Add(ExpiryGrace)), asynq.MaxRetry(expiryRetries))
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("schedule the expiry check: %w", err)
	}
	return nil
}

// expiryRetries bounds the retries of an expiry check that Redis failed.
const expiryRetries = 5

// Expiries tells whether a code expired unused (delivery.Records).
type Expiries interface {
	// ExpiredUnused reports, for id's code mailed by task: the delivery
	// state of its status, whether the code expired unused (gone, while
	// its status still names task and no wrong code used up its attempts),
	// and how long it has left when it is still alive.
	ExpiredUnused(ctx context.Context, id codes.ID, task string) (state string, expired bool, left time.Duration, err error)
}

// ExpiryChecker processes TypeExpiry tasks.
type ExpiryChecker struct {
	records Expiries
	emit    *Emitter
	log     *slog.Logger
}

// NewExpiryChecker returns the checker that reads records and emits
// through emit.
func NewExpiryChecker(records Expiries, emit *Emitter, logger *slog.Logger) (*ExpiryChecker, error) {
	if records == nil || emit == nil || logger == nil {
		return nil, errors.New("events: an expiry check needs the records, an emitter and a logger")
	}
	return &ExpiryChecker{records: records, emit: emit, log: logger.With("component", "events")}, nil
}

// ProcessTask emits code.expired when the code expired unused. A code
// verified, exhausted, or whose status a later send took over (a resend
// of the live code: that send's check decides; a new code asked for
// after this one expired, within the seconds before this check ran: then
// this code's code.expired is not sent) emits nothing. A code still alive
// (the worker's clock ahead of Redis's) is checked again later.
func (c *ExpiryChecker) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p expiryPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.Email == "" || p.Task == "" {
		return fmt.Errorf("decode %s payload: %w", TypeExpiry, asynq.SkipRetry)
	}
	id := codes.ID{Purpose: p.Purpose, Email: p.Email}
	state, expired, left, err := c.records.ExpiredUnused(ctx, id, p.Task)
	switch {
	case err != nil:
		return fmt.Errorf("expiry check: %w", err)
	case left > 0:
		return fmt.Errorf("expiry check: the code lives %s more", left.Round(time.Millisecond))
	case !expired:
		return nil
	}
	return c.emit.Emit(ctx, Event{Type: CodeExpired, Fact: p.Task, At: time.Now(),
		Data: Data{Email: p.Email, Purpose: p.Purpose, TaskID: p.Task, State: state}})
}
