package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/httpapi"
	"github.com/verifyq/verifyq/internal/servicetest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/outcome"
	"github.com/verifyq/verifyq/tasks"
)

type env struct {
	*servicetest.Env
	srv  *httptest.Server
	insp *asynq.Inspector
	rdb  redis.UniversalClient
}

// newEnv serves the API on a real service and Redis, with no limits.
func newEnv(t *testing.T) *env { return newLimitedEnv(t, limits.Config{}, 0, nil) }

func newLimitedEnv(t *testing.T, l limits.Config, maxAttempts int, trusted []netip.Prefix) *env {
	t.Helper()
	se := servicetest.New(t, l, maxAttempts)
	srv := httptest.NewServer(httpapi.NewHandler(se.Service, servicetest.Discard, httpapi.Config{TrustedProxies: trusted}))
	t.Cleanup(srv.Close)
	return &env{Env: se, srv: srv, rdb: se.RDB, insp: asynq.NewInspectorFromRedisClient(se.RDB)}
}

func (e *env) post(t *testing.T, path, body string) (int, map[string]any, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, map[string]any, http.Header) {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, "application/json; charset=utf-8", res.Header.Get("Content-Type"))
	var m map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&m))
	return res.StatusCode, m, res.Header
}

func errCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func TestSendCode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()

	status, body, _ := e.post(t, "/v1/codes", `{"email":"User.Name@Example.COM","locale":"en"}`)
	require.Equal(t, http.StatusAccepted, status, body)
	assert.Equal(t, "User.Name@Example.COM", body["email"])
	assert.EqualValues(t, 600, body["expires_in"])
	assert.Len(t, body, 3, "email, expires_in and resend_after; never the code")

	code, err := e.rdb.Get(ctx, "code_User.Name@Example.COM").Result()
	require.NoError(t, err, "the key keeps the address as sent")
	ttl, err := e.rdb.TTL(ctx, "code_User.Name@Example.COM").Result()
	require.NoError(t, err)
	assert.LessOrEqual(t, ttl, 10*time.Minute)

	infos, err := e.insp.ListPendingTasks(tasks.Queue)
	require.NoError(t, err)
	require.Len(t, infos, 1)
	assert.Equal(t, tasks.TypeSendCode, infos[0].Type)
	assert.Equal(t, tasks.MaxRetry, infos[0].MaxRetry)
	assert.WithinDuration(t, time.Now().Add(10*time.Minute), infos[0].Deadline, 5*time.Second)
	assert.NotContains(t, string(infos[0].Payload), code, "no code in the payload")
	p := e.Pending(t)[0]
	assert.Equal(t, "User.Name@Example.COM", p.Email)
	assert.Equal(t, "en", p.Locale)

	// A repeat reuses the code and does not extend it.
	require.NoError(t, e.rdb.Expire(ctx, "code_User.Name@Example.COM", 100*time.Second).Err())
	status, body, _ = e.post(t, "/v1/codes", `{"email":"User.Name@Example.COM"}`)
	require.Equal(t, http.StatusAccepted, status, body)
	assert.LessOrEqual(t, body["expires_in"], float64(100))
	again, err := e.rdb.Get(ctx, "code_User.Name@Example.COM").Result()
	require.NoError(t, err)
	assert.Equal(t, code, again)
	p = e.Pending(t)[1]
	assert.Equal(t, "zh-CN", p.Locale, "default locale")
}

