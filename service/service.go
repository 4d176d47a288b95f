// Package service is what verifyq does, independent of the wire: send a code
// to an address and verify a code. The HTTP and gRPC edges call it and
// translate its errors, each in one place.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/events"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/tasks"
)

// Outcomes the edges translate. Redis and queue failures wrap ErrUnavailable.
var (
	ErrInvalidAddress = mail.ErrInvalidAddress
	ErrUnknownLocale  = mail.ErrUnknownLocale
	// ErrInvalidPurpose: the purpose is not one of PURPOSES.
	ErrInvalidPurpose = codes.ErrInvalidPurpose
	ErrInvalidCode    = errors.New("invalid code")
	ErrNotFound       = codes.ErrNotFound
	ErrMismatch       = codes.ErrMismatch
	ErrUnavailable    = errors.New("service unavailable")
	// ErrAttemptsExhausted: the code was wrong for the last allowed time
	// and is now invalidated.
	ErrAttemptsExhausted = codes.ErrAttemptsExhausted
	// ErrRateLimited is matched by a *RateLimitError.
	ErrRateLimited = limits.ErrRateLimited
	// ErrUndeliverable: the address's mail server refused a mail for good
	// lately, and the address is suppressed.
	ErrUndeliverable = delivery.ErrSuppressed
)

// RateLimitError says a send was refused by a limit (Limit: "cooldown",
// "address" or "client") and when to try again (RetryAfter).
type RateLimitError = limits.Error

// MaxCodeLength bounds the code a caller may submit for verification.
const MaxCodeLength = 64

// Codes checks and verifies codes (codes.Store).
type Codes interface {
	Check(id codes.ID) error
	Verify(ctx context.Context, id codes.ID, code string) error
	// VerifyTask is Verify that names the send (its task) it verified
	// or exhausted, for the events.
	VerifyTask(ctx context.Context, id codes.ID, code string) (string, error)
}

// Events queues the events of verifies (events.Emitter).
type Events interface {
	Emit(ctx context.Context, ev events.Event) error
}

// Limiter admits sends, issuing their codes, and verifies (limits.Limiter).
type Limiter interface {
	Admit(ctx context.Context, req limits.Request) (limits.Admission, error)
	AdmitVerify(ctx context.Context, client string) error
}

// Statuses reads delivery statuses (delivery.Records).
type Statuses interface {
	Status(ctx context.Context, id codes.ID, now time.Time) (delivery.Status, error)
}

// Enqueuer puts tasks on the queue (asynq.Client).
type Enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// Replicas waits until a send's writes reached enough replicas
// (replication.Waiter): keys name the slots the send wrote.
type Replicas interface {
	Wait(ctx context.Context, keys ...string) error
}

var (
	_ Codes    = (*codes.Store)(nil)
	_ Limiter  = (*limits.Limiter)(nil)
	_ Statuses = (*delivery.Records)(nil)
	_ Enqueuer = (*asynq.Client)(nil)
	_ Events   = (*events.Emitter)(nil)
)

// EnqueueTimeout bounds putting a task on the queue, and undoing the send's
// limits when that fails. Both run detached from the caller's
// cancellation: a caller that goes away between the code and its task must
// not leave a code counted but never mailed.
const EnqueueTimeout = 3 * time.Second

// Service sends and verifies codes.
type Service struct {
	codes    Codes
	limiter  Limiter
	statuses Statuses
	queue    Enqueuer
	logger   *slog.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time
	// QueueShards is the number of queue shards (QUEUE_SHARDS) the tasks
	// are spread over, by address; 0 or 1 is the one queue.
	QueueShards int
	// DefaultLocale (DEFAULT_LOCALE) is the mail's locale when a send
	// names none, or names a language no supported locale matches; empty
	// is mail.DefaultLocale.
	DefaultLocale mail.Locale
	// Replicas, when set (REDIS_MIN_REPLICAS), is waited for after each
	// send's writes: a send whose writes did not reach enough replicas in
	// time fails as unavailable and is taken back, as after a failed
	// enqueue. Nil answers as soon as the primary has them.
	Replicas Replicas
	// Tracer, when set, makes a span of each enqueue (SpanEnqueue) and
	// carries its trace to the worker in the task; nil makes none.
	Tracer trace.Tracer
	// Events, when set (WEBHOOK_URLS), is told each code verified and
	// each code whose attempts a wrong one used up; nil (events off)
	// costs the verify nothing.
	Events Events
}

// New returns a Service.
func New(codes Codes, limiter Limiter, statuses Statuses, queue Enqueuer, logger *slog.Logger) *Service {
	return &Service{codes: codes, limiter: limiter, statuses: statuses, queue: queue, logger: logger, Now: time.Now}
}

