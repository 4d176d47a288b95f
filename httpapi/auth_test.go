package httpapi_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/auth"
	"github.com/verifyq/verifyq/httpapi"
	"github.com/verifyq/verifyq/internal/authtest"
	"github.com/verifyq/verifyq/internal/logtest"
	"github.com/verifyq/verifyq/internal/servicetest"
	"github.com/verifyq/verifyq/limits"
)

// newAuthEnv serves the API on a real service with callers of the given
// "name scopes" pairs; it returns each name's key.
func newAuthEnv(t *testing.T, cfg auth.Config, pairs ...string) (*env, map[string]string, *logtest.Buffer) {
	t.Helper()
	guard, keyOf := authtest.Callers(t, cfg, pairs...)
	se := servicetest.New(t, limits.Config{}, 0)
	logger, logs := logtest.New(t)
	srv := httptest.NewServer(httpapi.NewHandler(se.Service, logger, httpapi.Config{Guard: guard}))
	t.Cleanup(srv.Close)
	return &env{Env: se, srv: srv, rdb: se.RDB, insp: asynq.NewInspectorFromRedisClient(se.RDB)}, keyOf, logs
}

// call sends method path with body (JSON when not empty) and an
// Authorization value (none when empty); it returns the status, the raw
// body and the headers.
func (e *env) call(t *testing.T, method, path, authorization, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b), res.Header
}

// With keys configured, every API request needs a key with its scope; a
// refused one is answered before its body is read, and nothing is stored
// or queued.
func TestCallersAuthenticate(t *testing.T) {
	t.Parallel()
	e, key, logs := newAuthEnv(t, auth.Config{}, "gateway send,verify", "desk status")
	send := `{"email":"nokey@example.com"}`
	for _, tt := range []struct {
		method, path, authorization, body string
		want                              int
	}{
		{http.MethodPost, "/v1/codes", "", send, http.StatusUnauthorized},
		{http.MethodPost, "/v1/codes", "Bearer vq_wrong", send, http.StatusUnauthorized},
		{http.MethodPost, "/v1/codes", key["gateway"], send, http.StatusUnauthorized}, // no scheme
		{http.MethodPost, "/v1/codes", "Basic " + key["gateway"], send, http.StatusUnauthorized},
		{http.MethodPost, "/v1/codes", "Bearer " + key["desk"], send, http.StatusForbidden},
		{http.MethodPost, "/v1/codes", "", `{"email":`, http.StatusUnauthorized}, // before the body is read
		{http.MethodPost, "/v1/codes/verify", "", `{"email":"nokey@example.com","code":"1"}`, http.StatusUnauthorized},
		{http.MethodPost, "/v1/codes/verify", "Bearer " + key["desk"], `{"email":"nokey@example.com","code":"1"}`, http.StatusForbidden},
		{http.MethodGet, "/v1/codes/status?email=nokey@example.com", "", "", http.StatusUnauthorized},
	} {
		status, body, h := e.call(t, tt.method, tt.path, tt.authorization, tt.body)
		assert.Equal(t, tt.want, status, "%s %s %.12q", tt.method, tt.path, tt.authorization)
		if tt.want == http.StatusUnauthorized {
			assert.JSONEq(t, `{"error":{"code":"unauthenticated","message":"a valid API key is required (Authorization: Bearer <key>)"}}`, body)
			assert.Equal(t, `Bearer realm="verifyq"`, h.Get("WWW-Authenticate"))
		} else {
			assert.Contains(t, body, `"permission_denied"`)
		}
	}
	assert.Empty(t, e.Keys(t, "*nokey*"), "nothing stored")
	assert.Empty(t, e.Pending(t), "nothing queued")

	// Two Authorization headers are no key.
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/codes", strings.NewReader(send))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Add("Authorization", "Bearer "+key["gateway"])
	req.Header.Add("Authorization", "Bearer "+key["gateway"])
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = res.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, res.StatusCode)

	// The right keys, as before.
	status, _, _ := e.call(t, http.MethodPost, "/v1/codes", "Bearer "+key["gateway"], `{"email":"ok@example.com"}`)
	assert.Equal(t, http.StatusAccepted, status)
	status, body, _ := e.call(t, http.MethodGet, "/v1/codes/status?email=ok@example.com", "bearer "+key["desk"], "")
	assert.Equal(t, http.StatusOK, status)
	assert.Contains(t, body, `"state":"queued"`)
	status, _, _ = e.call(t, http.MethodPost, "/v1/codes/verify", "Bearer "+key["gateway"],
		`{"email":"ok@example.com","code":"`+e.Code(t, "ok@example.com")+`"}`)
	assert.Equal(t, http.StatusOK, status)

	// The log line names the caller, never the key.
	lines := logs.Matching(t, "http request")
	assert.Equal(t, "gateway", lines[len(lines)-1]["caller"])
	assert.Equal(t, "desk", lines[len(lines)-2]["caller"])
	assert.NotContains(t, lines[0], "caller", "no caller admitted")
	for _, k := range key {
		assert.NotContains(t, logs.String(), k)
	}
}

// A caller without the status scope learns nothing of an address: the
// same 403, byte for byte, whether the address has a code, had one, or
// never asked, and even for a query that is not one.
func TestStatusWithoutScopeLearnsNothing(t *testing.T) {
	t.Parallel()
	e, key, _ := newAuthEnv(t, auth.Config{}, "gateway send,verify")
	status, _, _ := e.call(t, http.MethodPost, "/v1/codes", "Bearer "+key["gateway"], `{"email":"known@example.com"}`)
	require.Equal(t, http.StatusAccepted, status)
	_, _, _ = e.call(t, http.MethodPost, "/v1/codes/verify", "Bearer "+key["gateway"], `{"email":"known@example.com","code":"000000"}`)

	var first string
	var firstHeader http.Header
	for _, q := range []string{"email=known@example.com", "email=never@example.com", "email=known@example.com&purpose=register", "email=x&email=y"} {
		status, body, h := e.call(t, http.MethodGet, "/v1/codes/status?"+q, "Bearer "+key["gateway"], "")
		assert.Equal(t, http.StatusForbidden, status, q)
		if first == "" {
			first, firstHeader = body, h
			assert.JSONEq(t, `{"error":{"code":"permission_denied","message":"this API key may not make this request: the key needs the status scope"}}`, body)
			continue
		}
		assert.Equal(t, first, body, q)
		h.Del("Date")
		firstHeader.Del("Date")
		assert.Equal(t, firstHeader, h, q)
	}
}

// Each caller's status reads are bounded; past the bound, 429 with
// Retry-After and the limit named.
func TestStatusReadsPerCaller(t *testing.T) {
	t.Parallel()
	now := time.Now()
	e, key, _ := newAuthEnv(t, auth.Config{StatusReadsPerMinute: 2, Now: func() time.Time { return now }}, "a status", "b status")
	for range 2 {
		status, _, _ := e.call(t, http.MethodGet, "/v1/codes/status?email=x@example.com", "Bearer "+key["a"], "")
		require.Equal(t, http.StatusOK, status)
	}
	status, body, h := e.call(t, http.MethodGet, "/v1/codes/status?email=x@example.com", "Bearer "+key["a"], "")
	assert.Equal(t, http.StatusTooManyRequests, status)
	assert.Equal(t, "30", h.Get("Retry-After"))
	assert.Contains(t, body, "(status limit)")
	status, _, _ = e.call(t, http.MethodGet, "/v1/codes/status?email=x@example.com", "Bearer "+key["b"], "")
	assert.Equal(t, http.StatusOK, status, "b has its own")
}
