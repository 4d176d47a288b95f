package outcome_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/verifyq/verifyq/auth"
	vqcodes "github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/grpcapi"
	"github.com/verifyq/verifyq/httpapi"
	"github.com/verifyq/verifyq/internal/grpctest"
	"github.com/verifyq/verifyq/internal/logtest"
	"github.com/verifyq/verifyq/internal/servicetest"
	"github.com/verifyq/verifyq/outcome"
	messagepb "github.com/verifyq/verifyq/proto/message"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
	"github.com/verifyq/verifyq/service"
)

// errorFor is an error the service returns for o.
func errorFor(o *outcome.Outcome) error {
	switch o {
	case outcome.OK:
		return nil
	case outcome.Undeliverable:
		return fmt.Errorf("send: %w", &delivery.SuppressedError{For: time.Hour})
	case outcome.RateLimited:
		return fmt.Errorf("send: %w", &service.RateLimitError{Limit: "cooldown", RetryAfter: 2500 * time.Millisecond})
	case outcome.Unavailable:
		return fmt.Errorf("%w: dial tcp 127.0.0.1:6379: connection refused", service.ErrUnavailable)
	case outcome.Internal:
		return errors.New("template: a bug")
	case outcome.Canceled, outcome.DeadlineExceeded:
		return fmt.Errorf("%w: %w", service.ErrUnavailable, o.Err)
	case outcome.PermissionDenied:
		return &auth.ScopeError{Scope: auth.Status}
	}
	return fmt.Errorf("wrapped: %w", o.Err)
}

func TestOf(t *testing.T) {
	t.Parallel()
	for _, o := range outcome.All() {
		if o.HTTPOnly || o.LegacyOnly {
			continue // never an error's outcome
		}
		assert.Same(t, o, outcome.Of(context.Background(), errorFor(o)), o.Name)
	}
	// A request whose context ended: a Redis error is the context's outcome.
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	assert.Same(t, outcome.Canceled, outcome.Of(canceled, errorFor(outcome.Unavailable)))
	assert.Same(t, outcome.NotFound, outcome.Of(canceled, service.ErrNotFound), "a domain outcome stays itself")
}

func TestTableIsConsistent(t *testing.T) {
	t.Parallel()
	names := map[string]bool{}
	for _, o := range outcome.All() {
		assert.False(t, names[o.Name], "name %q once", o.Name)
		names[o.Name] = true
		assert.Contains(t, outcome.Metrics(), o.Metric)
		if o.LegacyOnly {
			assert.Zero(t, o.HTTPStatus, "%s: no HTTP status", o.Name)
			continue
		}
		if o != outcome.OK {
			assert.NotEmpty(t, o.Message, o.Name)
			assert.GreaterOrEqual(t, o.HTTPStatus, 400, o.Name)
		}
		if !o.HTTPOnly && o != outcome.OK {
			assert.NotEqual(t, codes.OK, o.GRPCCode, o.Name)
		}
		if !o.HTTPOnly && !o.Access && o != outcome.OK {
			assert.NotEqual(t, outcome.LegacySuccess, o.Legacy, o.Name)
		}
		if o.Access {
			assert.Zero(t, o.Legacy, "%s: answered by its status on the old service", o.Name)
			assert.NotEmpty(t, o.Reason, o.Name)
		}
	}
	// The old service's numbers never change.
	assert.Equal(t, []int32{0, 1, 2}, []int32{outcome.LegacySuccess, outcome.LegacyRedisErr, outcome.LegacyException})
	assert.Equal(t, int64(3), outcome.Seconds(2001*time.Millisecond), "rounded up")
	assert.Equal(t, int64(0), outcome.Seconds(-time.Second))
}