// The task carries the supported locale the send's language matched: the
// body's locale, else the Accept-Language header's, else the default.
func TestSendCodeLocale(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		name, locale string
		accept       []string // Accept-Language header lines
		want         string   // the task's locale, or the error's code
	}{
		{"body", "ja", nil, "ja"},
		{"body tag", "zh-Hant-HK", nil, "zh-TW"},
		{"body over header", "es-MX", []string{"ja"}, "es"},
		{"body unknown", "nl", []string{"ja"}, "zh-CN"},
		{"header", "", []string{"zh-HK"}, "zh-TW"},
		{"header q-values", "", []string{"fr;q=0.5, de;q=0.9, nl"}, "de"},
		{"header first preference", "", []string{"zh-HK,zh;q=0.9,en;q=0.8"}, "zh-TW"},
		{"header lines", "", []string{"nl", "pt-PT;q=0.5"}, "pt-BR"},
		{"header unknown", "", []string{"nl, uk;q=0.5"}, "zh-CN"},
		{"header empty", "", []string{""}, "zh-CN"},
		{"neither", "", nil, "zh-CN"},
		{"header malformed", "", []string{"en;q=x"}, "zh-CN"},
		{"header too long", "", []string{strings.Repeat("ja, ", 300)}, "zh-CN"},
		{"body malformed", "en_GB!", []string{"ja"}, "invalid_locale"},
		{"body fine, header malformed", "ko", []string{"en;q=x"}, "ko"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			email := fmt.Sprintf("locale%d@example.com", i)
			body := `{"email":"` + email + `"`
			if tt.locale != "" {
				body += `,"locale":"` + tt.locale + `"`
			}
			req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/codes", strings.NewReader(body+"}"))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/json")
			for _, a := range tt.accept {
				req.Header.Add("Accept-Language", a)
			}
			status, res, _ := do(t, req)
			if strings.HasPrefix(tt.want, "invalid_") {
				require.Equal(t, http.StatusBadRequest, status, res)
				assert.Equal(t, tt.want, errCode(res))
				msg := res["error"].(map[string]any)["message"].(string)
				assert.Contains(t, msg, "BCP 47 language tag")
				return
			}
			require.Equal(t, http.StatusAccepted, status, res)
			var got string
			for _, p := range e.Pending(t) {
				if p.Email == email {
					got = p.Locale
				}
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestSendCodeRejectsBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		name, body, code string
	}{
		{"not json", `{"email":`, "invalid_json"},
		{"array", `["a@example.com"]`, "invalid_json"},
		{"number email", `{"email":42}`, "invalid_json"},
		{"two objects", `{"email":"a@example.com"}{"email":"b@example.com"}`, "invalid_json"},
		{"empty body", ``, "invalid_json"},
		{"no email", `{}`, "invalid_email"},
		{"no at", `{"email":"example.com"}`, "invalid_email"},
		{"display name", `{"email":"Eve <eve@example.com>"}`, "invalid_email"},
		{"header injection", `{"email":"a@example.com\r\nBcc: victim@example.com"}`, "invalid_email"},
		{"list", `{"email":"a@example.com, b@example.com"}`, "invalid_email"},
		{"too long", `{"email":"` + strings.Repeat("a", 250) + `@example.com"}`, "invalid_email"},
		{"malformed locale", `{"email":"a@example.com","locale":"en_GB!"}`, "invalid_locale"},
		{"unregistered language", `{"email":"a@example.com","locale":"xx"}`, "invalid_locale"},
		{"too long locale", `{"email":"a@example.com","locale":"en-` + strings.Repeat("a-", 40) + `"}`, "invalid_locale"},
		{"unknown member", `{"email":"a@example.com","admin":"yes"}`, "invalid_json"},
		{"member of the other route", `{"email":"a@example.com","code":"1"}`, "invalid_json"},
		{"duplicate member", `{"email":"a@example.com","email":"b@example.com"}`, "invalid_json"},
		{"member by case only", `{"EMAIL":"a@example.com"}`, "invalid_json"},
		{"null", `{"email":null}`, "invalid_json"},
		{"invalid UTF-8", "{\"email\":\"a\xff@example.com\"}", "invalid_json"},
		{"escaped lone surrogate", `{"email":"a\ud800@example.com"}`, "invalid_email"},
		{"right-to-left override", `{"email":"kim\u202e@example.com"}`, "invalid_email"},
		{"zero-width space", "{\"email\":\"ki\u200bm@example.com\"}", "invalid_email"},
		{"line separator", `{"email":"kim\u2028@example.com"}`, "invalid_email"},
		{"Kelvin sign", `{"email":"\u212aim@example.com"}`, "invalid_email"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, _ := e.post(t, "/v1/codes", tt.body)
			assert.Equal(t, http.StatusBadRequest, status)
			assert.Equal(t, tt.code, errCode(body))
			msg := body["error"].(map[string]any)["message"]
			if tt.code == "invalid_email" {
				assert.Equal(t, outcome.InvalidEmail.Message, msg, "the address is never echoed")
			} else {
				assert.NotContains(t, msg, "@", "no value is echoed")
			}
		})
	}
	assert.Empty(t, e.Pending(t), "nothing enqueued")
	keys, err := e.rdb.Keys(context.Background(), "code_*").Result()
	require.NoError(t, err)
	assert.Empty(t, keys, "no code made")
}

func TestTransportErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/codes", strings.NewReader(`{"email":"a@example.com"}`))
	req.Header.Set("Content-Type", "text/plain")
	status, body, _ := do(t, req)
	assert.Equal(t, http.StatusUnsupportedMediaType, status)
	assert.Equal(t, "unsupported_media_type", errCode(body))

	status, body, _ = e.post(t, "/v1/codes", `{"email":"a@example.com","pad":"`+strings.Repeat("x", httpapi.MaxBodyBytes)+`"}`)
	assert.Equal(t, http.StatusRequestEntityTooLarge, status)
	assert.Equal(t, "body_too_large", errCode(body))
	padded := `{"email":"a@example.com"}`
	padded += strings.Repeat(" ", httpapi.MaxBodyBytes+1-len(padded))
	status, body, _ = e.post(t, "/v1/codes", padded)
	assert.Equal(t, http.StatusRequestEntityTooLarge, status, "any body over the limit, even one padded after a valid object")
	assert.Equal(t, "body_too_large", errCode(body))

	req, _ = http.NewRequest(http.MethodGet, e.srv.URL+"/v1/codes", nil)
	status, body, hdr := do(t, req)
	assert.Equal(t, http.StatusMethodNotAllowed, status)
	assert.Equal(t, "POST", hdr.Get("Allow"))
	assert.Equal(t, "method_not_allowed", errCode(body))
	req, _ = http.NewRequest(http.MethodPost, e.srv.URL+"/v1/codes/status?email=a@example.com", nil)
	status, body, hdr = do(t, req)
	assert.Equal(t, http.StatusMethodNotAllowed, status)
	assert.Equal(t, "GET, HEAD", hdr.Get("Allow"))
	assert.Equal(t, "method_not_allowed", errCode(body))
	assert.NotContains(t, body["error"].(map[string]any)["message"], "POST", "the status takes GET: no message may send its caller to POST")

	req, _ = http.NewRequest(http.MethodGet, e.srv.URL+"/nope", nil)
	status, body, _ = do(t, req)
	assert.Equal(t, http.StatusNotFound, status)
	assert.Equal(t, "not_found", errCode(body))
	assert.Empty(t, e.Pending(t))
}

func TestVerifyCode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()

	status, body, _ := e.post(t, "/v1/codes/verify", `{"email":"v@example.com","code":"123456"}`)
	assert.Equal(t, http.StatusGone, status)
	assert.Equal(t, "code_not_found", errCode(body))

	status, _, _ = e.post(t, "/v1/codes", `{"email":"v@example.com"}`)
	require.Equal(t, http.StatusAccepted, status)
	code, err := e.rdb.Get(ctx, "code_v@example.com").Result()
	require.NoError(t, err)
	wrong := "000000"
	if code == wrong {
		wrong = "999999"
	}

	status, body, _ = e.post(t, "/v1/codes/verify", `{"email":"v@example.com","code":"`+wrong+`"}`)
	assert.Equal(t, http.StatusUnprocessableEntity, status)
	assert.Equal(t, "code_mismatch", errCode(body))

	status, body, _ = e.post(t, "/v1/codes/verify", `{"email":"v@example.com","code":""}`)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Equal(t, "invalid_code", errCode(body))

	status, body, _ = e.post(t, "/v1/codes/verify", `{"email":"v@example.com","code":"`+code+`"}`)
	require.Equal(t, http.StatusOK, status, body)
	assert.Equal(t, map[string]any{"email": "v@example.com", "verified": true}, body)
	n, err := e.rdb.Exists(ctx, "code_v@example.com").Result()
	require.NoError(t, err)
	assert.Zero(t, n, "the key is gone")

	status, body, _ = e.post(t, "/v1/codes/verify", `{"email":"v@example.com","code":"`+code+`"}`)
	assert.Equal(t, http.StatusGone, status, "single use")
	assert.Equal(t, "code_not_found", errCode(body))
}

