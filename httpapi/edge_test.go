package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/httpapi"
	"github.com/verifyq/verifyq/internal/logtest"
	"github.com/verifyq/verifyq/internal/servicetest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/service"
)

func postTo(t *testing.T, url, body string) *http.Response {
	t.Helper()
	res, err := http.Post(url, "application/json", strings.NewReader(body)) //nolint:gosec // G107: the test's own loopback server
	require.NoError(t, err)
	t.Cleanup(func() { _ = res.Body.Close() })
	return res
}

// Every request is one log line (method, path, status, outcome, the masked
// address, duration) and one observation with the table's metric label,
// on the real service.
func TestEveryRequestIsLoggedAndObserved(t *testing.T) {
	t.Parallel()
	servicetest.SingleOnly(t) // it stops the one server
	se := servicetest.New(t, limits.Config{}, 0)
	logger, logs := logtest.New(t)
	obs := &servicetest.Observer{}
	srv := httptest.NewServer(httpapi.NewHandler(se.Service, logger, httpapi.Config{Metrics: obs}))
	t.Cleanup(srv.Close)

	postTo(t, srv.URL+"/v1/codes", `{"email":"Alice.Smith@example.com"}`)
	code := se.Code(t, "Alice.Smith@example.com")
	postTo(t, srv.URL+"/v1/codes", `{"email":"not an address"}`)
	postTo(t, srv.URL+"/v1/codes/verify", `{"email":"nobody@example.com","code":"123456"}`)
	postTo(t, srv.URL+"/v1/codes/Alice.Smith@example.com", `{}`)
	res, err := http.Get(srv.URL + "/v1/codes")
	require.NoError(t, err)
	_ = res.Body.Close()
	postTo(t, srv.URL+"/v1/codes/verify", `{"email":"Alice.Smith@example.com","code":"`+code+`"}`)
	se.Redis.Stop()
	postTo(t, srv.URL+"/v1/codes", `{"email":"Alice.Smith@example.com"}`)

	assert.Equal(t, []servicetest.Observed{
		{API: "http", Route: "/v1/codes", Caller: "anonymous", Outcome: "ok"},
		{API: "http", Route: "/v1/codes", Caller: "anonymous", Outcome: "invalid"},
		{API: "http", Route: "/v1/codes/verify", Caller: "anonymous", Outcome: "not_found"},
		{API: "http", Route: "other", Outcome: "invalid"}, // no route, no caller check
		{API: "http", Route: "/v1/codes", Outcome: "invalid"},
		{API: "http", Route: "/v1/codes/verify", Caller: "anonymous", Outcome: "ok"},
		{API: "http", Route: "/v1/codes", Caller: "anonymous", Outcome: "unavailable"},
	}, obs.All())

	lines := logs.Matching(t, "http request")
	require.Len(t, lines, 7, "one line per request")
	want := []struct {
		method, path string
		status       float64
		outcome      string
		level        string
	}{
		{"POST", "/v1/codes", 202, "ok", "INFO"},
		{"POST", "/v1/codes", 400, "invalid_email", "INFO"},
		{"POST", "/v1/codes/verify", 410, "code_not_found", "INFO"},
		{"POST", "other", 404, "not_found", "INFO"},
		{"GET", "/v1/codes", 405, "method_not_allowed", "INFO"},
		{"POST", "/v1/codes/verify", 200, "ok", "INFO"},
		{"POST", "/v1/codes", 503, "unavailable", "ERROR"},
	}
	for i, w := range want {
		l := lines[i]
		assert.Equal(t, w.method, l["method"], "line %d", i)
		assert.Equal(t, w.path, l["path"], "line %d", i)
		assert.Equal(t, w.status, l["status"], "line %d", i)
		assert.Equal(t, w.outcome, l["outcome"], "line %d", i)
		assert.Equal(t, w.level, l["level"], "line %d", i)
		assert.Contains(t, l, "ms", "line %d", i)
	}
	assert.Equal(t, "A***@example.com", lines[0]["email"])
	assert.Contains(t, lines[6], "err", "a failure of ours says why in the log")
	assert.NotContains(t, logs.String(), code, "never the code")
	assert.NotContains(t, logs.String(), "Alice.Smith", "never the whole address")
}

