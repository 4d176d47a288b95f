// Package service is what verifyq does, independent of the wire: send a code
// to an address and verify a code. The HTTP and gRPC edges call it and
// translate its errors, each in one place.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/tasks"
)

// Outcomes the edges translate. Redis and queue failures wrap ErrUnavailable.
var (
	ErrInvalidAddress = mail.ErrInvalidAddress
	ErrUnknownLocale  = mail.ErrUnknownLocale
	ErrInvalidCode    = errors.New("invalid code")
	ErrNotFound       = codes.ErrNotFound
	ErrMismatch       = codes.ErrMismatch
	ErrUnavailable    = errors.New("service unavailable")
	// ErrRateLimited is matched by a *RateLimitError.
	ErrRateLimited = errors.New("rate limited")
)

// RateLimitError says a send was refused by a limit and when to try again.
type RateLimitError struct {
	// Limit names the limit: "cooldown", "address" or "client".
	Limit string
	// RetryAfter is how long until a send can succeed.
	RetryAfter time.Duration
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("rate limited (%s), retry after %s", e.Limit, e.RetryAfter)
}

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *RateLimitError) Is(target error) bool { return target == ErrRateLimited }

// MaxCodeLength bounds the code a caller may submit for verification.
const MaxCodeLength = 64

// CodeStore keeps codes (codes.Store).
type CodeStore interface {
	GetOrCreate(ctx context.Context, email string) (codes.Issued, error)
	Verify(ctx context.Context, email, code string) error
}

// Enqueuer puts tasks on the queue (asynq.Client).
type Enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

var (
	_ CodeStore = (*codes.Store)(nil)
	_ Enqueuer  = (*asynq.Client)(nil)
)

// Service sends and verifies codes.
type Service struct {
	codes  CodeStore
	queue  Enqueuer
	logger *slog.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time
}

// New returns a Service.
func New(codes CodeStore, queue Enqueuer, logger *slog.Logger) *Service {
	return &Service{codes: codes, queue: queue, logger: logger, Now: time.Now}
}

// SendRequest asks for a code to be sent.
type SendRequest struct {
	// Email is the address exactly as the client sent it.
	Email string
	// Locale picks the mail's language; empty means the default.
	Locale string
	// Client identifies the end user's client (an IP address) for the
	// per-client limit; empty when unknown.
	Client string
}

// Sent is the outcome of SendCode. It never holds the code.
type Sent struct {
	// ExpiresIn is the remaining lifetime of the code.
	ExpiresIn time.Duration
	// Created is false when a live code was reused.
	Created bool
}

// SendCode makes or reuses the code for email and enqueues a task that mails
// it. It does not wait for the mail.
func (s *Service) SendCode(ctx context.Context, req SendRequest) (Sent, error) {
	email := req.Email
	if err := mail.ValidateAddress(email); err != nil {
		return Sent{}, err
	}
	loc, err := mail.ParseLocale(req.Locale)
	if err != nil {
		return Sent{}, err
	}
	now := s.Now()
	issued, err := s.codes.GetOrCreate(ctx, email)
	if err != nil {
		return Sent{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{
		Email:       email,
		Locale:      string(loc),
		RequestedAt: now,
		ExpiresAt:   now.Add(issued.ExpiresIn),
	})
	if err != nil {
		return Sent{}, err
	}
	if _, err := s.queue.EnqueueContext(ctx, task); err != nil {
		return Sent{}, fmt.Errorf("%w: enqueue: %w", ErrUnavailable, err)
	}
	s.logger.DebugContext(ctx, "send enqueued", "email", mail.MaskAddress(email), "created", issued.Created)
	return Sent{ExpiresIn: issued.ExpiresIn, Created: issued.Created}, nil
}

// VerifyCode checks code for email and consumes it on success.
func (s *Service) VerifyCode(ctx context.Context, email, code string) error {
	if err := mail.ValidateAddress(email); err != nil {
		return err
	}
	if code == "" || len(code) > MaxCodeLength {
		return ErrInvalidCode
	}
	err := s.codes.Verify(ctx, email, code)
	switch {
	case err == nil, errors.Is(err, codes.ErrNotFound), errors.Is(err, codes.ErrMismatch):
		return err
	default:
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
}
