//go:build mta

package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/mtatest"
	"github.com/verifyq/verifyq/internal/smtptest"
)

// The worker with two real relays (SMTP_URL and SMTP_FALLBACK_URL): a real
// Postfix and the in-process SMTP server, each in turn the one that fails.

// fallbackBound bounds the time from a request to a relay taking its mail
// while the primary fails: seconds, not the minutes of a retry schedule.
const fallbackBound = 10 * time.Second

// mailboxes are n local parts, u0 to u<n-1>.
func mailboxes(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("u%d", i)
	}
	return out
}

// sentThrough waits until email's status is sent, checks that relay took
// it within fallbackBound of the request, and returns its status.
func (s *stack) sentThrough(t *testing.T, email, relay string) map[string]any {
	t.Helper()
	st := s.waitState(t, email, "sent", "")
	assert.Equal(t, relay, st["relay"], "%s: the relay that took it", email)
	after, _ := st["sent_after_ms"].(float64)
	assert.Positive(t, after, "%s: request to acceptance", email)
	assert.Less(t, after, float64(fallbackBound.Milliseconds()), "%s: within seconds", email)
	return st
}

// With the primary relay (the in-process server) refusing connections,
// every mail goes through the fallback, a real Postfix, within seconds of
// its request; the worker stays ready, naming both relays' states. Once
// the primary is back the mails go to it again. No send is mailed twice:
// each address's messages are counted at both relays.
func TestMTAFallbackWhilePrimaryDown(t *testing.T) {
	boxes := mailboxes(40)
	p := mtatest.Start(t, mtatest.Options{Mailboxes: boxes})
	primary := smtptest.Start(t)
	require.NoError(t, primary.Stop())
	s := startOnPostfix(t, map[string]string{
		"SMTP_URL":          smtpURL(primary.Host(), primary.Port(), "2s"),
		"SMTP_FALLBACK_URL": relayURL(p, ""),
	})

	var sent []string
	post := func() string {
		t.Helper()
		email := p.Address(boxes[len(sent)])
		sent = append(sent, email)
		status, body := s.post(t, "/v1/codes", map[string]string{"email": email})
		require.Equal(t, http.StatusAccepted, status, body)
		return email
	}
	var afters []float64
	for range 6 {
		email := post()
		st := s.sentThrough(t, email, "fallback")
		afters = append(afters, st["sent_after_ms"].(float64))
		p.WaitMail(t, email, 20*time.Second)
	}
	t.Logf("request to the fallback's acceptance with the primary down: %v ms", afters)

	code, body := s.workerReady(t)
	assert.Equal(t, http.StatusOK, code, "the fallback takes mail: ready")
	assert.Contains(t, body, "primary: open (smtp relay failing: ")
	assert.Contains(t, body, "; fallback: closed")
	assert.Equal(t, 1.0, metric(t, s.wrkAdmin, "verifyq_smtp_breaker_open", map[string]string{"relay": "primary"}))
	assert.Zero(t, metric(t, s.wrkAdmin, "verifyq_smtp_breaker_open", map[string]string{"relay": "fallback"}))
	assert.Equal(t, 6.0, metric(t, s.wrkAdmin, "verifyq_delivery_latency_seconds", map[string]string{"relay": "fallback"}))
	assert.Contains(t, s.worker.logs.String(), "sends go through the fallback relay while the ones before it fail")

	require.NoError(t, primary.Restart())
	back := time.Now()
	require.Eventually(t, func() bool {
		post()
		return primary.Count() > 0
	}, 20*time.Second, 300*time.Millisecond, "the mails go back to the primary")
	t.Logf("first mail at the primary %s after it came back", time.Since(back).Round(time.Millisecond))
	last := post()
	s.sentThrough(t, last, "primary")
	assert.Contains(t, s.worker.logs.String(), "sends go through the primary relay again")
	code, body = s.workerReady(t)
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "primary: closed; fallback: closed")

	// Every send is sent, once, at one relay or the other.
	atFallback := 0
	for _, email := range sent {
		if s.waitState(t, email, "sent", "")["relay"] == "fallback" {
			atFallback++
		}
	}
	require.Eventually(t, func() bool { return len(p.Mails(t)) == atFallback }, 20*time.Second, 50*time.Millisecond,
		"Postfix delivered what it accepted")
	time.Sleep(time.Second) // a second copy would have come by now
	perAddress := map[string]int{}
	for _, m := range p.Mails(t) {
		perAddress[p.Address(m.Mailbox)]++
	}
	for _, m := range primary.Messages() {
		for _, to := range m.To {
			perAddress[to]++
		}
	}
	for _, email := range sent {
		assert.Equal(t, 1, perAddress[email], "%s: mailed once", email)
	}
	assert.Len(t, perAddress, len(sent), "nothing else mailed")
	cleanSessions(t, p)
}

// With the primary relay, a real Postfix, refusing verifyq's password
// (relay_refused), each mail goes through the fallback in its first
// attempt; Postfix has nothing, nobody is suppressed, the password is
// never logged.
func TestMTAFallbackWhenPostfixRefusesThePassword(t *testing.T) {
	p := mtatest.Start(t, mtatest.Options{Users: map[string]string{"verifyq": "right-password"}})
	fallback := smtptest.Start(t)
	s := startOnPostfix(t, map[string]string{
		"SMTP_URL":          relayURL(p, "verifyq:wrong-password"),
		"SMTP_FALLBACK_URL": smtpURL(fallback.Host(), fallback.Port(), "2s"),
	})
	to := []string{p.Address("alice"), p.Address("bob")}
	for _, email := range to {
		status, body := s.post(t, "/v1/codes", map[string]string{"email": email})
		require.Equal(t, http.StatusAccepted, status, body)
	}
	for _, email := range to {
		st := s.sentThrough(t, email, "fallback")
		assert.EqualValues(t, 1, st["attempts"], "%s: failed over within its first attempt", email)
	}
	msgs := fallback.WaitMessages(t, len(to), 10*time.Second)
	time.Sleep(time.Second) // a second copy would have come by now
	var got []string
	for _, m := range fallback.Messages() {
		got = append(got, m.To...)
	}
	slices.Sort(got)
	assert.Equal(t, to, got, "each mailed once, by the fallback: %d messages", len(msgs))
	assert.Empty(t, p.Mails(t), "Postfix took nothing")
	assert.Empty(t, s.suppressed(t), "nobody suppressed")

	logs := s.worker.logs.String()
	assert.Contains(t, logs, "the SMTP relay refuses verifyq's mail")
	assert.Contains(t, logs, "the primary relay did not take the mail: sending it through the fallback relay")
	assert.NotContains(t, logs, "wrong-password")
	assert.NotContains(t, logs, "right-password")
	code, body := s.workerReady(t)
	assert.Equal(t, http.StatusOK, code)
	assert.True(t, strings.HasPrefix(body, "ok\nprimary: open (smtp relay failing: "), body)
	refusals := metric(t, s.wrkAdmin, "verifyq_smtp_failures_total", map[string]string{"relay": "primary", "class": "relay_refused"})
	assert.GreaterOrEqual(t, refusals, 1.0)
	assert.LessOrEqual(t, refusals, float64(len(to)), "the breaker opened at the first refusal: the sends after it go straight to the fallback")
	cleanSessions(t, p)
}
