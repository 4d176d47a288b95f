package relay

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// TracerName names the tracer of the relay's spans.
const TracerName = "github.com/verifyq/verifyq/relay"

// SpanSend is the name of a Send's span.
const SpanSend = "smtp send"

// Attributes of a Send's span besides server.address and server.port (the
// relay's, never the recipient's).
const (
	AttrRelay     = attribute.Key("verifyq.relay")      // Config.Name
	AttrStage     = attribute.Key("smtp.stage")         // the failing Stage
	AttrReplyCode = attribute.Key("smtp.reply_code")    // the failing reply's code, e.g. 550
	AttrEnhanced  = attribute.Key("smtp.enhanced_code") // its RFC 3463 code, e.g. "5.1.1"
	AttrReused    = attribute.Key("smtp.connection.reused")
	AttrTLS       = attribute.Key("smtp.tls")
)

// startSpan starts a Send's span.
func (c *Client) startSpan(ctx context.Context) (context.Context, trace.Span) {
	return c.tracer.Start(ctx, SpanSend,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			AttrRelay.String(c.cfg.Name),
			attribute.String("server.address", c.cfg.Host),
			attribute.Int("server.port", c.cfg.Port),
		))
}

// endSpan ends a Send's span with err's stage and reply codes. The
// status's description is Error.Error, which never holds the reply's text.
func endSpan(span trace.Span, err error) {
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			span.SetAttributes(AttrStage.String(string(e.Stage)))
			if e.Code != 0 {
				span.SetAttributes(AttrReplyCode.Int(e.Code))
			}
			if e.Enhanced != "" {
				span.SetAttributes(AttrEnhanced.String(e.Enhanced))
			}
		}
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// stage marks the start of stage in the Send's span, as an event.
func (c *Client) stage(ctx context.Context, stage Stage) {
	if c.tracer != nil {
		trace.SpanFromContext(ctx).AddEvent(string(stage))
	}
}

// connected marks in the Send's span that a connection was had, pooled or
// new.
func (c *Client) connected(ctx context.Context, reused, tls bool) {
	if c.tracer != nil {
		trace.SpanFromContext(ctx).AddEvent("connection", trace.WithAttributes(AttrReused.Bool(reused), AttrTLS.Bool(tls)))
	}
}
