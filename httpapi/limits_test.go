package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/servicetest"
	"github.com/verifyq/verifyq/limits"
)

func TestResendCooldown(t *testing.T) {
	t.Parallel()
	e := newLimitedEnv(t, limits.Config{Cooldown: time.Minute}, 0, nil)
	ctx := context.Background()

	status, body, _ := e.post(t, "/v1/codes", `{"email":"c@example.com"}`)
	require.Equal(t, http.StatusAccepted, status)
	assert.EqualValues(t, 60, body["resend_after"])
	code, err := e.rdb.Get(ctx, "code_c@example.com").Result()
	require.NoError(t, err)

	status, body, hdr := e.post(t, "/v1/codes", `{"email":"C@example.com"}`)
	assert.Equal(t, http.StatusTooManyRequests, status, "case variants share the cooldown")
	assert.Equal(t, "rate_limited", errCode(body))
	after, err := strconv.Atoi(hdr.Get("Retry-After"))
	require.NoError(t, err)
	assert.InDelta(t, 60, after, 2)
	assert.Len(t, e.Pending(t), 1, "nothing enqueued for the refused request")

	// Once the cooldown is over: 202, the same code.
	servicetest.EndCooldowns(ctx, t, e.rdb, delivery.MailboxID("c@example.com"), time.Minute)
	status, _, _ = e.post(t, "/v1/codes", `{"email":"c@example.com"}`)
	assert.Equal(t, http.StatusAccepted, status)
	again, err := e.rdb.Get(ctx, "code_c@example.com").Result()
	require.NoError(t, err)
	assert.Equal(t, code, again)
	assert.Len(t, e.Pending(t), 2)
}

func TestClientCapFollowsTrustedForwardedFor(t *testing.T) {
	t.Parallel()
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	e := newLimitedEnv(t, limits.Config{ClientPerHour: 2}, 0, loopback)

	send := func(i int, xff string) int {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/codes", strings.NewReader(fmt.Sprintf(`{"email":"u%d@example.com"}`, i)))
		req.Header.Set("Content-Type", "application/json")
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		status, _, _ := do(t, req)
		return status
	}
	assert.Equal(t, http.StatusAccepted, send(1, "203.0.113.5"))
	assert.Equal(t, http.StatusAccepted, send(2, "198.51.100.1, 203.0.113.5"), "the rightmost untrusted hop is the client")
	assert.Equal(t, http.StatusTooManyRequests, send(3, "203.0.113.5, 127.0.0.9"), "trusted hops are skipped")
	assert.Equal(t, http.StatusAccepted, send(4, "203.0.113.6"), "another client")
	for i := range 5 {
		assert.Equal(t, http.StatusAccepted, send(10+i, ""), "the gateway itself is never limited as one user")
	}
}

// A caller that is no trusted proxy is the client itself: it gets the
// per-client limits by its own address, and a forwarding header it sends
// changes nothing. So with TRUSTED_PROXIES set to the gateway's network
// and with nothing trusted.
func TestDirectCallerIsLimitedByItsPeer(t *testing.T) {
	t.Parallel()
	for name, trusted := range map[string][]netip.Prefix{
		"TRUSTED_PROXIES elsewhere": {netip.MustParsePrefix("10.0.0.0/8")},
		"nothing trusted":           nil,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newLimitedEnv(t, limits.Config{ClientPerHour: 2, ClientVerifiesPerHour: 2}, 0, trusted)
			call := func(path, body, xff string) (int, http.Header) {
				req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				if xff != "" {
					req.Header.Set("X-Forwarded-For", xff)
				}
				status, _, h := do(t, req)
				return status, h
			}
			for i := range 2 {
				status, _ := call("/v1/codes", fmt.Sprintf(`{"email":"x%d@example.com"}`, i), "")
				assert.Equal(t, http.StatusAccepted, status)
			}
			for i, xff := range []string{"", "203.0.113.5", "198.51.100.1, 203.0.113.6"} {
				status, h := call("/v1/codes", fmt.Sprintf(`{"email":"y%d@example.com"}`, i), xff)
				assert.Equal(t, http.StatusTooManyRequests, status, "the peer's own cap, header %q", xff)
				assert.NotEmpty(t, h.Get("Retry-After"))
			}
			for range 2 {
				status, _ := call("/v1/codes/verify", `{"email":"x0@example.com","code":"000000"}`, "")
				assert.NotEqual(t, http.StatusTooManyRequests, status)
			}
			status, _ := call("/v1/codes/verify", `{"email":"x0@example.com","code":"000000"}`, "203.0.113.7")
			assert.Equal(t, http.StatusTooManyRequests, status, "verifies too")
			n, err := e.rdb.ZCard(context.Background(), limits.ClientKey("127.0.0.1")).Result()
			require.NoError(t, err)
			assert.EqualValues(t, 2, n, "counted under the peer's address")
		})
	}
}

// When the cooldown and the hourly cap both refuse, Retry-After is the
// cap's wait (about an hour), not the cooldown's.
func TestRetryAfterIsTheLongestLimit(t *testing.T) {
	t.Parallel()
	e := newLimitedEnv(t, limits.Config{Cooldown: time.Minute, AddressPerHour: 1}, 0, nil)
	status, _, _ := e.post(t, "/v1/codes", `{"email":"both@example.com"}`)
	require.Equal(t, http.StatusAccepted, status)
	status, body, h := e.post(t, "/v1/codes", `{"email":"both@example.com"}`)
	require.Equal(t, http.StatusTooManyRequests, status)
	assert.Equal(t, "rate_limited", errCode(body))
	secs, err := strconv.Atoi(h.Get("Retry-After"))
	require.NoError(t, err)
	assert.Greater(t, secs, 60, "more than the cooldown")
	assert.LessOrEqual(t, secs, 3600)
}

func TestVerifyAttemptLimit(t *testing.T) {
	t.Parallel()
	e := newLimitedEnv(t, limits.Config{}, 2, nil)
	status, _, _ := e.post(t, "/v1/codes", `{"email":"g@example.com"}`)
	require.Equal(t, http.StatusAccepted, status)
	code, err := e.rdb.Get(context.Background(), "code_g@example.com").Result()
	require.NoError(t, err)
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	status, body, _ := e.post(t, "/v1/codes/verify", `{"email":"g@example.com","code":"`+wrong+`"}`)
	assert.Equal(t, http.StatusUnprocessableEntity, status)
	assert.Equal(t, "code_mismatch", errCode(body))
	status, body, _ = e.post(t, "/v1/codes/verify", `{"email":"g@example.com","code":"`+wrong+`"}`)
	assert.Equal(t, http.StatusUnprocessableEntity, status)
	assert.Equal(t, "attempts_exhausted", errCode(body))
	status, body, _ = e.post(t, "/v1/codes/verify", `{"email":"g@example.com","code":"`+code+`"}`)
	assert.Equal(t, http.StatusGone, status, "the right code no longer verifies")
	assert.Equal(t, "code_not_found", errCode(body))
}
