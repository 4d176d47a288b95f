package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/metadata"

	"github.com/verifyq/verifyq/internal/grpctest"
	"github.com/verifyq/verifyq/internal/redistest"
)

// postFrom sends a code request over HTTP with an X-Forwarded-For header.
func (s *stack) postFrom(t *testing.T, email, forwardedFor string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+s.api+"/v1/codes", bytes.NewReader([]byte(`{"email":"`+email+`"}`)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if forwardedFor != "" {
		req.Header.Set("X-Forwarded-For", forwardedFor)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = res.Body.Close()
	return res.StatusCode
}

// legacyFrom sends the old gateway's call with x-forwarded-for metadata.
func (s *stack) legacyFrom(t *testing.T, email, forwardedFor string) int32 {
	t.Helper()
	ctx := context.Background()
	if forwardedFor != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-forwarded-for", forwardedFor)
	}
	rsp, err := grpctest.GetVarifyCode(ctx, t, grpctest.Dial(t, s.grpc), email)
	require.NoError(t, err)
	return rsp.Error
}

// Tags and case do not multiply the per-address cap, over either edge: 20
// sends to victim+N mail the mailbox ADDRESS_SENDS_PER_HOUR times. The
// Kelvin-sign look-alike of kim@ is refused and uses none of kim's limits.
func TestMailboxLimitsEndToEnd(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{"RESEND_COOLDOWN": "0", "MAILBOX_GAP": "0", "ADDRESS_SENDS_PER_HOUR": "5"})
	admitted := 0
	for i := 1; i <= 20; i++ {
		email := fmt.Sprintf("victim+%d@example.com", i)
		if i%3 == 0 {
			email = strings.ToUpper(email)
		}
		if i%2 == 0 {
			if s.legacyFrom(t, email, "") == 0 {
				admitted++
			}
		} else if s.postFrom(t, email, "") == http.StatusAccepted {
			admitted++
		}
	}
	assert.Equal(t, 5, admitted)
	s.smtp.WaitMessages(t, 5, 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	assert.Equal(t, 5, s.smtp.Count(), "one mailbox, five mails")

	k := startStack(t, nil) // the default cooldown of 60 s
	assert.Equal(t, http.StatusBadRequest, k.postFrom(t, "\u212Aim@example.com", ""), "the Kelvin sign")
	assert.Equal(t, int32(3), k.legacyFrom(t, "\u212Aim@example.com", ""))
	assert.Equal(t, http.StatusAccepted, k.postFrom(t, "kim@example.com", ""), "kim's cooldown is untouched")
	assert.Equal(t, http.StatusAccepted, k.postFrom(t, "bob@bücher.de", ""))
	assert.Equal(t, http.StatusTooManyRequests, k.postFrom(t, "Bob@xn--bcher-kva.de", ""), "a Unicode domain and its A-label are one mailbox")
	msgs := k.smtp.WaitMessages(t, 2, 10*time.Second)
	var to []string
	for _, m := range msgs {
		to = append(to, m.To...)
	}
	assert.ElementsMatch(t, []string{"kim@example.com", "bob@xn--bcher-kva.de"}, to, "the IDN domain goes out as its A-label")
}

// One client-identity rule on both edges: with the gateway trusted, its
// forwarded address is the client on HTTP and gRPC alike, with or without
// a port; from a caller that is no trusted proxy, spoofed metadata is not
// believed: the caller is the client, by its own address.
func TestClientIdentityEndToEnd(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{
		"TRUSTED_PROXIES": "127.0.0.1/32", "CLIENT_SENDS_PER_HOUR": "3", "RESEND_COOLDOWN": "0", "MAILBOX_GAP": "0",
	})
	assert.Equal(t, http.StatusAccepted, s.postFrom(t, "a@example.com", "1.2.3.4"))
	assert.Equal(t, int32(0), s.legacyFrom(t, "b@example.com", "1.2.3.4:5555"))
	assert.Equal(t, http.StatusAccepted, s.postFrom(t, "c@example.com", "9.9.9.9, 1.2.3.4"))
	assert.Equal(t, http.StatusTooManyRequests, s.postFrom(t, "d@example.com", "1.2.3.4"), "the 4th send, HTTP")
	assert.Equal(t, int32(4), s.legacyFrom(t, "d@example.com", "1.2.3.4:6666"), "the 4th send, gRPC")
	assert.Equal(t, int32(0), s.legacyFrom(t, "d@example.com", "5.6.7.8"), "another client")

	direct := startStack(t, map[string]string{"TRUSTED_PROXIES": "", "CLIENT_SENDS_PER_HOUR": "1", "RESEND_COOLDOWN": "0", "MAILBOX_GAP": "0"})
	for i := range 5 {
		want := int32(4)
		if i == 0 {
			want = 0
		}
		assert.Equal(t, want, direct.legacyFrom(t, fmt.Sprintf("u%d@example.com", i), fmt.Sprintf("10.0.0.%d", i)))
	}
	assert.Equal(t, http.StatusTooManyRequests, direct.postFrom(t, "v@example.com", "10.0.0.9"), "HTTP alike")
	keys := redistest.Keys(context.Background(), t, direct.redis.UniversalClient(t), "verifyq:{c:*")
	assert.Equal(t, []string{"verifyq:{c:127.0.0.1}:sends"}, keys, "one bucket, the peer's: nothing from what a caller claims")
}

