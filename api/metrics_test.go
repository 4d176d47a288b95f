package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/api"
	"github.com/verifyq/verifyq/internal/metrics"
)

type observed struct{ api, route, outcome string }

// observer is a hand-written api.RequestObserver.
type observer struct {
	mu   sync.Mutex
	seen []observed
}

func (o *observer) ObserveRequest(apiName, route, outcome string, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if d <= 0 {
		panic("no duration")
	}
	o.seen = append(o.seen, observed{apiName, route, outcome})
}

func (o *observer) all() []observed {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]observed(nil), o.seen...)
}

func TestOutcome(t *testing.T) {
	t.Parallel()
	tests := map[int]string{
		200: "ok", 202: "ok",
		400: "invalid", 404: "invalid", 405: "invalid", 413: "invalid", 415: "invalid",
		410: "not_found", 422: "mismatch", 429: "rate_limited", 503: "unavailable",
		500: "error", 502: "error",
	}
	for status, want := range tests {
		got := api.Outcome(status)
		assert.Equal(t, want, got, "status %d", status)
		assert.Contains(t, metrics.Outcomes, got, "a known outcome")
	}
}

func TestInstrument(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	obs := &observer{}
	srv := httptest.NewServer(api.Instrument(e.srv.Config.Handler, obs))
	t.Cleanup(srv.Close)

	post := func(path, body string) {
		res, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		res.Body.Close()
	}
	post("/v1/codes", `{"email":"i@example.com"}`)
	post("/v1/codes", `{"email":"not an address"}`)
	post("/v1/codes/verify", `{"email":"nobody@example.com","code":"123456"}`)
	post("/v1/codes/i@example.com", `{}`)
	res, err := http.Get(srv.URL + "/v1/codes")
	require.NoError(t, err)
	res.Body.Close()
	e.redis.Stop()
	post("/v1/codes", `{"email":"i@example.com"}`)

	assert.Equal(t, []observed{
		{"http", "/v1/codes", "ok"},
		{"http", "/v1/codes", "invalid"},
		{"http", "/v1/codes/verify", "not_found"},
		{"http", "other", "invalid"},
		{"http", "/v1/codes", "invalid"},
		{"http", "/v1/codes", "unavailable"},
	}, obs.all())
}
