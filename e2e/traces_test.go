//go:build traces

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/grpctest"
	"github.com/verifyq/verifyq/internal/redistest"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
)

// The tests tagged traces (make test-traces) run both binaries against a
// real OTLP receiver: Jaeger v2 (bin/jaeger, pinned in tools/jaeger), with
// in-memory storage, started by the test on free loopback ports; they read
// the traces back from Jaeger's query API.

// jaegerBin is the Jaeger binary: JAEGER_BIN, else bin/jaeger, which make
// test-traces builds first.
func jaegerBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("JAEGER_BIN")
	if bin == "" {
		bin = filepath.Join("..", "bin", "jaeger")
	}
	abs, err := filepath.Abs(bin)
	require.NoError(t, err)
	_, err = os.Stat(abs)
	require.NoError(t, err, "Jaeger is built by make test-traces (make bin/jaeger)")
	return abs
}

// jaeger is a running Jaeger: its OTLP receivers and its query API.
type jaeger struct {
	otlpGRPC, otlpHTTP, query string
}

// startJaeger runs Jaeger with a configuration of the test's own: the OTLP
// receivers, the query API and nothing else, on free loopback ports, and
// stops it when the test ends.
func startJaeger(t *testing.T) jaeger {
	t.Helper()
	var j jaeger
	p, err := retryBind(t, "jaeger", func(int) (*proc, error) {
		j = jaeger{otlpGRPC: freeAddr(t), otlpHTTP: freeAddr(t), query: freeAddr(t)}
		cfg := fmt.Sprintf(jaegerConfig, j.query, freeAddr(t), j.otlpGRPC, j.otlpHTTP)
		path := filepath.Join(t.TempDir(), "jaeger.yaml")
		require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
		cmd := exec.Command(jaegerBin(t), "--config", path)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
		p := run(t, cmd)
		return p, p.waitHTTP("http://"+j.query+"/api/services", 60*time.Second)
	})
	p.killAtEnd(t, "jaeger")
	require.NoError(t, err, "Jaeger's query API answers")
	return j
}