// A failed enqueue costs the user nothing. The enqueuer's Redis user may not
// write asynq:* keys, so the task cannot be queued: 503. With access
// restored, an immediate retry (inside the 60 s cooldown) is admitted and
// mailed once.
func TestFailedEnqueueCostsNothing(t *testing.T) {
	t.Parallel()
	singleOnly(t)
	s := startStack(t, nil)
	admin := s.redis.UniversalClient(t)
	ctx := context.Background()
	require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", "gate", "reset", "on", ">gate-pass", "+@all",
		"~code_*", "~{code_*", "~verifyq:*", "%R~asynq:*").Err())
	gate := s.redis.URL()
	gate = strings.Replace(gate, "redis://", "redis://gate:gate-pass@", 1)
	env := map[string]string{}
	for k, v := range s.enqEnv {
		env[k] = v
	}
	env["REDIS_URL"] = gate
	s.enqueuer.stop(t)
	s.startEnqueuer(t, env)

	status, body := s.post(t, "/v1/codes", map[string]string{"email": "retry@example.com"})
	require.Equal(t, http.StatusServiceUnavailable, status, body)
	assert.Zero(t, s.smtp.Count())

	require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", "gate", "~*").Err())
	status, body = s.post(t, "/v1/codes", map[string]string{"email": "retry@example.com"})
	require.Equal(t, http.StatusAccepted, status, "the retry is admitted: %v", body)
	msgs := s.smtp.WaitMessages(t, 1, 10*time.Second)
	code, _ := s.code(t, "retry@example.com")
	assert.Contains(t, msgs[0].Text, code)
	time.Sleep(time.Second)
	assert.Equal(t, 1, s.smtp.Count(), "exactly one mail")
}

// The old desktop client re-enables "get code" after 10 s, inside the
// cooldown: the resend answers error 0 and mails nothing new, since the code
// is on its way; after the cooldown a resend mails the same code again.
// (The cooldown is 6 s here, the resend 1 s after the first mail, for the
// test's speed: the first mail may take some seconds on a loaded machine,
// and the resend must still fall inside the cooldown.)
func TestLegacyResendEndToEnd(t *testing.T) {
	t.Parallel()
	const cooldown = 6 * time.Second
	s := startStack(t, map[string]string{"RESEND_COOLDOWN": cooldown.String(), "MAILBOX_GAP": "0"})
	require.Equal(t, int32(0), s.legacyFrom(t, "old@example.com", ""))
	answered := time.Now() // the cooldown ends before answered+cooldown
	s.smtp.WaitMessages(t, 1, 10*time.Second)
	time.Sleep(time.Second)
	assert.Equal(t, int32(0), s.legacyFrom(t, "old@example.com", ""), "a resend inside the cooldown: success")
	time.Sleep(500 * time.Millisecond)
	assert.Equal(t, 1, s.smtp.Count(), "and no new mail")

	time.Sleep(time.Until(answered.Add(cooldown + 500*time.Millisecond)))
	assert.Equal(t, int32(0), s.legacyFrom(t, "old@example.com", ""))
	msgs := s.smtp.WaitMessages(t, 2, 10*time.Second)
	code, _ := s.code(t, "old@example.com")
	assert.Contains(t, msgs[0].Text, code)
	assert.Contains(t, msgs[1].Text, code, "the same code again")
}
