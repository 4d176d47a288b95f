// Package tasks is the contract between the enqueuer and the worker: the
// send-code task type, its payload, its queue and retry policy, and the
// handler that turns a task into a mail.
//
// The payload never carries the code. Payloads are visible in the dashboard
// and in archived tasks, so the worker reads the live code from Redis when it
// sends; if the code is gone by then, there is nothing to send.
package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/mail"
)

// TypeSendCode is the task type: mail the live code to an address.
const TypeSendCode = "code:send"

// Queue is the dedicated queue of send-code tasks.
const Queue = "mail"

// MaxRetry bounds the retries of one send. With RetryDelay this spans about
// ten minutes, the default code lifetime; the deadline stops it earlier.
const MaxRetry = 12

// SendCodePayload is the task payload. It has no code on purpose.
type SendCodePayload struct {
	Email       string    `json:"email"`
	Locale      string    `json:"locale"`
	RequestedAt time.Time `json:"requested_at"`
	// ExpiresAt is when the code expires; the task's deadline.
	ExpiresAt time.Time `json:"expires_at"`
}

// NewSendCodeTask returns a task for p on Queue, with MaxRetry retries and a
// deadline at the code's expiry: a mail that cannot arrive in time is
// pointless.
func NewSendCodeTask(p SendCodePayload) (*asynq.Task, error) {
	if p.Email == "" || p.ExpiresAt.IsZero() {
		return nil, errors.New("send-code task needs an email and an expiry")
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return asynq.NewTask(TypeSendCode, b,
		asynq.Queue(Queue),
		asynq.MaxRetry(MaxRetry),
		asynq.Deadline(p.ExpiresAt),
	), nil
}

// ParseSendCodePayload decodes the payload of a send-code task.
func ParseSendCodePayload(t *asynq.Task) (SendCodePayload, error) {
	var p SendCodePayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return p, fmt.Errorf("decode %s payload: %w", TypeSendCode, err)
	}
	if p.Email == "" {
		return p, fmt.Errorf("decode %s payload: no email", TypeSendCode)
	}
	return p, nil
}

// CodeSource reads the live code of an address (codes.Reader).
type CodeSource interface {
	Peek(ctx context.Context, email string) (codes.Live, error)
}

// Mailer sends one verification mail (mail.Sender).
type Mailer interface {
	Send(ctx context.Context, m mail.Message) error
}

var (
	_ CodeSource = (*codes.Reader)(nil)
	_ Mailer     = (*mail.Sender)(nil)
)

// SendCodeHandler processes TypeSendCode tasks.
type SendCodeHandler struct {
	codes  CodeSource
	mailer Mailer
	ttl    time.Duration
	logger *slog.Logger

	// Observer, when set, is told about every send; see Observer.
	Observer Observer
	// Gate, when set, holds tasks back while the SMTP server is unusable
	// (Breaker).
	Gate Gate
}

// NewSendCodeHandler returns a handler that reads codes from codes and sends
// them with mailer. ttl is the configured lifetime of a code (CODE_TTL,
// checked with codes.ValidateTTL): the mail of a code whose key has no
// expiry states it, as the next send gives the key that lifetime.
func NewSendCodeHandler(codes CodeSource, mailer Mailer, ttl time.Duration, logger *slog.Logger) *SendCodeHandler {
	return &SendCodeHandler{codes: codes, mailer: mailer, ttl: ttl, logger: logger}
}

// ProcessTask sends the live code. Returning an error means "retry"; errors
// that retrying cannot fix (a bad payload, an SMTP 5xx reply) wrap
// asynq.SkipRetry so the task is archived at once. A code that is gone
// (expired or already used) ends the task without a mail. With a Gate, the
// task first waits while the gate holds sends back (see Breaker), before it
// reads the code, so that it mails the code and lifetime live when it goes.
func (h *SendCodeHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	done, held := h.gate().Wait(ctx)
	if held != nil {
		return held
	}
	defer done()
	obs := h.Observer
	if obs == nil {
		obs = nopObserver{}
	}
	obs.SendStarted()
	res := SendResult{Outcome: OutcomeRetried}
	err := h.process(ctx, t, &res)
	if err != nil && res.Outcome != OutcomeFailed && isLastAttempt(ctx, err) {
		res.Outcome = OutcomeFailed
	}
	obs.SendFinished(res)
	return err
}