// SendRequest asks for a code to be sent.
type SendRequest struct {
	// Email is the address exactly as the client sent it.
	Email string
	// Purpose is what the code is for (codes.ID); empty is the default
	// purpose, the only one of the old service.
	Purpose string
	// Locale picks the mail's language: a BCP 47 language tag, matched to
	// a supported locale (mail.MatchLocale); empty reads AcceptLanguage.
	Locale string
	// AcceptLanguage is an HTTP Accept-Language header, read when Locale
	// is empty (mail.MatchAcceptLanguage); with neither the mail is in
	// DefaultLocale.
	AcceptLanguage string
	// Client is the end user's IP address as the gateway passed it, for
	// the per-client limit; empty (or not an IP address) means none.
	Client string
	// Coalesce answers a request inside the resend cooldown, while the
	// code lives, with success and no new mail (Sent.Coalesced): the code
	// is already on its way. The old service's callers re-enable their
	// button before the cooldown ends.
	Coalesce bool
}

// VerifyRequest asks to check a code.
type VerifyRequest struct {
	// Email is the address exactly as the client sent it.
	Email string
	// Purpose is what the code was asked for; a code of another purpose
	// of the address is not found.
	Purpose string
	// Code is the code to check.
	Code string
	// Client is the end user's IP address, for the per-client verify
	// limit; empty (or not an IP address) means none.
	Client string
}

// Sent is the outcome of SendCode. It never holds the code.
type Sent struct {
	// ExpiresIn is the remaining lifetime of the code.
	ExpiresIn time.Duration
	// Created is false when a live code was reused.
	Created bool
	// ResendAfter is the cooldown before the next send to this address.
	ResendAfter time.Duration
	// Coalesced is true when the request was coalesced with the previous
	// send (SendRequest.Coalesce): nothing was queued.
	Coalesced bool
}

// SendCode makes or reuses the code for email and enqueues a task that mails
// it. It does not wait for the mail. The task's ID is picked first and
// named in the code's status by the admission, so that a task lost on the
// way (a crash before the enqueue, a failover) can be made again under
// the same ID (package reconcile).
func (s *Service) SendCode(ctx context.Context, req SendRequest) (Sent, error) {
	email := req.Email
	if err := mail.ValidateAddress(email); err != nil {
		return Sent{}, err
	}
	loc, err := s.locale(req)
	if err != nil {
		return Sent{}, err
	}
	now := s.Now()
	taskID, queue := tasks.NewTaskID(), tasks.QueueFor(email, s.QueueShards)
	issued, err := s.limiter.Admit(ctx, limits.Request{Email: email, Purpose: req.Purpose, Client: ClientID(req.Client), Coalesce: req.Coalesce,
		Send: codes.Send{Task: taskID, Queue: queue, Locale: string(loc)}, At: now})
	if errors.Is(err, ErrRateLimited) || errors.Is(err, ErrUndeliverable) || errors.Is(err, ErrInvalidPurpose) {
		return Sent{}, err
	}
	if err != nil {
		return Sent{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	sent := Sent{ExpiresIn: issued.ExpiresIn, Created: issued.Created, ResendAfter: issued.ResendAfter, Coalesced: issued.Coalesced}
	if issued.Coalesced {
		s.logger.DebugContext(ctx, "send coalesced with the one in its cooldown", "email", mail.Masked(email))
		return sent, nil
	}
	err = s.enqueue(ctx, tasks.SendCodePayload{
		Email:       email,
		Purpose:     req.Purpose,
		Locale:      string(loc),
		SealedCode:  issued.Sealed,
		RequestedAt: now,
		ExpiresAt:   now.Add(issued.ExpiresIn),
	}, queue, taskID)
	if err == nil && s.Replicas != nil {
		err = s.replicate(ctx, append(issued.Keys, "{"+queue+"}"))
	}
	if err != nil {
		// The request fails: take its admission back, so the client's retry
		// is let through and mailed. A task already queued (the replicas
		// fell short) then finds no code to mail, unless the code was a
		// live one reused: that code is mailed, as it would be again.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), EnqueueTimeout)
		defer cancel()
		if uerr := issued.Undo(uctx); uerr != nil {
			err = errors.Join(err, uerr)
		}
		return Sent{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	s.logger.DebugContext(ctx, "send enqueued", "email", mail.Masked(email), "created", issued.Created)
	return sent, nil
}

// locale returns the supported locale req's mail is written in: the one
// its Locale tag matches, else its Accept-Language's, else the default.
// Errors wrap ErrUnknownLocale.
func (s *Service) locale(req SendRequest) (mail.Locale, error) {
	def := s.DefaultLocale
	if def == "" {
		def = mail.DefaultLocale
	}
	if req.Locale == "" && req.AcceptLanguage != "" {
		return mail.MatchAcceptLanguage(req.AcceptLanguage, def), nil
	}
	return mail.MatchLocale(req.Locale, def)
}

// enqueue puts the task of p on queue under id, detached from the
// caller's cancellation and bounded by EnqueueTimeout. A task of the same
// ID on the queue already is this one, queued by the reconciler after a
// slow enqueue. With a Tracer, the enqueue is a producer span (SpanEnqueue)
// whose trace the task carries to the worker in its headers.
func (s *Service) enqueue(ctx context.Context, p tasks.SendCodePayload, queue, id string) (err error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), EnqueueTimeout)
	defer cancel()
	if s.Tracer != nil {
		var span trace.Span
		ctx, span = s.Tracer.Start(ctx, SpanEnqueue, trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(
				attribute.String("messaging.system", "asynq"),
				attribute.String("messaging.operation.type", "send"),
				attribute.String("messaging.destination.name", queue),
				attribute.String("messaging.message.id", id),
			))
		defer func() {
			if err != nil {
				span.SetStatus(otelcodes.Error, "enqueue failed")
			}
			span.End()
		}()
	}
	task, err := tasks.NewSendCodeTaskFrom(ctx, p, asynq.Queue(queue), asynq.TaskID(id))
	if err != nil {
		return err
	}
	_, err = s.queue.EnqueueContext(ctx, task)
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue: %w", err)
	}
	return nil
}

// SpanEnqueue is the name of the span of a send's enqueue.
const SpanEnqueue = "enqueue " + tasks.TypeSendCode

// replicate waits until the send's writes to keys (the code's and the
// index's slots, the queue's) reached the replicas Replicas wants,
// detached from the caller's cancellation as the enqueue is.
func (s *Service) replicate(ctx context.Context, keys []string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), EnqueueTimeout)
	defer cancel()
	if err := s.Replicas.Wait(ctx, keys...); err != nil {
		return fmt.Errorf("replicas: %w", err)
	}
	return nil
}

