package tasks

import (
	"context"
	"io"
	"log/slog"

	"github.com/hibiken/asynq"

	"github.com/verifyq/verifyq/relay"
)

// The worker's asynq middleware, around the send-code handler in this
// order (the first is outermost):
//
//	mux.Use(tasks.ReserveStack, tasks.Trace(tp), tasks.Logging(logger), tasks.Hold(relays), tasks.Observe(metrics))
//
// ReserveStack gives the task's goroutine the stack a send needs at once;
// Trace (only with tracing on) starts the task's span in the request's
// trace; Logging gives every line of a task its fields; Hold keeps a task waiting
// while no SMTP relay can take mail, before it reads the code, and notes
// the relay it goes to; Observe tells the metrics how each attempt that
// went ahead ended.

type ctxKey int

const (
	resultKey ctxKey = iota
	loggerKey
	routeKey
)

// ReserveStack grows the stack of the goroutine a task runs on to about
// what a send takes before the task starts, in one step. asynq runs every
// task on a new goroutine, whose stack starts small and doubles as the
// send goes deeper (the payload's JSON, go-redis, the mail's Date), each
// time copying every frame above; growing it first copies only the few
// frames of the middleware. In CPU profiles of a worker draining 20000
// mails the handler's stack copies fell from 4.4 % of the samples to 1.1 %
// (this one copy).
func ReserveStack(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		reserveStack()
		return next.ProcessTask(ctx, t)
	})
}

// stackReserve is the frame reserveStack takes: the stack then holds 32
// KiB, which a send did not outgrow in the profile.
const stackReserve = 16 << 10

// reserveStack takes a frame of stackReserve bytes, which makes the
// runtime grow the goroutine's stack to hold it.
//
//go:noinline
func reserveStack() {
	var frame [stackReserve]byte
	keep(&frame)
}

// keep takes the frame's address, so that the compiler keeps the frame.
//
//go:noinline
func keep(*[stackReserve]byte) {}

// Logging puts a logger with the task's ID, queue and retry count into the
// task's context, which the handler logs through.
func Logging(logger *slog.Logger) asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			id, _ := asynq.GetTaskID(ctx)
			queue, _ := asynq.GetQueueName(ctx)
			retried, _ := asynq.GetRetryCount(ctx)
			l := logger.With("task_id", id, "queue", queue, "retried", retried)
			return next.ProcessTask(context.WithValue(ctx, loggerKey, l), t)
		})
	}
}

// loggerOf is the logger Logging put in ctx, else fallback.
func loggerOf(ctx context.Context, fallback *slog.Logger) *slog.Logger {
	if l, ok := ctx.Value(loggerKey).(*slog.Logger); ok {
		return l
	}
	return fallback
}

// Hold makes each task wait at gate before the handler runs (see Breaker),
// so that a send held back for an outage reads the code and its lifetime
// when it goes, and releases the gate when the handler returns. The task's
// ctx carries a route that a gate of several relays (Relays) fills in with
// the relay it let the send go to.
func Hold(gate Gate) asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			ctx = context.WithValue(ctx, routeKey, &route{})
			done, err := gate.Wait(ctx)
			if err != nil {
				return err
			}
			defer done()
			return next.ProcessTask(ctx, t)
		})
	}
}

// Observe tells obs about every attempt: SendStarted before the handler
// runs, SendFinished with the SendResult the handler filled in after it
// returns (also when it panics, as a retried attempt; asynq recovers the
// panic). A failed attempt after which asynq gives the task up counts as
// failed.
func Observe(obs Observer) asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) (err error) {
			// The result Trace put in ctx, if it did: it reads it after.
			ctx, res := withResult(ctx)
			res.Outcome = OutcomeRetried
			obs.SendStarted()
			defer func() {
				if err != nil && res.Outcome != OutcomeFailed && isLastAttempt(ctx, err) {
					res.Outcome = OutcomeFailed
				}
				obs.SendFinished(*res)
			}()
			return next.ProcessTask(ctx, t)
		})
	}
}

// resultOf is the SendResult Observe (or the handler, withResult) put in
// ctx, else one nobody reads.
func resultOf(ctx context.Context) *SendResult {
	if r, ok := ctx.Value(resultKey).(*SendResult); ok {
		return r
	}
	return &SendResult{}
}

// withResult returns ctx with a SendResult, Observe's if it put one there,
// and that result: the handler and the mailer (Relays) fill in the same.
func withResult(ctx context.Context) (context.Context, *SendResult) {
	if r, ok := ctx.Value(resultKey).(*SendResult); ok {
		return ctx, r
	}
	r := &SendResult{}
	return context.WithValue(ctx, resultKey, r), r
}

// watchedMailer reports every send's result to a breaker.
type watchedMailer struct {
	Mailer
	b *Breaker
}

func (m watchedMailer) Send(ctx context.Context, env relay.Envelope, msg io.WriterTo) error {
	err := m.Mailer.Send(ctx, env, msg)
	m.b.Report(ctx, err)
	return err
}

// Watch returns mailer with every send's result reported to b, which is
// how the breaker learns that the SMTP server fails or recovers.
func (b *Breaker) Watch(mailer Mailer) Mailer { return watchedMailer{Mailer: mailer, b: b} }
