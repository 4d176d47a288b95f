package platform_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/logtest"
	"github.com/verifyq/verifyq/internal/platform"
)

func TestHostNamesDecode(t *testing.T) {
	t.Parallel()
	var got platform.HostNames
	require.NoError(t, got.Decode(" Ops.Example.com. ,10.0.0.1,::1,[2001:db8::1],my_host"))
	assert.Equal(t, platform.HostNames{"ops.example.com", "10.0.0.1", "::1", "2001:db8::1", "my_host"}, got)

	err := got.Decode("a.example:80,,http://a,a..b,a b," + string(make([]byte, 254)))
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	assert.Len(t, lines, 6, "every bad entry: %v", err)
	assert.Equal(t, platform.HostNames{"ops.example.com", "10.0.0.1", "::1", "2001:db8::1", "my_host"}, got, "unchanged on error")
}

func TestAdminHosts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		admin string
		extra []string
		host  string
		want  bool
	}{
		{"127.0.0.1:8081", nil, "127.0.0.1:8081", true},
		{"127.0.0.1:8081", nil, "localhost:8081", true},
		{"127.0.0.1:8081", nil, "localhost", true},
		{"127.0.0.1:8081", nil, "[::1]:8081", true},
		{"127.0.0.1:8081", nil, "[::1]", true},
		{":8081", nil, "192.0.2.10:8081", true}, // an IP literal is the admin's own origin
		{"127.0.0.1:8081", nil, "evil.example:8081", false},
		{"127.0.0.1:8081", nil, "", false},
		{"127.0.0.1:8081", nil, "sub.localhost:8081", false},
		{"admin.internal:8081", nil, "admin.internal:8081", true},
		{"admin.internal:8081", nil, "ADMIN.internal.:9000", true},
		{"admin.internal:8081", nil, "internal:8081", false},
		{":8081", []string{"ops.example.com"}, "ops.example.com", true},
		{":8081", []string{"ops.example.com"}, "x.ops.example.com", false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, platform.AdminHosts(tt.admin, tt.extra).Allows(tt.host), "%s %v Host %q", tt.admin, tt.extra, tt.host)
	}
}