// VerifyCode checks req.Code for req.Email and consumes it on success.
func (s *Service) VerifyCode(ctx context.Context, req VerifyRequest) error {
	if err := mail.ValidateAddress(req.Email); err != nil {
		return err
	}
	if req.Code == "" || len(req.Code) > MaxCodeLength || !utf8.ValidString(req.Code) {
		return ErrInvalidCode
	}
	id := codes.ID{Purpose: req.Purpose, Email: req.Email}
	err := s.codes.Check(id)
	if err == nil {
		err = s.limiter.AdmitVerify(ctx, ClientID(req.Client))
	}
	if err == nil {
		err = s.verify(ctx, id, req.Code)
	}
	switch {
	case err == nil, errors.Is(err, codes.ErrNotFound), errors.Is(err, ErrInvalidPurpose), errors.Is(err, codes.ErrMismatch),
		errors.Is(err, codes.ErrAttemptsExhausted), errors.Is(err, ErrRateLimited):
		return err
	default:
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
}

// verify verifies code for id and, with events on, emits what became of
// it. The event's failure to queue is logged by the emitter and fails
// nothing: the code is verified (or exhausted) either way.
func (s *Service) verify(ctx context.Context, id codes.ID, code string) error {
	if s.Events == nil {
		return s.codes.Verify(ctx, id, code)
	}
	task, err := s.codes.VerifyTask(ctx, id, code)
	typ := events.CodeVerified
	switch {
	case errors.Is(err, codes.ErrAttemptsExhausted):
		typ = events.CodeAttemptsExhausted
	case err != nil:
		return err
	}
	_ = s.Events.Emit(ctx, events.Event{Type: typ, Fact: task, At: s.Now(),
		Data: events.Data{Email: id.Email, Purpose: id.Purpose, TaskID: task}})
	return err
}

// Status is the delivery status of the code id names (delivery.Status):
// what became of its mail, and how long the code has left. It never holds
// the code.
func (s *Service) Status(ctx context.Context, id codes.ID) (delivery.Status, error) {
	if err := mail.ValidateAddress(id.Email); err != nil {
		return delivery.Status{}, err
	}
	if err := s.codes.Check(id); err != nil {
		return delivery.Status{}, err
	}
	st, err := s.statuses.Status(ctx, id, s.Now())
	if err != nil {
		return delivery.Status{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return st, nil
}

// ClientID turns the client address a gateway passed into the identity the
// per-client limit counts: the IP address in canonical form, IPv6 grouped by
// its /64 (one subscriber usually holds a whole /64). Anything that is not
// an IP address yields "", no per-client limit.
func ClientID(s string) string {
	addr, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return ""
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.String()
	}
	return addr.String()
}
