// Package tracing sets up and shuts down OpenTelemetry tracing for both
// binaries from the standard OTEL_* variables alone, and instruments the
// libraries verifyq serves and calls through (net/http, gRPC, go-redis).
//
// Tracing is on only when an OTLP endpoint is set
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and
// neither OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none turns it
// off. Off, Start installs nothing: no SDK, no exporter, and a nil
// Provider, which tells every caller to install no instrumentation.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// Service names of the two binaries, the default of OTEL_SERVICE_NAME.
const (
	ServiceEnqueuer = "verifyq-enqueuer"
	ServiceWorker   = "verifyq-worker"
)

// Protocols of OTEL_EXPORTER_OTLP_PROTOCOL that verifyq exports with.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf" // the specification's default
)

// Propagator carries a trace across processes: W3C Trace Context
// (traceparent, tracestate), in HTTP and gRPC requests and in the task's
// headers. Baggage is not carried: verifyq reads none.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Settings is what the OTEL_* variables say about verifyq's traces.
type Settings struct {
	// Enabled: an endpoint is set and nothing turns tracing off.
	Enabled bool
	// Protocol is ProtocolGRPC or ProtocolHTTP.
	Protocol string
	// Off says why tracing is off, for the start's log line.
	Off string
}

// Read reads the settings from getenv (os.Getenv). A value verifyq cannot
// honour is an error naming its variable.
func Read(getenv func(string) string) (Settings, error) {
	get := func(k string) string { return strings.TrimSpace(getenv(k)) }
	if strings.EqualFold(get("OTEL_SDK_DISABLED"), "true") {
		return Settings{Off: "OTEL_SDK_DISABLED=true"}, nil
	}
	switch exp := strings.ToLower(get("OTEL_TRACES_EXPORTER")); exp {
	case "", "otlp":
	case "none":
		return Settings{Off: "OTEL_TRACES_EXPORTER=none"}, nil
	default:
		return Settings{}, fmt.Errorf("OTEL_TRACES_EXPORTER: %q: verifyq exports traces with otlp, or none", exp)
	}
	if get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" && get("OTEL_EXPORTER_OTLP_ENDPOINT") == "" {
		return Settings{Off: "no OTEL_EXPORTER_OTLP_ENDPOINT"}, nil
	}
	name, proto := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		name, proto = "OTEL_EXPORTER_OTLP_PROTOCOL", get("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch proto {
	case "":
		proto = ProtocolHTTP
	case ProtocolGRPC, ProtocolHTTP:
	default:
		return Settings{}, fmt.Errorf("%s: %q: want %s or %s", name, proto, ProtocolGRPC, ProtocolHTTP)
	}
	return Settings{Enabled: true, Protocol: proto}, nil
}

// Tracing is a process's tracing: on (an SDK exporting spans) or off.
type Tracing struct {
	settings Settings
	tp       *sdktrace.TracerProvider
}

// Start sets up tracing from the OTEL_* variables for service, the
// default service name (OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
// override it). On, it installs the SDK's provider and the Trace Context
// propagator as otel's globals, and routes the SDK's errors (a failed
// export) to logger. It never waits for the collector: spans are batched
// and exported in the background, and dropped when the batch queue is
// full (OTEL_BSP_* tune it).
func Start(ctx context.Context, service string, logger *slog.Logger) (*Tracing, error) {
	s, err := Read(os.Getenv)
	if err != nil || !s.Enabled {
		return &Tracing{settings: s}, err
	}
	var exp sdktrace.SpanExporter
	switch s.Protocol {
	case ProtocolGRPC:
		exp, err = otlptracegrpc.New(ctx)
	default:
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	// Later detectors win: the binary's name, then what OTEL_SERVICE_NAME
	// and OTEL_RESOURCE_ATTRIBUTES say.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithAttributes(semconv.ServiceName(service)),
		resource.WithFromEnv(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("tracing: OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	// The sampler is OTEL_TRACES_SAMPLER's (the SDK reads it), by default
	// parent-based always-on.
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(Propagator)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn("tracing: "+err.Error(), "component", "otel")
	}))
	return &Tracing{settings: s, tp: tp}, nil
}

// Enabled reports whether spans are exported.
func (t *Tracing) Enabled() bool { return t.tp != nil }

// Settings are the settings Start read.
func (t *Tracing) Settings() Settings { return t.settings }

// Provider is the tracer provider to instrument with; nil when tracing is
// off, which means: instrument nothing.
func (t *Tracing) Provider() trace.TracerProvider {
	if t.tp == nil {
		return nil
	}
	return t.tp
}

// Shutdown exports the spans still queued and stops the exporter, within
// ctx (the binary's SHUTDOWN_TIMEOUT). Off, it does nothing.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.tp == nil {
		return nil
	}
	if err := t.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: flush at shutdown: %w", err)
	}
	return nil
}