func TestSameOrigin(t *testing.T) {
	t.Parallel()
	h := platform.SameOrigin(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	tests := []struct {
		name    string
		method  string
		headers map[string][]string
		want    int
	}{
		{"GET from anywhere", http.MethodGet, map[string][]string{"Sec-Fetch-Site": {"cross-site"}}, http.StatusNoContent},
		{"HEAD", http.MethodHead, nil, http.StatusNoContent},
		{"OPTIONS", http.MethodOptions, nil, http.StatusNoContent},
		{"POST same-origin", http.MethodPost, map[string][]string{"Sec-Fetch-Site": {"same-origin"}}, http.StatusNoContent},
		{"POST own Origin", http.MethodPost, map[string][]string{"Origin": {"http://admin.test:8081"}}, http.StatusNoContent},
		{"POST own Origin over TLS", http.MethodPost, map[string][]string{"Origin": {"https://admin.test:8081"}}, http.StatusNoContent},
		{"POST own Origin, host case", http.MethodPost, map[string][]string{"Origin": {"http://ADMIN.test:8081"}}, http.StatusNoContent},
		{"POST cross-site", http.MethodPost, map[string][]string{"Sec-Fetch-Site": {"cross-site"}, "Origin": {"http://admin.test:8081"}}, http.StatusForbidden},
		{"POST same-site", http.MethodPost, map[string][]string{"Sec-Fetch-Site": {"same-site"}}, http.StatusForbidden},
		{"POST two Sec-Fetch-Site", http.MethodPost, map[string][]string{"Sec-Fetch-Site": {"same-origin", "cross-site"}}, http.StatusForbidden},
		{"POST other Origin", http.MethodPost, map[string][]string{"Origin": {"http://evil.example"}}, http.StatusForbidden},
		{"POST other port", http.MethodPost, map[string][]string{"Origin": {"http://admin.test:8082"}}, http.StatusForbidden},
		{"POST no port", http.MethodPost, map[string][]string{"Origin": {"http://admin.test"}}, http.StatusForbidden},
		{"POST other scheme", http.MethodPost, map[string][]string{"Origin": {"ftp://admin.test:8081"}}, http.StatusForbidden},
		{"POST null", http.MethodPost, map[string][]string{"Origin": {"null"}}, http.StatusForbidden},
		{"POST userinfo", http.MethodPost, map[string][]string{"Origin": {"http://u@admin.test:8081"}}, http.StatusForbidden},
		{"POST nothing", http.MethodPost, nil, http.StatusForbidden},
		{"DELETE nothing", http.MethodDelete, nil, http.StatusForbidden},
		{"PUT other", http.MethodPut, map[string][]string{"Origin": {"http://evil.example"}}, http.StatusForbidden},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(tt.method, "http://admin.test:8081/monitoring/api/queues/mail:pause", nil)
		for k, v := range tt.headers {
			req.Header[k] = v
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		assert.Equal(t, tt.want, rec.Code, tt.name)
	}
}

func TestCheckHost(t *testing.T) {
	t.Parallel()
	h := platform.CheckHost(platform.AdminHosts("127.0.0.1:8081", nil),
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	for host, want := range map[string]int{
		"127.0.0.1:8081":    http.StatusNoContent,
		"localhost:8081":    http.StatusNoContent,
		"evil.example:8081": http.StatusMisdirectedRequest,
	} {
		req := httptest.NewRequest(http.MethodGet, "http://"+host+"/debug/pprof/", nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		assert.Equal(t, want, rec.Code, host)
	}
}

// Every request that may change state, and only such, leaves one audit
// record once answered: who (DASHBOARD_AUTH's user, or anonymous without
// credentials), the method, the path, the query with addresses masked, the
// source and the status. A request refused by the Host check or basic auth
// reached no admin handler and is not an action; no password and no full
// address is ever logged.
func TestAdminGuardAudits(t *testing.T) {
	t.Parallel()
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/silent":
		case "/refused":
			http.Error(w, "read-only", http.StatusForbidden)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	hosts := platform.AdminHosts("127.0.0.1:8081", nil)
	do := func(h http.Handler, method, target string, auth ...string) int {
		req := httptest.NewRequest(method, target, nil)
		req.Host = "127.0.0.1:8081"
		req.RemoteAddr = "192.0.2.7:40000"
		if len(auth) == 2 {
			req.SetBasicAuth(auth[0], auth[1])
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}

	logger, logs := logtest.New(t)
	guarded := platform.AdminGuard(hosts, platform.Credentials{User: "ops", Password: "s3cret-pw"}, logger)(handler)
	assert.Equal(t, http.StatusNoContent, do(guarded, http.MethodPost, "/monitoring/api/queues/mail:pause", "ops", "s3cret-pw"))
	assert.Equal(t, http.StatusOK, do(guarded, http.MethodDelete, "/silent?email=Bob.Smith@example.com&x=1", "ops", "s3cret-pw"))
	assert.Equal(t, http.StatusForbidden, do(guarded, http.MethodDelete, "/refused", "ops", "s3cret-pw"))
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodOptions} {
		do(guarded, m, "/monitoring/api/queues", "ops", "s3cret-pw")
	}
	assert.Equal(t, http.StatusUnauthorized, do(guarded, http.MethodPost, "/monitoring/api/queues/mail:pause", "ops", "wrong-pw"))
	recs := logs.Matching(t, platform.AuditMessage)
	require.Len(t, recs, 3, "one record per state-changing request that got through: %s", logs.String())
	assert.Equal(t, map[string]any{"level": "INFO", "msg": "admin action", "audit": true, "user": "ops", "method": "POST",
		"path": "/monitoring/api/queues/mail:pause", "remote": "192.0.2.7:40000", "status": 204.0}, without(recs[0], "time"))
	assert.Equal(t, map[string]any{"email": []any{"B***@example.com"}, "x": []any{"1"}}, recs[1]["query"])
	assert.Equal(t, 200.0, recs[1]["status"], "a handler that writes nothing answers 200")
	assert.Equal(t, 403.0, recs[2]["status"])
	assert.NotContains(t, logs.String(), "s3cret-pw")
	assert.NotContains(t, logs.String(), "wrong-pw")
	assert.NotContains(t, logs.String(), "Bob.Smith")

	logger, logs = logtest.New(t)
	open := platform.AdminGuard(hosts, platform.Credentials{}, logger)(handler)
	assert.Equal(t, http.StatusNoContent, do(open, http.MethodDelete, "/suppressions?id=abc"))
	assert.Equal(t, http.StatusNoContent, do(open, http.MethodPost, "/x", "forged", "claim"), "no credentials asked")
	recs = logs.Matching(t, platform.AuditMessage)
	require.Len(t, recs, 2)
	for _, r := range recs {
		assert.Equal(t, platform.Anonymous, r["user"], "without DASHBOARD_AUTH nobody is named, whatever a request claims")
	}
}

// without returns m without keys.
func without(m map[string]any, keys ...string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	for _, k := range keys {
		delete(out, k)
	}
	return out
}
