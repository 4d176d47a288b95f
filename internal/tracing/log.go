package tracing

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// Keys of the fields LogHandler adds to a line.
const (
	TraceIDKey = "trace_id"
	SpanIDKey  = "span_id"
)

// LogHandler returns h with the trace and span ID of the span in a log
// call's context added to its line (as trace_id and span_id), so that the
// lines of a request and of a task can be found from its trace and the
// other way round. A line logged without a span in its context (Info, not
// InfoContext) is as h writes it.
func LogHandler(h slog.Handler) slog.Handler { return logHandler{h} }

type logHandler struct{ slog.Handler }

func (l logHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String(TraceIDKey, sc.TraceID().String()), slog.String(SpanIDKey, sc.SpanID().String()))
	}
	return l.Handler.Handle(ctx, r)
}

func (l logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return logHandler{l.Handler.WithAttrs(attrs)}
}

func (l logHandler) WithGroup(name string) slog.Handler {
	return logHandler{l.Handler.WithGroup(name)}
}

// Logger returns logger with LogHandler when t is on, else logger itself.
func (t *Tracing) Logger(logger *slog.Logger) *slog.Logger {
	if !t.Enabled() {
		return logger
	}
	return slog.New(LogHandler(logger.Handler()))
}