// process does the work of ProcessTask and fills in res.Outcome on every
// path that is not a transient failure, and res.SMTP once SMTP was tried.
func (h *SendCodeHandler) process(ctx context.Context, t *asynq.Task, res *SendResult) error {
	p, err := ParseSendCodePayload(t)
	if err != nil {
		res.Outcome = OutcomeFailed
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	locale, err := mail.ParseLocale(p.Locale)
	if err != nil {
		locale = mail.DefaultLocale
	}
	log := h.logger.With("email", mail.MaskAddress(p.Email), "locale", string(locale))

	live, err := h.codes.Peek(ctx, p.Email)
	if errors.Is(err, codes.ErrNotFound) || (err == nil && !live.NoExpiry && live.ExpiresIn <= 0) {
		log.InfoContext(ctx, "code gone before send, nothing to mail")
		res.Outcome = OutcomeExpired
		return nil
	}
	if err != nil {
		return fmt.Errorf("read code: %w", err)
	}
	left := live.ExpiresIn
	if live.NoExpiry {
		log.WarnContext(ctx, "code key has no expiry, mailing the configured lifetime", "code_ttl", h.ttl.String())
		left = h.ttl
	}

	start := time.Now()
	err = h.mailer.Send(ctx, mail.Message{To: p.Email, Locale: locale, Code: live.Code, ExpiresIn: left})
	accepted := time.Now()
	h.gate().Report(ctx, err)
	res.SMTP = accepted.Sub(start)
	res.SMTPErr = err != nil
	if err != nil {
		if mail.IsPermanent(err) {
			res.Outcome = OutcomeFailed
			return fmt.Errorf("send mail: %w: %w", err, asynq.SkipRetry)
		}
		return fmt.Errorf("send mail: %w", err)
	}
	res.Outcome = OutcomeSent
	if !p.RequestedAt.IsZero() {
		res.SinceRequest = accepted.Sub(p.RequestedAt)
	}
	log.InfoContext(ctx, "code mailed",
		"smtp_ms", res.SMTP.Milliseconds(),
		"since_request_ms", res.SinceRequest.Milliseconds())
	return nil
}

func (h *SendCodeHandler) gate() Gate {
	if h.Gate == nil {
		return openGate{}
	}
	return h.Gate
}

// isLastAttempt reports whether asynq will archive the task after this
// failed attempt instead of retrying it.
func isLastAttempt(ctx context.Context, err error) bool {
	if errors.Is(err, asynq.SkipRetry) {
		return true
	}
	retried, ok1 := asynq.GetRetryCount(ctx)
	maxRetry, ok2 := asynq.GetMaxRetry(ctx)
	return ok1 && ok2 && retried >= maxRetry
}

// Retry delays: exponential from RetryBase with full jitter, capped at
// RetryCap. asynq's default (15 s and up) is far too slow for codes that
// live ten minutes.
const (
	RetryBase = time.Second
	RetryCap  = time.Minute
)

// RetryDelay is the asynq.RetryDelayFunc of the worker. It never schedules a
// retry past the task's deadline (the code's expiry). A task the breaker
// let go at shutdown (ErrSMTPUnavailable) comes back as after a first
// failure.
func RetryDelay(n int, err error, t *asynq.Task) time.Duration {
	if errors.Is(err, ErrSMTPUnavailable) {
		n = 0
	}
	return retryDelay(n, t, time.Now(), rand.Float64)
}

func retryDelay(n int, t *asynq.Task, now time.Time, random func() float64) time.Duration {
	d := RetryCap
	if n < 10 {
		d = min(RetryBase<<n, RetryCap)
	}
	// Half fixed, half random: spreads retries of an outage without ever
	// retrying at once.
	d = d/2 + time.Duration(random()*float64(d/2))
	if p, err := ParseSendCodePayload(t); err == nil && !p.ExpiresAt.IsZero() {
		if left := p.ExpiresAt.Sub(now); left < d {
			d = max(left, 0)
		}
	}
	return d
}

// ErrorHandler logs every failed attempt: a warning while retries remain, an
// error when the task is archived (retries exhausted or a permanent failure).
//
// It also tells obs (which may be nil) about a task archived because its
// deadline, the code's expiry, passed: asynq fails such a task without
// calling the handler, so only the error handler sees it.
func ErrorHandler(logger *slog.Logger, obs Observer) asynq.ErrorHandlerFunc {
	if obs == nil {
		obs = nopObserver{}
	}
	return func(ctx context.Context, t *asynq.Task, err error) {
		retried, _ := asynq.GetRetryCount(ctx)
		maxRetry, _ := asynq.GetMaxRetry(ctx)
		attrs := []any{"type", t.Type(), "retried", retried, "max_retry", maxRetry, "err", err}
		if p, perr := ParseSendCodePayload(t); perr == nil {
			attrs = append(attrs, "email", mail.MaskAddress(p.Email))
		}
		if !IsFailure(err) {
			logger.InfoContext(ctx, "send held back while SMTP is unusable, task put back without counting a retry", attrs...)
			return
		}
		if retried >= maxRetry || errors.Is(err, asynq.SkipRetry) {
			// asynq reports a passed deadline as the bare context error;
			// the handler wraps every error it returns.
			if err == context.DeadlineExceeded { //nolint:errorlint // identity on purpose, see above
				obs.TaskExpired()
			}
			logger.ErrorContext(ctx, "send failed for good, task archived", attrs...)
			return
		}
		logger.WarnContext(ctx, "send failed, will retry", attrs...)
	}
}
