package tracing

import (
	"context"
	"net/http"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/stats"
)

// HTTP returns h with a server span per request (otelhttp), continuing the
// caller's trace from its traceparent header. The span, named by the
// method and the path, holds the method,
// the path, the status and the peer, never the query or a header's value:
// the caller must hand it paths that name no one (httpapi.KnownPaths).
func HTTP(h http.Handler, tp trace.TracerProvider) http.Handler {
	return otelhttp.NewHandler(h, "http",
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(Propagator),
		otelhttp.WithMeterProvider(noop.NewMeterProvider()), // Prometheus counts requests
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Path }),
	)
}

// GRPC returns the stats handler that makes a server span per call
// (otelgrpc), continuing the caller's trace from its traceparent metadata;
// health checks and reflection make none. The span holds the method, the
// status and the peer, never a message.
func GRPC(tp trace.TracerProvider) stats.Handler {
	return otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithPropagators(Propagator),
		otelgrpc.WithMeterProvider(noop.NewMeterProvider()),
		otelgrpc.WithFilter(filters.None(filters.HealthCheck(), filters.ServicePrefix("grpc.reflection."))),
	)
}

// Redis adds go-redis's tracing hooks (redisotel) to rdb: a client span per
// command, pipeline and new connection, made only inside a span of the
// process (ChildrenOnly), so that the queue's polling, heartbeats and
// metrics, which run outside any request or task, make none. The command's
// arguments are never recorded: they hold codes and addresses.
func Redis(rdb redis.UniversalClient, tp trace.TracerProvider) error {
	return redisotel.InstrumentTracing(rdb,
		redisotel.WithTracerProvider(ChildrenOnly(tp)),
		redisotel.WithDBStatement(false),
		redisotel.WithCallerEnabled(false),
	)
}

// ChildrenOnly returns a provider whose tracers start a span only under a
// span already in the context (the caller's request, the task), and
// otherwise start none: they return the context as it is and a span that
// records nothing.
func ChildrenOnly(tp trace.TracerProvider) trace.TracerProvider {
	return childrenOnly{TracerProvider: tp}
}

// childrenOnly embeds the interface, which embeds otel's
// embedded.TracerProvider as the API asks of its implementations.
type childrenOnly struct {
	trace.TracerProvider
}

func (c childrenOnly) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return childTracer{Tracer: c.TracerProvider.Tracer(name, opts...)}
}

type childTracer struct {
	trace.Tracer
}

func (c childTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, trace.SpanFromContext(ctx)
	}
	return c.Tracer.Start(ctx, name, opts...)
}

// Tracer is tp's tracer named name, or nil when tp is nil (tracing off).
func Tracer(tp trace.TracerProvider, name string) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(name)
}
