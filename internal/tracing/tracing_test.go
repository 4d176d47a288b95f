package tracing_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/verifyq/verifyq/internal/logtest"
	"github.com/verifyq/verifyq/internal/tracing"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestRead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		env     map[string]string
		on      bool
		proto   string
		errPart string
	}{
		{name: "nothing set: off", env: nil},
		{name: "a service name alone: off", env: map[string]string{"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}},
		{name: "an endpoint: on, http/protobuf", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, on: true, proto: tracing.ProtocolHTTP},
		{name: "a traces endpoint: on", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, on: true, proto: tracing.ProtocolHTTP},
		{name: "grpc", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, on: true, proto: tracing.ProtocolGRPC},
		{name: "the traces protocol wins", env: map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
		}, on: true, proto: tracing.ProtocolGRPC},
		{name: "exporter otlp", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_TRACES_EXPORTER": "otlp"}, on: true, proto: tracing.ProtocolHTTP},
		{name: "exporter none: off", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_TRACES_EXPORTER": "none"}},
		{name: "SDK disabled: off", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_SDK_DISABLED": "TRUE"}},
		{name: "SDK disabled false: on", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_SDK_DISABLED": "false"}, on: true, proto: tracing.ProtocolHTTP},
		{name: "an exporter verifyq lacks", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_TRACES_EXPORTER": "zipkin"}, errPart: "OTEL_TRACES_EXPORTER"},
		{name: "http/json", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, errPart: "OTEL_EXPORTER_OTLP_PROTOCOL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := tracing.Read(env(tc.env))
			if tc.errPart != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.errPart)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.on, s.Enabled)
			assert.Equal(t, tc.proto, s.Protocol)
			if !tc.on {
				assert.NotEmpty(t, s.Off, "says why it is off")
			}
		})
	}
}

// Off, Start installs nothing: no provider to instrument with, and otel's
// global provider stays the no-op one.
func TestStartOffInstallsNothing(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER"} {
		t.Setenv(k, "")
	}
	before := otel.GetTracerProvider()
	tr, err := tracing.Start(context.Background(), tracing.ServiceWorker, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	assert.False(t, tr.Enabled())
	assert.Nil(t, tr.Provider())
	assert.Same(t, before, otel.GetTracerProvider())
	_, isSDK := otel.GetTracerProvider().(*sdktrace.TracerProvider)
	assert.False(t, isSDK)
	_, span := otel.Tracer("t").Start(context.Background(), "x")
	assert.False(t, span.SpanContext().IsValid(), "the global tracer makes no spans")
	require.NoError(t, tr.Shutdown(context.Background()))
	logger := slog.New(slog.DiscardHandler)
	assert.Same(t, logger, tr.Logger(logger), "no log wrapper")
}

// receiver is an OTLP/HTTP receiver of traces in the test.
type receiver struct {
	mu   sync.Mutex
	reqs []*collectortrace.ExportTraceServiceRequest
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	m := &collectortrace.ExportTraceServiceRequest{}
	if err == nil {
		err = proto.Unmarshal(body, m)
	}
	if err != nil || req.URL.Path != "/v1/traces" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, m)
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	b, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	_, _ = w.Write(b)
}

// spans returns each span's name with its resource's service name.
func (r *receiver) spans() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]string{}
	for _, req := range r.reqs {
		for _, rs := range req.GetResourceSpans() {
			service := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					service = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, sp := range ss.GetSpans() {
					out[sp.GetName()] = service
				}
			}
		}
	}
	return out
}

// On, Start exports over OTLP/HTTP to the endpoint, under the binary's
// service name unless OTEL_SERVICE_NAME says another, and Shutdown
// flushes the spans still queued.
func TestStartExportsAndShutdownFlushes(t *testing.T) {
	for _, tc := range []struct{ serviceEnv, want string }{
		{"", tracing.ServiceEnqueuer},
		{"gateway-verifyq", "gateway-verifyq"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			rec := &receiver{}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "")
			t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
			t.Setenv("OTEL_SERVICE_NAME", tc.serviceEnv)
			t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000") // only Shutdown exports
			tr, err := tracing.Start(context.Background(), tracing.ServiceEnqueuer, slog.New(slog.DiscardHandler))
			require.NoError(t, err)
			require.True(t, tr.Enabled())
			_, span := tr.Provider().Tracer("t").Start(context.Background(), "one")
			span.End()
			assert.Empty(t, rec.spans(), "batched, not sent yet")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, tr.Shutdown(ctx))
			assert.Equal(t, map[string]string{"one": tc.want}, rec.spans())
		})
	}
}

// ChildrenOnly's tracers make spans only under a span of the process.
func TestChildrenOnly(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tracer := tracing.ChildrenOnly(tp).Tracer("redis")

	ctx, span := tracer.Start(context.Background(), "poll")
	span.End()
	assert.False(t, span.SpanContext().IsValid(), "no span without a parent")
	assert.Equal(t, context.Background(), ctx)

	parent, root := tp.Tracer("t").Start(context.Background(), "request")
	_, child := tracer.Start(parent, "get")
	child.End()
	root.End()
	names := []string{}
	for _, s := range rec.Ended() {
		names = append(names, s.Name())
	}
	assert.Equal(t, []string{"get", "request"}, names)
	assert.Equal(t, root.SpanContext().TraceID(), child.SpanContext().TraceID())
}

// Every line logged with a span in its context carries the span's trace and
// span ID; a line without one carries neither.
func TestLogHandler(t *testing.T) {
	t.Parallel()
	base, buf := logtest.New(t)
	logger := slog.New(tracing.LogHandler(base.Handler())).With("task_id", "t1")
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(context.Background(), "request")
	defer span.End()

	logger.InfoContext(ctx, "in the span", "n", 1)
	logger.Info("outside")
	logger.InfoContext(trace.ContextWithRemoteSpanContext(context.Background(), span.SpanContext()), "remote parent")

	lines := buf.Lines(t)
	require.Len(t, lines, 3)
	assert.Equal(t, span.SpanContext().TraceID().String(), lines[0][tracing.TraceIDKey])
	assert.Equal(t, span.SpanContext().SpanID().String(), lines[0][tracing.SpanIDKey])
	assert.Equal(t, "t1", lines[0]["task_id"], "the logger's own fields stay")
	assert.InDelta(t, 1, lines[0]["n"], 0)
	assert.NotContains(t, lines[1], tracing.TraceIDKey)
	assert.NotContains(t, lines[1], tracing.SpanIDKey)
	assert.Equal(t, span.SpanContext().TraceID().String(), lines[2][tracing.TraceIDKey])
}
