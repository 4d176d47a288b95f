package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/httpapi"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/servicetest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/service"
)

// The requests of each route, for the tests that fail them all alike.
var routeRequests = []struct{ method, path, body string }{
	{http.MethodPost, "/v1/codes", `{"email":"a@example.com"}`},
	{http.MethodPost, "/v1/codes/verify", `{"email":"a@example.com","code":"123456"}`},
	{http.MethodGet, "/v1/codes/status?email=a@example.com", ""},
}

// Each route answers a failure of the service, whatever the Redis mode,
// with the outcome's reply: a bug 500 internal, Redis away 503
// unavailable, a request out of time 504 deadline_exceeded. The replies
// are checked against the OpenAPI document by TestMain's transport.
func TestEveryRouteAnswersServiceFailures(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err    error
		status int
		code   string
	}{
		{errors.New("template: a bug"), http.StatusInternalServerError, "internal"},
		{fmt.Errorf("%w: dial tcp: connection refused", service.ErrUnavailable), http.StatusServiceUnavailable, "unavailable"},
		{fmt.Errorf("%w: %w", service.ErrUnavailable, context.DeadlineExceeded), http.StatusGatewayTimeout, "deadline_exceeded"},
	} {
		srv := httptest.NewServer(httpapi.NewHandler(servicetest.Failing(tt.err), servicetest.Discard, httpapi.Config{}))
		t.Cleanup(srv.Close)
		for _, r := range routeRequests {
			req, err := http.NewRequest(r.method, srv.URL+r.path, strings.NewReader(r.body))
			require.NoError(t, err)
			if r.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			status, body, _ := do(t, req)
			assert.Equal(t, tt.status, status, "%s %s", r.method, r.path)
			assert.Equal(t, tt.code, errCode(body), "%s %s", r.method, r.path)
		}
	}
}

// The verify route reads its body as strictly as the send route.
func TestVerifyRejectsBadBodies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tt := range []struct{ body, code string }{
		{`{"email":"a@example.com","code":123456}`, "invalid_json"},
		{`{"email":"a@example.com","code":"1","locale":"en"}`, "invalid_json"},
		{`{"email":"not an address","code":"123456"}`, "invalid_email"},
		{`{"email":"a@example.com","code":"` + strings.Repeat("1", 65) + `"}`, "invalid_code"},
	} {
		status, body, _ := e.post(t, "/v1/codes/verify", tt.body)
		assert.Equal(t, http.StatusBadRequest, status, tt.body)
		assert.Equal(t, tt.code, errCode(body), tt.body)
	}
	status, body, _ := e.post(t, "/v1/codes/verify", `{"email":"a@example.com","code":"`+strings.Repeat("1", httpapi.MaxBodyBytes)+`"}`)
	assert.Equal(t, http.StatusRequestEntityTooLarge, status)
	assert.Equal(t, "body_too_large", errCode(body))
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/codes/verify", strings.NewReader(`{"email":"a@example.com","code":"1"}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	status, body, _ = do(t, req)
	assert.Equal(t, http.StatusUnsupportedMediaType, status)
	assert.Equal(t, "unsupported_media_type", errCode(body))
}

// A send to a suppressed address is 422 undeliverable, and nothing is
// queued.
func TestSendToSuppressedAddress(t *testing.T) {
	t.Parallel()
	e := newLimitedEnv(t, limits.Config{}, 0, nil)
	sup := delivery.NewSuppressions(e.rdb, mail.Identity{TagSeparators: mail.DefaultTagSeparators})
	require.NoError(t, sup.Add(context.Background(), delivery.Entry{
		Email: "gone@example.com", Reason: delivery.ReasonRecipientRefused, Reply: 550, Enhanced: "5.1.1",
		Added: time.Now(), For: time.Hour,
	}))
	status, body, _ := e.post(t, "/v1/codes", `{"email":"gone@example.com","purpose":"login"}`)
	assert.Equal(t, http.StatusUnprocessableEntity, status)
	assert.Equal(t, "undeliverable", errCode(body))
	assert.NotContains(t, fmt.Sprint(body), "gone@", "a refused address is not echoed")
	assert.Empty(t, e.Pending(t))
}

// failingList is a suppression list whose Redis is away.
type failingList struct{}

func (failingList) List(context.Context, delivery.Filter, int) ([]delivery.Suppression, bool, error) {
	return nil, false, errors.New("dial tcp: connection refused")
}

func (failingList) Lift(context.Context, string) (bool, error) {
	return false, errors.New("dial tcp: connection refused")
}

func (failingList) LiftID(context.Context, string) (bool, error) {
	return false, errors.New("dial tcp: connection refused")
}

func (failingList) LiftAdded(context.Context, delivery.Filter) (int, error) {
	return 0, errors.New("dial tcp: connection refused")
}

// The suppression endpoint answers 503 unavailable, without internals,
// while its Redis is away.
func TestSuppressionsUnavailable(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(httpapi.NewSuppressionsHandler(failingList{}, httpapi.SuppressionsConfig{}))
	t.Cleanup(srv.Close)
	for _, tt := range []struct{ method, query string }{
		{http.MethodGet, ""},
		{http.MethodDelete, "email=a@example.com"},
		{http.MethodDelete, "id=0123456789abcdef0123456789abcdef:0123456789abcdef0123456789abcdef"},
		{http.MethodDelete, "added_after=2025-03-01T00:00:00Z&added_before=2025-03-02T00:00:00Z"},
	} {
		req, err := http.NewRequest(tt.method, srv.URL+"/suppressions?"+tt.query, nil)
		require.NoError(t, err)
		status, body, _ := do(t, req)
		assert.Equal(t, http.StatusServiceUnavailable, status, tt.query)
		assert.Equal(t, "unavailable", errCode(body), tt.query)
		assert.NotContains(t, fmt.Sprint(body), "dial", tt.query)
	}
}

// Behind the admin listener's guard, as the enqueuer mounts it, the
// suppression endpoint answers a foreign Host 421 and a request without
// DASHBOARD_AUTH's credentials 401, before the list is read.
func TestSuppressionsBehindAdminGuard(t *testing.T) {
	t.Parallel()
	guard := platform.AdminGuard(platform.AdminHosts("127.0.0.1:8081", nil),
		platform.Credentials{User: "ops", Password: "s3cret"}, servicetest.Discard)
	srv := httptest.NewServer(guard(httpapi.NewSuppressionsHandler(failingList{}, httpapi.SuppressionsConfig{})))
	t.Cleanup(srv.Close)
	for _, method := range []string{http.MethodGet, http.MethodDelete} {
		req, err := http.NewRequest(method, srv.URL+"/suppressions?email=a@example.com", nil)
		require.NoError(t, err)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = res.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, res.StatusCode, method)
		assert.Contains(t, res.Header.Get("WWW-Authenticate"), "Basic")

		req.Host = "rebind.example"
		req.SetBasicAuth("ops", "s3cret")
		res, err = http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = res.Body.Close()
		assert.Equal(t, http.StatusMisdirectedRequest, res.StatusCode, method)
	}
}
