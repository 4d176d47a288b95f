package tasks_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/verifyq/verifyq/tasks"
)

// A task made in a span carries its trace in its headers and nothing else;
// the worker's span of it (Trace) is that span's child, a consumer span
// that holds the queue and the task's ID but nothing of the payload. A task
// made outside a span has no headers, and its span starts a trace.
func TestTraceCarriesTheRequestsTrace(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	p := tasks.SendCodePayload{Email: "Someone@Example.com", Locale: "en", RequestedAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute)}

	ctx, producer := tp.Tracer("t").Start(context.Background(), "enqueue")
	task, err := tasks.NewSendCodeTaskFrom(ctx, p)
	require.NoError(t, err)
	producer.End()
	require.Len(t, task.Headers(), 1, "traceparent only")
	assert.Contains(t, task.Headers(), "traceparent")

	untraced, err := tasks.NewSendCodeTaskFrom(context.Background(), p)
	require.NoError(t, err)
	assert.Empty(t, untraced.Headers())

	failed := errors.New("smtp rcpt: server replied 550 5.1.1 Someone@Example.com")
	var inner []trace.SpanContext
	h := tasks.Trace(tp)(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		inner = append(inner, trace.SpanContextFromContext(ctx))
		return failed
	}))
	require.ErrorIs(t, h.ProcessTask(context.Background(), task), failed)
	require.ErrorIs(t, h.ProcessTask(context.Background(), untraced), failed)

	ended := rec.Ended()
	require.Len(t, ended, 3)
	consumer, root := ended[1], ended[2]
	assert.Equal(t, "process code:send", consumer.Name())
	assert.Equal(t, trace.SpanKindConsumer, consumer.SpanKind())
	assert.Equal(t, producer.SpanContext().TraceID(), consumer.SpanContext().TraceID(), "one trace")
	assert.Equal(t, producer.SpanContext().SpanID(), consumer.Parent().SpanID(), "the enqueue's child")
	assert.Equal(t, consumer.SpanContext(), inner[0], "the handler runs in the task's span")
	assert.Equal(t, codes.Error, consumer.Status().Code)
	assert.NotContains(t, consumer.Status().Description, "Someone", "the error's text is not in the span")
	for _, kv := range consumer.Attributes() {
		assert.NotContains(t, kv.Value.String(), "Someone", "attribute %s", kv.Key)
	}
	assert.NotEqual(t, producer.SpanContext().TraceID(), root.SpanContext().TraceID(), "a task without headers starts a trace")
	assert.False(t, root.Parent().IsValid())
}