func TestRedisDown(t *testing.T) {
	t.Parallel()
	servicetest.SingleOnly(t) // it stops the one server
	e := newEnv(t)
	e.Redis.Stop()

	for path, reqBody := range map[string]string{
		"/v1/codes":        `{"email":"a@example.com"}`,
		"/v1/codes/verify": `{"email":"a@example.com","code":"123456"}`,
	} {
		status, body, _ := e.post(t, path, reqBody)
		assert.Equal(t, http.StatusServiceUnavailable, status, path)
		assert.Equal(t, "unavailable", errCode(body))
		assert.NotContains(t, body["error"].(map[string]any)["message"], "127.0.0.1", "no internals in replies")
	}

	require.NoError(t, e.Redis.Restart())
	status, _, _ := e.post(t, "/v1/codes", `{"email":"a@example.com"}`)
	assert.Equal(t, http.StatusAccepted, status, "recovers without a restart")
}

func TestUnexpectedErrorIsJSON500(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(httpapi.NewHandler(servicetest.Failing(errors.New("secret internal detail")), servicetest.Discard, httpapi.Config{}))
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/codes", strings.NewReader(`{"email":"a@example.com"}`))
	req.Header.Set("Content-Type", "application/json")
	status, body, _ := do(t, req)
	assert.Equal(t, http.StatusInternalServerError, status)
	assert.Equal(t, "internal", errCode(body))
	assert.NotContains(t, body["error"].(map[string]any)["message"], "secret")
}

func (e *env) get(t *testing.T, path string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	require.NoError(t, err)
	status, body, _ := do(t, req)
	return status, body
}

// GET /v1/codes/status says what became of the mail, never the code.
func TestStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	status, body := e.get(t, "/v1/codes/status?email=st@example.com")
	require.Equal(t, http.StatusOK, status, body)
	assert.Equal(t, map[string]any{"email": "st@example.com", "state": "none", "attempts": float64(0), "expires_in": float64(0)}, body)

	status, _, _ = e.post(t, "/v1/codes", `{"email":"st@example.com"}`)
	require.Equal(t, http.StatusAccepted, status)
	status, body = e.get(t, "/v1/codes/status?email=st@example.com")
	require.Equal(t, http.StatusOK, status, body)
	assert.Equal(t, "queued", body["state"])
	assert.InDelta(t, 600, body["expires_in"], 2)
	assert.NotContains(t, fmt.Sprint(body), e.Code(t, "st@example.com"))

	// What a worker records when the fallback relay takes the mail.
	sentAt := time.Now().Truncate(time.Millisecond)
	require.NoError(t, e.Records.Sent(t.Context(), codes.ID{Email: "st@example.com"}, e.Task(t, codes.ID{Email: "st@example.com"}),
		delivery.Acceptance{At: sentAt, Relay: "fallback", SinceRequest: 1500 * time.Millisecond}))
	status, body = e.get(t, "/v1/codes/status?email=st@example.com")
	require.Equal(t, http.StatusOK, status, body)
	assert.Equal(t, "sent", body["state"])
	assert.Equal(t, sentAt.UTC().Format(time.RFC3339Nano), body["sent_at"])
	assert.Equal(t, "fallback", body["relay"])
	assert.Equal(t, float64(1500), body["sent_after_ms"])

	e.Reported(t, codes.ID{Email: "st@example.com"}, delivery.Report{
		State: delivery.StateBounced, DSN: "5.1.1", Diagnostic: "<st@example.com>: Recipient address rejected: User unknown",
	})
	status, body = e.get(t, "/v1/codes/status?email=st@example.com")
	require.Equal(t, http.StatusOK, status, body)
	assert.Equal(t, "bounced", body["state"])
	assert.Equal(t, "5.1.1", body["dsn_status"])
	assert.Equal(t, "<s***@example.com>: Recipient address rejected: User unknown", body["diagnostic"])
	assert.NotEmpty(t, body["sent_at"], "it was sent before it bounced")

	for _, q := range []string{"", "?email=a@example.com&email=b@example.com", "?email=a@example.com&x=1", "?mail=a@example.com"} {
		status, body = e.get(t, "/v1/codes/status"+q)
		assert.Equal(t, http.StatusBadRequest, status, q)
		assert.Equal(t, "invalid_query", errCode(body), q)
	}
	status, body = e.get(t, "/v1/codes/status?email=not+an+address")
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Equal(t, "invalid_email", errCode(body))
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/codes/status", strings.NewReader(`{}`))
	status, _, hdr := do(t, req)
	assert.Equal(t, http.StatusMethodNotAllowed, status)
	assert.Equal(t, "GET, HEAD", hdr.Get("Allow"))
}