// edges serves one fake service over HTTP and gRPC; the fake fails with
// whatever err holds.
type edges struct {
	mu      sync.Mutex
	err     error
	http    *httptest.Server
	v1      verifyqv1.CodeServiceClient
	legacy  messagepb.VarifyServiceClient
	obs     *servicetest.Observer
	logs    *logtest.Buffer
	grpcSrv *grpcapi.Server
	calls   atomic.Int64 // calls of the service
}

func (e *edges) fail(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.err = err
}

func startEdges(t *testing.T, guard *auth.Guard) *edges {
	t.Helper()
	e := &edges{obs: &servicetest.Observer{}}
	current := func() error {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.err
	}
	fake := servicetest.Fake{
		Send: func(context.Context, service.SendRequest) (service.Sent, error) {
			e.calls.Add(1)
			return service.Sent{ExpiresIn: time.Minute}, current()
		},
		Verify: func(context.Context, service.VerifyRequest) error { e.calls.Add(1); return current() },
		StatusOf: func(context.Context, vqcodes.ID) (delivery.Status, error) {
			e.calls.Add(1)
			return delivery.Status{State: delivery.StateSent}, current()
		},
	}
	logger, logs := logtest.New(t)
	e.logs = logs
	e.http = httptest.NewServer(httpapi.NewHandler(fake, logger, httpapi.Config{Metrics: e.obs, Guard: guard}))
	t.Cleanup(e.http.Close)

	e.grpcSrv = grpcapi.New(fake, logger, grpcapi.Config{Metrics: e.obs, Guard: guard})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = e.grpcSrv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.grpcSrv.Shutdown(ctx)
	})
	conn := grpctest.Dial(t, ln.Addr().String())
	e.v1 = verifyqv1.NewCodeServiceClient(conn)
	e.legacy = messagepb.NewVarifyServiceClient(conn)
	return e
}

// lastLine is the last log line of the edge's request.
func (e *edges) lastLine(t *testing.T, msg string) map[string]any {
	t.Helper()
	lines := e.logs.Matching(t, msg)
	require.NotEmpty(t, lines)
	return lines[len(lines)-1]
}

func (e *edges) post(t *testing.T, path, contentType, body string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.http.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", contentType)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	var m map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&m))
	return res, m
}

func reasonOf(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// Every outcome of the table, answered by each edge as the table says:
// HTTP status, error code and message; v1 status, reason and message; the
// legacy number; the metric label; the log line's outcome and level.
func TestEveryEdgeAnswersAsTheTableSays(t *testing.T) {
	t.Parallel()
	e := startEdges(t, nil)
	ctx := context.Background()
	for _, o := range outcome.All() {
		if o.HTTPOnly || o.LegacyOnly || o.Access {
			continue // TestHTTPTransportOutcomes; grpcapi's TestGRPCLegacyResendIsCoalesced; TestAccessOutcomesOnEveryEdge
		}
		err := errorFor(o)
		e.fail(err)

		for path, reqBody := range map[string]string{
			"/v1/codes":        `{"email":"a@example.com"}`,
			"/v1/codes/verify": `{"email":"a@example.com","code":"123456"}`,
		} {
			res, body := e.post(t, path, "application/json", reqBody)
			want := o.HTTPStatus
			if o == outcome.OK && path == "/v1/codes" {
				want = http.StatusAccepted
			}
			assert.Equal(t, want, res.StatusCode, "%s %s", o.Name, path)
			if o != outcome.OK {
				assert.Equal(t, map[string]any{"error": map[string]any{"code": o.Name, "message": o.Text(err)}}, body, "%s %s", o.Name, path)
			}
			if o == outcome.RateLimited {
				assert.Equal(t, "3", res.Header.Get("Retry-After"))
			}
			assert.Equal(t, o.Metric, e.obs.Take(t).Outcome, "%s %s metric", o.Name, path)
			line := e.lastLine(t, "http request")
			assert.Equal(t, o.Name, line["outcome"], "%s %s", o.Name, path)
			assert.Equal(t, o.Level.String(), line["level"], "%s %s", o.Name, path)
		}

		v1Calls := []func() error{
			func() error {
				_, err := e.v1.SendCode(ctx, &verifyqv1.SendCodeRequest{Email: "a@example.com"})
				return err
			},
			func() error {
				_, err := e.v1.VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: "a@example.com", Code: "123456"})
				return err
			},
		}
		for _, call := range v1Calls {
			st := status.Convert(call())
			assert.Equal(t, o.GRPCCode, st.Code(), "%s v1", o.Name)
			if o != outcome.OK {
				assert.Equal(t, o.Text(err), st.Message(), "%s v1", o.Name)
			}
			assert.Equal(t, o.Reason, reasonOf(st), "%s v1", o.Name)
			assert.Equal(t, o.Metric, e.obs.Take(t).Outcome, "%s v1 metric", o.Name)
			line := e.lastLine(t, "grpc call")
			assert.Equal(t, o.Name, line["outcome"], "%s v1", o.Name)
			assert.Equal(t, o.Level.String(), line["level"], "%s v1", o.Name)
		}

		rsp, lerr := e.legacy.GetVarifyCode(ctx, &messagepb.GetVarifyReq{Email: "a@example.com"})
		require.NoError(t, lerr, "%s legacy: always an OK status", o.Name)
		assert.Equal(t, o.Legacy, rsp.GetError(), "%s legacy", o.Name)
		assert.Empty(t, rsp.GetCode(), "never the code")
		assert.Equal(t, o.Metric, e.obs.Take(t).Outcome, "%s legacy metric", o.Name)
		assert.Equal(t, o.Name, e.lastLine(t, "grpc call")["outcome"], "%s legacy", o.Name)
	}
}

