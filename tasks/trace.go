package tasks

import (
	"context"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// A task carries the trace of the request that queued it in its headers
// (asynq's Task.Headers), as W3C Trace Context (traceparent, tracestate):
// the worker's span of the task joins the request's trace. The headers
// hold nothing else; a task without them (an older enqueuer, the
// reconciler, tracing off) starts a trace of its own.
var propagator = propagation.TraceContext{}

// TracerName names the tracer of the task's spans.
const TracerName = "github.com/verifyq/verifyq/tasks"

// Attributes of a task's span besides OpenTelemetry's messaging ones.
const (
	AttrRetried = attribute.Key("verifyq.task.retried")
	AttrOutcome = attribute.Key("verifyq.send.outcome")
	AttrRelay   = attribute.Key("verifyq.relay")
	AttrFailure = attribute.Key("verifyq.send.failure")
)

// NewSendCodeTaskFrom is NewSendCodeTask with the trace of ctx's span, if
// it holds one, in the task's headers.
func NewSendCodeTaskFrom(ctx context.Context, p SendCodePayload, opts ...asynq.Option) (*asynq.Task, error) {
	carrier := propagation.MapCarrier{}
	propagator.Inject(ctx, carrier)
	if len(carrier) == 0 {
		carrier = nil
	}
	return newSendCodeTask(p, carrier, opts...)
}

// traceOf returns ctx with the trace t's headers carry, as the remote
// parent of what starts in it.
func traceOf(ctx context.Context, t *asynq.Task) context.Context {
	if len(t.Headers()) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier(t.Headers()))
}

// Trace starts a consumer span per task, a child of the request's span
// that queued it (its headers), around the rest of the chain: the wait for
// a relay (Hold), the handler's Redis calls and its SMTP send are in it.
// The span names the queue, the task's ID and its retries, and at its end
// what became of the attempt (SendResult: outcome, relay, failure class);
// never the payload. Put it before Logging, so that every line of the task
// is logged in its span.
func Trace(tp trace.TracerProvider) asynq.MiddlewareFunc {
	tracer := tp.Tracer(TracerName)
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) (err error) {
			id, _ := asynq.GetTaskID(ctx)
			queue, _ := asynq.GetQueueName(ctx)
			retried, _ := asynq.GetRetryCount(ctx)
			ctx, span := tracer.Start(traceOf(ctx, t), "process "+t.Type(),
				trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(
					attribute.String("messaging.system", "asynq"),
					attribute.String("messaging.operation.type", "process"),
					attribute.String("messaging.destination.name", queue),
					attribute.String("messaging.message.id", id),
					AttrRetried.Int(retried),
				))
			ctx, res := withResult(ctx)
			defer func() {
				attrs := []attribute.KeyValue{AttrOutcome.String(string(res.Outcome))}
				if res.Relay != "" {
					attrs = append(attrs, AttrRelay.String(res.Relay))
				}
				if res.Failure != "" {
					attrs = append(attrs, AttrFailure.String(string(res.Failure)))
				}
				span.SetAttributes(attrs...)
				if err != nil {
					// The error's text may quote the relay's reply, which
					// can echo the address: the outcome says enough.
					span.SetStatus(codes.Error, "send "+string(res.Outcome))
				}
				span.End()
			}()
			return next.ProcessTask(ctx, t)
		})
	}
}