func TestPurposes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	const email = "purpose@example.com"

	status, body, _ := e.post(t, "/v1/codes", `{"email":"`+email+`","purpose":"reset_password"}`)
	require.Equal(t, http.StatusAccepted, status, body)
	code, err := e.rdb.Get(ctx, "code_reset_password:"+email).Result()
	require.NoError(t, err)
	pending := e.Pending(t)
	require.Len(t, pending, 1)
	assert.Equal(t, "reset_password", pending[0].Purpose, "the worker learns the purpose")

	status, body, _ = e.post(t, "/v1/codes/verify", `{"email":"`+email+`","code":"`+code+`","purpose":"register"}`)
	assert.Equal(t, http.StatusGone, status)
	assert.Equal(t, "code_not_found", errCode(body), "a reset code does not complete a sign-up")
	status, body, _ = e.post(t, "/v1/codes/verify", `{"email":"`+email+`","code":"`+code+`"}`)
	assert.Equal(t, http.StatusGone, status)
	assert.Equal(t, "code_not_found", errCode(body), "nor the default purpose")

	req, err := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/codes/status?email="+email+"&purpose=reset_password", nil)
	require.NoError(t, err)
	status, body, _ = do(t, req)
	require.Equal(t, http.StatusOK, status, body)
	assert.Equal(t, delivery.StateQueued, body["state"])

	status, body, _ = e.post(t, "/v1/codes/verify", `{"email":"`+email+`","code":"`+code+`","purpose":"reset_password"}`)
	require.Equal(t, http.StatusOK, status, body)

	// The default purpose is stored as always.
	status, _, _ = e.post(t, "/v1/codes", `{"email":"`+email+`"}`)
	require.Equal(t, http.StatusAccepted, status)
	assert.Equal(t, e.Code(t, email), e.rdb.Get(ctx, "code_"+email).Val())

	for _, tc := range []struct{ method, path, body string }{
		{http.MethodPost, "/v1/codes", `{"email":"` + email + `","purpose":"launch_missiles"}`},
		{http.MethodPost, "/v1/codes/verify", `{"email":"` + email + `","code":"1","purpose":"Register"}`},
		{http.MethodGet, "/v1/codes/status?email=" + email + "&purpose=x:y", ""},
	} {
		var status int
		if tc.method == http.MethodPost {
			status, body, _ = e.post(t, tc.path, tc.body)
		} else {
			req, err := http.NewRequest(tc.method, e.srv.URL+tc.path, nil)
			require.NoError(t, err)
			status, body, _ = do(t, req)
		}
		assert.Equal(t, http.StatusBadRequest, status, tc.path)
		assert.Equal(t, "invalid_purpose", errCode(body), tc.path)
	}
	for _, q := range []string{"purpose=login", "email=" + email + "&purpose=login&purpose=login", "email=" + email + "&purpose=login&x=1"} {
		req, err := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/codes/status?"+q, nil)
		require.NoError(t, err)
		status, body, _ := do(t, req)
		assert.Equal(t, http.StatusBadRequest, status, q)
		assert.Equal(t, "invalid_query", errCode(body), q)
	}
}