// The outcomes of the caller check, on every edge, from the requests that
// cause them: the table's status, reason and message, the caller's name in
// the metrics and the log line (never the key), and the service never
// called.
func TestAccessOutcomesOnEveryEdge(t *testing.T) {
	t.Parallel()
	key, line, err := auth.NewKey("gateway", "send,verify")
	require.NoError(t, err)
	keys, err := auth.Parse(strings.NewReader(line))
	require.NoError(t, err)
	e := startEdges(t, auth.New(auth.Config{Keys: keys})) // no LEGACY_CALLERS
	ctx := context.Background()
	withKey := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	wrongKey := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer vq_not-a-key")

	tests := []struct {
		o      *outcome.Outcome
		caller string
		http   func() *http.Response
		grpc   func() error
	}{
		{outcome.Unauthenticated, "", func() *http.Response {
			return e.do(t, http.MethodPost, "/v1/codes", "", `{"email":"a@example.com"}`)
		}, func() error {
			_, err := e.v1.SendCode(ctx, &verifyqv1.SendCodeRequest{Email: "a@example.com"})
			return err
		}},
		{outcome.Unauthenticated, "", func() *http.Response {
			return e.do(t, http.MethodPost, "/v1/codes/verify", "Bearer vq_not-a-key", `{"email":"a@example.com","code":"1"}`)
		}, func() error {
			_, err := e.v1.VerifyCode(wrongKey, &verifyqv1.VerifyCodeRequest{Email: "a@example.com", Code: "1"})
			return err
		}},
		{outcome.Unauthenticated, "", func() *http.Response {
			return e.do(t, http.MethodGet, "/v1/codes/status?email=a@example.com", key, "") // no scheme
		}, func() error {
			_, err := e.legacy.GetVarifyCode(ctx, &messagepb.GetVarifyReq{Email: "a@example.com"})
			return err
		}},
		{outcome.PermissionDenied, "gateway", func() *http.Response {
			return e.do(t, http.MethodGet, "/v1/codes/status?email=a@example.com", "Bearer "+key, "")
		}, func() error {
			_, err := e.v1.GetStatus(withKey, &verifyqv1.GetStatusRequest{Email: "a@example.com"})
			return err
		}},
	}
	for i, tt := range tests {
		res := tt.http()
		var body map[string]any
		require.NoError(t, json.NewDecoder(res.Body).Decode(&body))
		_ = res.Body.Close()
		want := tt.o.Text(errorFor(tt.o))
		assert.Equal(t, tt.o.HTTPStatus, res.StatusCode, "%d", i)
		assert.Equal(t, map[string]any{"error": map[string]any{"code": tt.o.Name, "message": want}}, body, "%d", i)
		if tt.o == outcome.Unauthenticated {
			assert.Equal(t, `Bearer realm="verifyq"`, res.Header.Get("WWW-Authenticate"))
		}
		assert.Equal(t, servicetest.Observed{API: "http", Route: res.Request.URL.Path, Caller: tt.caller, Outcome: tt.o.Metric}, e.obs.Take(t), "%d", i)
		line := e.lastLine(t, "http request")
		assert.Equal(t, tt.o.Name, line["outcome"])
		assert.Equal(t, tt.o.Level.String(), line["level"])
		assertCaller(t, tt.caller, line)

		st := status.Convert(tt.grpc())
		assert.Equal(t, tt.o.GRPCCode, st.Code(), "%d", i)
		assert.Equal(t, want, st.Message(), "%d", i)
		assert.Equal(t, tt.o.Reason, reasonOf(st), "%d", i)
		obs := e.obs.Take(t)
		assert.Equal(t, tt.caller, obs.Caller, "%d", i)
		assert.Equal(t, tt.o.Metric, obs.Outcome, "%d", i)
		line = e.lastLine(t, "grpc call")
		assert.Equal(t, tt.o.Name, line["outcome"])
		assertCaller(t, tt.caller, line)
	}
	assert.Zero(t, e.calls.Load(), "the service never ran")
	assert.NotContains(t, e.logs.String(), key, "never the key")
	assert.NotContains(t, e.logs.String(), "vq_not-a-key", "never the key")

	// With the key and its scope, as before.
	res := e.do(t, http.MethodPost, "/v1/codes", "Bearer "+key, `{"email":"a@example.com"}`)
	_ = res.Body.Close()
	assert.Equal(t, http.StatusAccepted, res.StatusCode)
	assert.Equal(t, servicetest.Observed{API: "http", Route: "/v1/codes", Caller: "gateway", Outcome: outcome.MetricOK}, e.obs.Take(t))
	assertCaller(t, "gateway", e.lastLine(t, "http request"))
	_, err = e.v1.VerifyCode(withKey, &verifyqv1.VerifyCodeRequest{Email: "a@example.com", Code: "1"})
	require.NoError(t, err)
	assert.Equal(t, "gateway", e.obs.Take(t).Caller)
	rsp, err := e.legacy.GetVarifyCode(withKey, &messagepb.GetVarifyReq{Email: "a@example.com"})
	require.NoError(t, err, "the old service takes a key too")
	assert.Equal(t, outcome.LegacySuccess, rsp.GetError())
	assert.Equal(t, int64(3), e.calls.Load())
}

