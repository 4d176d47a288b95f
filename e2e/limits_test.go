package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/internal/smtptest"
)

func TestResendCooldownEndToEnd(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{"RESEND_COOLDOWN": "2s", "MAILBOX_GAP": "0"})
	const email = "cool@example.com"

	status, body := s.post(t, "/v1/codes", map[string]string{"email": email})
	require.Equal(t, http.StatusAccepted, status, body)
	assert.EqualValues(t, 2, body["resend_after"])
	code, _ := s.code(t, email)

	res, err := http.Post("http://"+s.api+"/v1/codes", "application/json", strings.NewReader(`{"email":"`+email+`"}`))
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusTooManyRequests, res.StatusCode)
	after, err := strconv.Atoi(res.Header.Get("Retry-After"))
	require.NoError(t, err)
	assert.InDelta(t, 2, after, 1)

	time.Sleep(time.Duration(after) * time.Second)
	status, body = s.post(t, "/v1/codes", map[string]string{"email": email})
	require.Equal(t, http.StatusAccepted, status, body)
	again, _ := s.code(t, email)
	assert.Equal(t, code, again)
	msgs := s.smtp.WaitMessages(t, 2, 10*time.Second)
	assert.Contains(t, msgs[1].Text, code, "the resend carries the same code")
	assert.Equal(t, 2, s.smtp.Count(), "the refused request mailed nothing")
}

// redisValues returns every key in Redis, with its type and value as text.
func (s *stack) redisValues(t *testing.T) map[string]string {
	t.Helper()
	ctx := context.Background()
	rdb := s.redis.UniversalClient(t)
	keys := redistest.Keys(ctx, t, rdb, "*")
	out := map[string]string{}
	for _, k := range keys {
		typ, err := rdb.Type(ctx, k).Result()
		require.NoError(t, err)
		var v any
		switch typ {
		case "string":
			v, err = rdb.Get(ctx, k).Result()
		case "hash":
			v, err = rdb.HGetAll(ctx, k).Result()
		case "list":
			v, err = rdb.LRange(ctx, k, 0, -1).Result()
		case "set":
			v, err = rdb.SMembers(ctx, k).Result()
		case "zset":
			v, err = rdb.ZRangeWithScores(ctx, k, 0, -1).Result()
		}
		require.NoError(t, err)
		out[k] = fmt.Sprintf("%s %v", typ, v)
	}
	return out
}

// dumpRedis returns every key and value in Redis as text, the code keys
// too when withCodes.
func (s *stack) dumpRedis(t *testing.T, withCodes bool) string {
	t.Helper()
	var b strings.Builder
	for k, v := range s.redisValues(t) {
		if withCodes || !strings.HasPrefix(k, "code_") {
			fmt.Fprintf(&b, "%s %s\n", k, v)
		}
	}
	return b.String()
}

// A full run, failures and retries included, leaves no code anywhere but in
// the code key and the mail: not in a log line, a task payload, a task's
// last error, or any other Redis value.
func TestNoCodeLeaks(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{"CODE_LENGTH": longCodes})
	s.smtp.SetFault(smtptest.Fault{Stage: smtptest.StageData, Code: 451})

	emails := []string{"leak1@example.com", "Leak2@Example.com"}
	var codes []string
	for _, e := range emails {
		status, body := s.post(t, "/v1/codes", map[string]string{"email": e})
		require.Equal(t, http.StatusAccepted, status, body)
		c, _ := s.code(t, e)
		codes = append(codes, c)
	}
	// Wait until both tasks failed at least once: their payloads and
	// errors now sit in Redis.
	require.Eventually(t, func() bool {
		return strings.Count(s.worker.logs.String(), "will retry") >= 2
	}, 10*time.Second, 50*time.Millisecond)
	dump := s.dumpRedis(t, false)
	assert.Contains(t, dump, "asynq", "the dump holds the queue")
	assert.Contains(t, dump, "verifyq:{m:", "and the limits")
	for _, c := range codes {
		assert.NotContains(t, dump, c, "no code in any Redis value but the code key")
	}
	// Only the code and status keys, the queue's task payloads (the
	// worker must know whom to mail) and, while the sends are open, the
	// index of open sends (the reconciler must find their status) hold an
	// address.
	assert.Contains(t, dump, "verifyq:{open:", "the sends are open")
	for k, v := range s.redisValues(t) {
		if strings.HasPrefix(k, "code_") || strings.HasPrefix(k, "asynq:{mail}:t:") || strings.HasSuffix(k, "}:status") ||
			strings.HasPrefix(k, "verifyq:{open:") {
			continue
		}
		for _, e := range emails {
			assert.NotContains(t, strings.ToLower(k+" "+v), strings.ToLower(e), "no address in %s", k)
		}
	}

	s.smtp.ClearFault()
	s.smtp.WaitMessages(t, 2, 20*time.Second)
	// Verify one, so the verify path is logged too; fail another.
	status, _ := s.post(t, "/v1/codes/verify", map[string]string{"email": emails[0], "code": codes[0]})
	assert.Equal(t, http.StatusOK, status)
	status, _ = s.post(t, "/v1/codes/verify", map[string]string{"email": emails[1], "code": "x"})
	assert.Equal(t, http.StatusUnprocessableEntity, status)

	s.worker.stop(t)
	s.enqueuer.stop(t)
	for _, p := range []*proc{s.enqueuer, s.worker} {
		logs := p.logs.String()
		for i, c := range codes {
			assert.NotContains(t, logs, c)
			assert.NotContains(t, logs, emails[i])
		}
	}
}
