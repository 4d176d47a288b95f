package relay_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/relay"
)

// With a TracerProvider each Send is a client span naming the relay, with
// an event per stage; a refused one names the stage and the reply's codes.
// Neither holds the recipient, the code or the reply's text (which echoes
// the address). Without one, Send makes no span.
func TestSendSpans(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	srv := smtptest.Start(t)
	c := newClient(t, srv, func(cfg *relay.Config) { cfg.Name, cfg.TracerProvider = "primary", tp }, nil)

	require.NoError(t, sendTo(t, c, testTo))
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, EnhancedCode: [3]int{5, 1, 1},
		Message: "<" + testTo + ">: Recipient address rejected"})
	require.Error(t, sendTo(t, c, testTo))

	spans := rec.Ended()
	require.Len(t, spans, 2)
	for _, s := range spans {
		assert.Equal(t, relay.SpanSend, s.Name())
		assert.Equal(t, trace.SpanKindClient, s.SpanKind())
		attrs := map[string]string{}
		for _, kv := range s.Attributes() {
			attrs[string(kv.Key)] = kv.Value.String()
		}
		assert.Equal(t, "primary", attrs["verifyq.relay"])
		all := s.Status().Description + " " + strings.Join(mapValues(attrs), " ")
		var events []string
		for _, e := range s.Events() {
			events = append(events, e.Name)
			for _, kv := range e.Attributes {
				all += " " + kv.Value.String()
			}
		}
		assert.Contains(t, events, "mail")
		assert.Contains(t, events, "rcpt")
		for _, secret := range []string{testTo, strings.Split(testTo, "@")[0], testCode, "Recipient address rejected"} {
			assert.NotContains(t, all, secret)
		}
	}
	ok, refused := spans[0], spans[1]
	assert.Equal(t, codes.Unset, ok.Status().Code)
	assert.Contains(t, eventNames(ok), "data-end")
	assert.Contains(t, eventNames(ok), "connect", "a new connection")
	assert.Equal(t, codes.Error, refused.Status().Code)
	attrs := map[string]any{}
	for _, kv := range refused.Attributes() {
		attrs[string(kv.Key)] = kv.Value.AsInterface()
	}
	assert.Equal(t, "rcpt", attrs["smtp.stage"])
	assert.Equal(t, int64(550), attrs["smtp.reply_code"])
	assert.Equal(t, "5.1.1", attrs["smtp.enhanced_code"])
	// The server offers PIPELINING: DATA went out with RCPT, the message
	// never did.
	assert.Equal(t, []string{"mail", "rcpt", "data"}, eventNames(refused)[len(eventNames(refused))-3:])
	assert.NotContains(t, eventNames(refused), "data-end")

	plain := newClient(t, srv, nil, nil)
	srv.ClearFault()
	require.NoError(t, sendTo(t, plain, testTo))
	assert.Len(t, rec.Ended(), 2, "no span without a TracerProvider")
}

func eventNames(s sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, e := range s.Events() {
		out = append(out, e.Name)
	}
	return out
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