func assertCaller(t *testing.T, want string, line map[string]any) {
	t.Helper()
	if want == "" {
		assert.NotContains(t, line, "caller")
		return
	}
	assert.Equal(t, want, line["caller"])
}

// do sends a request with an Authorization value (none when empty).
func (e *edges) do(t *testing.T, method, path, authorization, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, e.http.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	return res
}

// The HTTP edge's own outcomes, from the requests that cause them.
func TestHTTPTransportOutcomes(t *testing.T) {
	t.Parallel()
	e := startEdges(t, nil)
	tests := []struct {
		o                         *outcome.Outcome
		method, path, ctype, body string
	}{
		{outcome.InvalidJSON, http.MethodPost, "/v1/codes", "application/json", `{"email":`},
		{outcome.InvalidQuery, http.MethodGet, "/v1/codes/status?email=a@example.com&email=b@example.com", "", ``},
		{outcome.BodyTooLarge, http.MethodPost, "/v1/codes", "application/json", `{"email":"` + strings.Repeat("a", httpapi.MaxBodyBytes) + `"}`},
		{outcome.UnsupportedMediaType, http.MethodPost, "/v1/codes", "text/plain", `{}`},
		{outcome.MethodNotAllowed, http.MethodGet, "/v1/codes", "", ``},
		{outcome.NoRoute, http.MethodPost, "/v2/codes", "application/json", `{}`},
	}
	seen := map[*outcome.Outcome]bool{}
	for _, tt := range tests {
		req, err := http.NewRequest(tt.method, e.http.URL+tt.path, strings.NewReader(tt.body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", tt.ctype)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		var body map[string]any
		require.NoError(t, json.NewDecoder(res.Body).Decode(&body))
		_ = res.Body.Close()
		assert.Equal(t, tt.o.HTTPStatus, res.StatusCode, tt.o.Name)
		assert.Equal(t, tt.o.Name, body["error"].(map[string]any)["code"])
		assert.Contains(t, body["error"].(map[string]any)["message"], tt.o.Message)
		assert.Equal(t, tt.o.Metric, e.obs.Take(t).Outcome, tt.o.Name)
		assert.Equal(t, tt.o.Name, e.lastLine(t, "http request")["outcome"])
		seen[tt.o] = true
	}
	for _, o := range outcome.All() {
		assert.Equal(t, o.HTTPOnly, seen[o], "every HTTP-only outcome is tested: %s", o.Name)
	}
}

// The outcome table of docs/API.md says what the code's table says, row for
// row.
func TestAPIDocListsEveryOutcome(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/API.md")
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(doc), "<!-- outcomes:start -->\n")
	require.True(t, ok, "the outcomes:start marker")
	block, _, ok := strings.Cut(rest, "<!-- outcomes:end -->")
	require.True(t, ok, "the outcomes:end marker")
	rows := strings.Split(strings.TrimSpace(block), "\n")[2:] // after the header and the rule

	upperSnake := regexp.MustCompile(`([a-z])([A-Z])`)
	cell := func(s string) string { return strings.Trim(strings.TrimSpace(s), "`") }
	var names []string
	for i, o := range outcome.All() {
		require.Less(t, i, len(rows), "a row for %s", o.Name)
		cols := strings.Split(strings.Trim(rows[i], "|"), "|")
		require.GreaterOrEqual(t, len(cols), 6, rows[i])
		names = append(names, cell(cols[0]))
		assert.Equal(t, o.Name, cell(cols[0]), "row %d", i)
		wantCode, wantLegacy := "", ""
		if o.LegacyOnly {
			assert.Empty(t, cell(cols[1]), "%s: no HTTP status", o.Name)
			wantLegacy = strconv.Itoa(int(o.Legacy))
		} else {
			assert.True(t, strings.HasPrefix(cell(cols[1]), strconv.Itoa(o.HTTPStatus)), "%s: HTTP %d, docs/API.md %q", o.Name, o.HTTPStatus, cols[1])
		}
		if !o.HTTPOnly && !o.LegacyOnly {
			wantCode = strings.ToUpper(upperSnake.ReplaceAllString(o.GRPCCode.String(), "${1}_${2}"))
			wantLegacy = strconv.Itoa(int(o.Legacy))
		}
		if o.Access {
			wantLegacy = "status " + wantCode
		}
		assert.Equal(t, wantCode, cell(cols[2]), o.Name)
		assert.Equal(t, o.Reason, cell(cols[3]), o.Name)
		assert.Equal(t, wantLegacy, cell(cols[4]), o.Name)
		assert.Equal(t, o.Metric, cell(cols[5]), o.Name)
	}
	assert.Len(t, rows, len(outcome.All()), "no row the code lacks: %v", names)
}