// blocked is a service call that waits for its context to end and fails as
// the real one does when its Redis call is cut off.
func blocked(ctx context.Context) error {
	<-ctx.Done()
	return fmt.Errorf("%w: %w", service.ErrUnavailable, ctx.Err())
}

// A client that goes away is outcome canceled: logged below ERROR, counted
// as canceled, never as unavailable.
func TestClientGoneIsCanceled(t *testing.T) {
	t.Parallel()
	logger, logs := logtest.New(t)
	obs := &servicetest.Observer{}
	started := make(chan struct{})
	fake := servicetest.Fake{Send: func(ctx context.Context, _ service.SendRequest) (service.Sent, error) {
		close(started)
		return service.Sent{}, blocked(ctx)
	}}
	srv := httptest.NewServer(httpapi.NewHandler(fake, logger, httpapi.Config{Metrics: obs}))
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/codes", strings.NewReader(`{"email":"gone@example.com"}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	go func() {
		<-started
		cancel()
	}()
	_, err = http.DefaultClient.Do(req)
	require.ErrorIs(t, err, context.Canceled)

	require.Eventually(t, func() bool { return len(obs.All()) == 1 }, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, servicetest.Observed{API: "http", Route: "/v1/codes", Caller: "anonymous", Outcome: "canceled"}, obs.All()[0])
	lines := logs.Matching(t, "http request")
	require.Len(t, lines, 1)
	assert.Equal(t, "canceled", lines[0]["outcome"])
	assert.Equal(t, "INFO", lines[0]["level"], "below ERROR: the client's doing")
	assert.NotContains(t, logs.String(), `"level":"ERROR"`)
}

// A request that outlives RequestTimeout ends with deadline_exceeded.
func TestRequestDeadline(t *testing.T) {
	t.Parallel()
	logger, logs := logtest.New(t)
	fake := servicetest.Fake{Verify: func(ctx context.Context, _ service.VerifyRequest) error { return blocked(ctx) }}
	srv := httptest.NewServer(httpapi.NewHandler(fake, logger, httpapi.Config{RequestTimeout: 50 * time.Millisecond}))
	t.Cleanup(srv.Close)

	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/codes/verify", strings.NewReader(`{"email":"slow@example.com","code":"1"}`))
	req.Header.Set("Content-Type", "application/json")
	status, body, _ := do(t, req)
	assert.Equal(t, http.StatusGatewayTimeout, status)
	assert.Equal(t, "deadline_exceeded", errCode(body))
	lines := logs.Matching(t, "http request")
	require.Len(t, lines, 1)
	assert.Equal(t, "WARN", lines[0]["level"])
}

// A panicking handler answers a JSON 500, logs its stack, and the server
// goes on serving.
func TestPanicIsJSON500(t *testing.T) {
	t.Parallel()
	logger, logs := logtest.New(t)
	obs := &servicetest.Observer{}
	fake := servicetest.Fake{Send: func(context.Context, service.SendRequest) (service.Sent, error) {
		panic("secret detail")
	}}
	srv := httptest.NewServer(httpapi.NewHandler(fake, logger, httpapi.Config{Metrics: obs}))
	t.Cleanup(srv.Close)

	for range 2 {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/codes", strings.NewReader(`{"email":"p@example.com"}`))
		req.Header.Set("Content-Type", "application/json")
		status, body, _ := do(t, req)
		assert.Equal(t, http.StatusInternalServerError, status)
		assert.Equal(t, "internal", errCode(body))
		assert.NotContains(t, body["error"].(map[string]any)["message"], "secret")
	}
	panics := logs.Matching(t, "http handler panicked")
	require.Len(t, panics, 2)
	assert.Equal(t, "ERROR", panics[0]["level"])
	assert.Contains(t, panics[0]["stack"], "httpapi_test.TestPanicIsJSON500")
	assert.Equal(t, []servicetest.Observed{{API: "http", Route: "/v1/codes", Caller: "anonymous", Outcome: "error"}, {API: "http", Route: "/v1/codes", Caller: "anonymous", Outcome: "error"}}, obs.All())
}