// jaegerConfig is Jaeger's configuration, with the addresses of its query
// API (HTTP, gRPC) and its OTLP receivers (gRPC, HTTP) to fill in.
const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: %q
    grpc:
      endpoint: %q
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %q
      http:
        endpoint: %q
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`

// jaegerTrace is a trace as Jaeger's query API (/api/traces/{id}) gives it.
type jaegerTrace struct {
	TraceID   string `json:"traceID"`
	Spans     []jaegerSpan
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	}
}

type jaegerSpan struct {
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	ProcessID     string `json:"processID"`
	Tags          []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	}
}

func (s jaegerSpan) tag(key string) (any, bool) {
	for _, kv := range s.Tags {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// trace reads the trace of id from Jaeger: its decoded form and its JSON as
// the API gave it.
func (j jaeger) trace(t *testing.T, id string) (jaegerTrace, string) {
	t.Helper()
	res, err := http.Get("http://" + j.query + "/api/traces/" + id)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	if res.StatusCode != http.StatusOK {
		return jaegerTrace{}, string(body)
	}
	var out struct{ Data []jaegerTrace }
	require.NoError(t, json.Unmarshal(body, &out), string(body))
	if len(out.Data) == 0 {
		return jaegerTrace{}, string(body)
	}
	return out.Data[0], string(body)
}

// allTraces is the JSON of every trace Jaeger holds of service.
func (j jaeger) allTraces(t *testing.T, service string) string {
	t.Helper()
	res, err := http.Get("http://" + j.query + "/api/traces?limit=1000&lookback=1h&service=" + service)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	return string(body)
}

// logLine is the first JSON line of logs whose msg is msg and whose email
// field is email (masked), decoded.
func logLine(t *testing.T, logs, msg, email string) map[string]any {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		if m["msg"] == msg && m["email"] == email {
			return m
		}
	}
	t.Fatalf("no %q line of %s in:\n%s", msg, email, logs)
	return nil
}

// A code asked for over HTTP and another over gRPC, each followed from
// the request to the SMTP send in one trace of both binaries' spans; the
// enqueuer exports over OTLP/HTTP, the worker over OTLP/gRPC. No span
// holds a code or an address, and the log lines of each request in both
// binaries carry its trace ID.
func TestTracesThroughTheWholePath(t *testing.T) {
	j := startJaeger(t)
	s := startStackOwn(t, redistest.Shared(t), map[string]string{
		"CODE_LENGTH":             longCodes,
		"OTEL_BSP_SCHEDULE_DELAY": "100", // export within 100 ms, not 5 s
	}, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + j.otlpHTTP, // http/protobuf, the default
	}, map[string]string{
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://" + j.otlpGRPC,
		"OTEL_EXPORTER_OTLP_PROTOCOL":        "grpc",
		"OTEL_RESOURCE_ATTRIBUTES":           "deployment.environment.name=test",
	})
	const viaHTTP, viaGRPC = "Http.Traced@Example.com", "Grpc.Traced@Example.com"

	status, body := s.post(t, "/v1/codes", map[string]string{"email": viaHTTP})
	require.Equal(t, http.StatusAccepted, status, body)
	conn := grpctest.Dial(t, s.grpc)
	_, err := verifyqv1.NewCodeServiceClient(conn).SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: viaGRPC})
	require.NoError(t, err)
	s.smtp.WaitMessages(t, 2, 10*time.Second)
	codes := map[string]string{}
	for _, email := range []string{viaHTTP, viaGRPC} {
		codes[email], _ = s.code(t, email)
	}
	// Stopping both flushes their spans (and the worker's last lines).
	s.worker.stop(t)
	s.enqueuer.stop(t)

	for _, c := range []struct{ email, line, server string }{
		{viaHTTP, "http request", "POST"},
		{viaGRPC, "grpc call", "verifyq.v1.CodeService/SendCode"},
	} {
		masked := c.email[:1] + "***@Example.com"
		enq := logLine(t, s.enqueuer.logs.String(), c.line, masked)
		wrk := logLine(t, s.worker.logs.String(), "code mailed", masked)
		id, _ := enq["trace_id"].(string)
		require.Len(t, id, 32, "the enqueuer's %q line carries a trace ID: %v", c.line, enq)
		assert.Len(t, enq["span_id"], 16, "and a span ID")
		assert.Equal(t, id, wrk["trace_id"], "the worker's line of the same send carries the same trace ID")

		var tr jaegerTrace
		var raw string
		require.Eventually(t, func() bool {
			tr, raw = j.trace(t, id)
			return hasSpan(tr, "smtp send") && hasSpan(tr, "process code:send") && hasSpan(tr, "enqueue code:send")
		}, 20*time.Second, 100*time.Millisecond, "the trace of %s in Jaeger", c.email)
		t.Logf("trace %s: %d spans", id, len(tr.Spans))
		services := map[string]bool{}
		for _, sp := range tr.Spans {
			services[tr.Processes[sp.ProcessID].ServiceName] = true
			t.Logf("  %s: %s", tr.Processes[sp.ProcessID].ServiceName, sp.OperationName)
		}
		assert.Equal(t, map[string]bool{"verifyq-enqueuer": true, "verifyq-worker": true}, services, "one trace, both services")
		byService := func(service, op string) []jaegerSpan {
			var out []jaegerSpan
			for _, sp := range tr.Spans {
				if tr.Processes[sp.ProcessID].ServiceName == service && strings.Contains(sp.OperationName, op) {
					out = append(out, sp)
				}
			}
			return out
		}
		server := byService("verifyq-enqueuer", c.server)
		if assert.NotEmpty(t, server, "the enqueuer's server span") {
			kind, _ := server[0].tag("span.kind")
			assert.Equal(t, "server", kind)
		}
		assert.NotEmpty(t, byService("verifyq-enqueuer", "enqueue code:send"), "the enqueue")
		assert.NotEmpty(t, redisSpans(byService("verifyq-enqueuer", "")), "the enqueuer's Redis calls")
		assert.NotEmpty(t, byService("verifyq-worker", "process code:send"), "the task")
		assert.NotEmpty(t, redisSpans(byService("verifyq-worker", "")), "the worker's Redis calls")
		if smtp := byService("verifyq-worker", "smtp send"); assert.Len(t, smtp, 1, "one SMTP send") {
			relay, _ := smtp[0].tag("verifyq.relay")
			assert.Equal(t, "primary", relay)
		}
		task := byService("verifyq-worker", "process code:send")
		if len(task) > 0 {
			outcome, _ := task[0].tag("verifyq.send.outcome")
			assert.Equal(t, "sent", outcome)
		}
		assert.NotContains(t, raw, c.email, "no address in the trace")
		assert.NotContains(t, strings.ToLower(raw), strings.ToLower(c.email), "no address in the trace, in any case")
		assert.NotContains(t, raw, codes[c.email], "no code in the trace")
	}
	// And in no span of either service at all.
	for _, service := range []string{"verifyq-enqueuer", "verifyq-worker"} {
		all := j.allTraces(t, service)
		for email, code := range codes {
			assert.NotContains(t, strings.ToLower(all), strings.ToLower(email), "no address in %s's spans", service)
			assert.NotContains(t, all, code, "no code in %s's spans", service)
		}
	}
	assert.Contains(t, j.allTraces(t, "verifyq-worker"), "deployment.environment.name", "OTEL_RESOURCE_ATTRIBUTES is read")
}

func hasSpan(tr jaegerTrace, op string) bool {
	for _, sp := range tr.Spans {
		if sp.OperationName == op {
			return true
		}
	}
	return false
}

func redisSpans(spans []jaegerSpan) []jaegerSpan {
	var out []jaegerSpan
	for _, sp := range spans {
		if v, _ := sp.tag("db.system"); v == "redis" {
			out = append(out, sp)
		}
	}
	return out
}

// With no OTEL_* endpoint, nothing is exported: nothing connects to the
// OTLP ports an SDK would default to (4317 for gRPC, 4318 for HTTP), though
// other OTEL_* variables are set, and no log line carries a trace ID.
func TestTracesOffWithoutAnEndpoint(t *testing.T) {
	var connects atomic.Int32
	for _, addr := range []string{"127.0.0.1:4317", "127.0.0.1:4318", "[::1]:4317", "[::1]:4318"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil && strings.HasPrefix(addr, "[") {
			continue // no IPv6 loopback here
		}
		require.NoError(t, err, "the default OTLP port %s must be free for this test", addr)
		t.Cleanup(func() { _ = ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				connects.Add(1)
				_ = c.Close()
			}
		}()
	}
	s := startStack(t, map[string]string{
		"OTEL_SERVICE_NAME":       "verifyq-off",
		"OTEL_BSP_SCHEDULE_DELAY": "100",
		"OTEL_TRACES_SAMPLER":     "always_on",
	})
	const email = "Untraced@Example.com"
	status, body := s.post(t, "/v1/codes", map[string]string{"email": email})
	require.Equal(t, http.StatusAccepted, status, body)
	s.smtp.WaitMessages(t, 1, 10*time.Second)
	s.worker.stop(t)
	s.enqueuer.stop(t)
	assert.Zero(t, connects.Load(), "no connection to an OTLP port")
	for _, p := range []*proc{s.enqueuer, s.worker} {
		assert.NotContains(t, p.logs.String(), `"trace_id"`)
		assert.NotContains(t, p.logs.String(), "tracing on")
	}
}
