//go:build mta

package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/mtatest"
)

// The whole service against a real Postfix (internal/mtatest): what the
// relay says decides what happens to each send and to the suppression
// list, as docs/API.md's last_failure table says.

// relayURL is the worker's SMTP_URL for p's submission port with STARTTLS,
// p's CA and the login user:pass ("" for none).
func relayURL(p *mtatest.Postfix, login string) string {
	u := url.URL{Scheme: "smtp", Host: p.SubmissionAddr(), RawQuery: url.Values{
		"tls": {"starttls"}, "ca_file": {p.CAFile()}, "server_name": {p.ServerName()}, "timeout": {"5s"},
	}.Encode()}
	if user, pass, ok := strings.Cut(login, ":"); ok {
		u.User = url.UserPassword(user, pass)
	}
	return u.String()
}

// startOnPostfix runs the stack with the worker sending through p as
// wrkEnv says (SMTP_URL, MAIL_FROM), and every limit that would refuse a
// second send to one mailbox off.
func startOnPostfix(t *testing.T, wrkEnv map[string]string) *stack {
	t.Helper()
	extra := map[string]string{"RESEND_COOLDOWN": "0", "MAILBOX_GAP": "0", "ADDRESS_SENDS_PER_HOUR": "0", "SMTP_HELO_NAME": "mail.verifyq.test"}
	for k, v := range wrkEnv {
		extra[k] = v
	}
	return startStack(t, extra)
}

// restartWorker stops the stack's worker and starts it again with the
// variables of change: an operator fixing the configuration.
func (s *stack) restartWorker(t *testing.T, change map[string]string) {
	t.Helper()
	s.worker.stop(t)
	env := map[string]string{}
	for k, v := range s.wrkEnv {
		env[k] = v
	}
	for k, v := range change {
		env[k] = v
	}
	s.startWorker(t, env)
}

// waitState waits until email's status is state with last_failure failure
// ("" for any) and has every field of with, and returns it.
func (s *stack) waitState(t *testing.T, email, state, failure string, with ...string) map[string]any {
	t.Helper()
	var st map[string]any
	require.Eventually(t, func() bool {
		st = s.statusOf(t, email)
		for _, f := range with {
			if _, ok := st[f]; !ok {
				return false
			}
		}
		return st["state"] == state && (failure == "" || st["last_failure"] == failure)
	}, 20*time.Second, 50*time.Millisecond, "%s: want %s %s with %v, last %v", email, state, failure, with, st)
	return st
}

// suppressed is the enqueuer's suppression list.
func (s *stack) suppressed(t *testing.T) []any {
	t.Helper()
	res, err := http.Get("http://" + s.enqAdmin + "/suppressions")
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	var body struct {
		Suppressions []any `json:"suppressions"`
	}
	require.NoError(t, json.NewDecoder(res.Body).Decode(&body))
	return body.Suppressions
}

// workerReady is the worker's /readyz status and body.
func (s *stack) workerReady(t *testing.T) (int, string) {
	t.Helper()
	res, err := http.Get("http://" + s.wrkAdmin + "/readyz")
	require.NoError(t, err)
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// workerMetric is the value of a metric line of the worker, e.g.
// `verifyq_smtp_breaker_opened_total{relay="primary"}`.
func (s *stack) workerMetric(t *testing.T, series string) float64 {
	t.Helper()
	res, err := http.Get("http://" + s.wrkAdmin + "/metrics")
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err)
			return f
		}
	}
	t.Fatalf("no series %s", series)
	return 0
}

// cleanSessions fails t when Postfix logged a session of verifyq's that
// ended badly: dropped without QUIT, or a command Postfix took for none.
func cleanSessions(t *testing.T, p *mtatest.Postfix) {
	t.Helper()
	for _, line := range p.Log() {
		assert.NotContains(t, line, "lost connection after")
		assert.NotContains(t, line, "non-SMTP command")
	}
}

// The relay refusing verifyq's own mail (a wrong password, a sender the
// login may not use, a sending quota) suppresses nobody: the sends wait,
// retrying, with the worker not ready and the breaker open, and once the
// operator fixes the configuration every send queued meanwhile is
// delivered, once.
func TestMTARelayRefusalsSuppressNobody(t *testing.T) {
	tests := []struct {
		name       string
		opts       mtatest.Options
		broken     map[string]string
		fixed      map[string]string
		refusedHow string // in the worker's log
	}{
		{
			name:   "wrong password",
			opts:   mtatest.Options{Users: map[string]string{"verifyq": "right-password"}},
			broken: map[string]string{"SMTP_URL": "verifyq:wrong-password"},
			fixed:  map[string]string{"SMTP_URL": "verifyq:right-password"},
		},
		{
			name: "sender not owned by the login",
			opts: mtatest.Options{
				Users: map[string]string{"verifyq": "pw"},
				// A bare login authenticates in the realm of Postfix's domain.
				SenderOwners: map[string]string{"no-reply@verifyq.test": "someone-else", "codes@verifyq.test": "verifyq@" + mtatest.DefaultDomain},
			},
			broken: map[string]string{"SMTP_URL": "verifyq:pw", "MAIL_FROM": "no-reply@verifyq.test"},
			fixed:  map[string]string{"MAIL_FROM": "codes@verifyq.test"},
		},
		{
			name:   "sending quota",
			opts:   mtatest.Options{Users: map[string]string{"verifyq": "pw", "spare": "pw"}, OverQuota: []string{"verifyq@" + mtatest.DefaultDomain}},
			broken: map[string]string{"SMTP_URL": "verifyq:pw"},
			fixed:  map[string]string{"SMTP_URL": "spare:pw"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mtatest.Start(t, tt.opts)
			env := func(m map[string]string) map[string]string {
				out := map[string]string{}
				for k, v := range m {
					if k == "SMTP_URL" {
						v = relayURL(p, v)
					}
					out[k] = v
				}
				return out
			}
			s := startOnPostfix(t, env(tt.broken))
			to := []string{p.Address("alice"), p.Address("bob")}
			for _, email := range to {
				status, body := s.post(t, "/v1/codes", map[string]string{"email": email})
				require.Equal(t, http.StatusAccepted, status, body)
			}
			for _, email := range to {
				st := s.waitState(t, email, "retrying", "relay_refused")
				assert.NotEqual(t, "undeliverable", st["state"])
			}
			code, body := s.workerReady(t)
			assert.Equal(t, http.StatusServiceUnavailable, code)
			assert.Contains(t, body, "smtp relay failing")
			assert.Empty(t, s.suppressed(t), "nobody suppressed")
			assert.Contains(t, s.worker.logs.String(), "the SMTP relay refuses verifyq's mail")
			assert.NotContains(t, s.worker.logs.String(), "right-password")

			s.restartWorker(t, env(tt.fixed))
			for _, box := range []string{"alice", "bob"} {
				p.WaitMail(t, box, 20*time.Second)
			}
			for _, email := range to {
				s.waitState(t, email, "sent", "")
			}
			time.Sleep(time.Second) // a second mail would have come by now
			perBox := map[string]int{}
			for _, m := range p.Mails(t) {
				perBox[m.Mailbox]++
			}
			assert.Equal(t, map[string]int{"alice": 1, "bob": 1}, perBox, "each send delivered once")
			assert.Empty(t, s.suppressed(t))
			cleanSessions(t, p)
		})
	}
}

// A message over the relay's size limit is undeliverable at once, with its
// reason, and suppresses nobody: the next send to the address is taken.
func TestMTASizeRefusalSuppressesNobody(t *testing.T) {
	p := mtatest.Start(t, mtatest.Options{MessageSizeLimit: 1024})
	s := startOnPostfix(t, map[string]string{"SMTP_URL": relayURL(p, "")})
	email := p.Address("alice")
	status, body := s.post(t, "/v1/codes", map[string]string{"email": email})
	require.Equal(t, http.StatusAccepted, status, body)
	st := s.waitState(t, email, "undeliverable", "message_refused")
	assert.EqualValues(t, 552, st["reply"])
	assert.Empty(t, s.suppressed(t))
	status, body = s.post(t, "/v1/codes", map[string]string{"email": email})
	assert.Equal(t, http.StatusAccepted, status, body)
	cleanSessions(t, p)
}

// A 550 5.1.1 for alice+x@ (the domain has no plus addressing) suppresses
// alice+x@ alone: alice@, Alice@ and every purpose of alice are still
// mailed.
func TestMTAUnknownTagSuppressesThatAddressAlone(t *testing.T) {
	p := mtatest.Start(t, mtatest.Options{})
	s := startOnPostfix(t, map[string]string{"SMTP_URL": relayURL(p, "")})
	tagged := "alice+x@" + p.Domain()
	status, body := s.post(t, "/v1/codes", map[string]string{"email": tagged})
	require.Equal(t, http.StatusAccepted, status, body)
	st := s.waitState(t, tagged, "undeliverable", "recipient_refused")
	assert.EqualValues(t, 550, st["reply"])
	require.Len(t, s.suppressed(t), 1)

	status, _ = s.post(t, "/v1/codes", map[string]string{"email": tagged})
	assert.Equal(t, http.StatusUnprocessableEntity, status, "that address is suppressed")
	for _, req := range []map[string]string{
		{"email": "alice@" + p.Domain()},
		{"email": "Alice@" + p.Domain()},
		{"email": "alice@" + strings.ToUpper(p.Domain()), "purpose": "login"},
	} {
		status, body := s.post(t, "/v1/codes", req)
		require.Equal(t, http.StatusAccepted, status, "%v: %v", req, body)
		p.WaitMail(t, "alice", 20*time.Second)
	}
	cleanSessions(t, p)
}

// Greylisted recipients back off by minutes, each on its own; the relay's
// breaker stays closed and another recipient's mail goes at once.
func TestMTAGreylistingHoldsNobodyElse(t *testing.T) {
	grey := []string{"g1", "g2", "g3", "g4", "g5", "g6"}
	var greyAddrs []string
	for _, g := range grey {
		greyAddrs = append(greyAddrs, g+"@"+mtatest.DefaultDomain)
	}
	p := mtatest.Start(t, mtatest.Options{Mailboxes: append([]string{"alice", "bob"}, grey...), Greylisted: greyAddrs})
	s := startOnPostfix(t, map[string]string{"SMTP_URL": relayURL(p, "")})

	// alice's mail before greylisting starts, as the baseline.
	sinceRequest := func(box string) time.Duration {
		start := time.Now()
		status, body := s.post(t, "/v1/codes", map[string]string{"email": p.Address(box)})
		require.Equal(t, http.StatusAccepted, status, body)
		p.WaitMail(t, box, 20*time.Second)
		return time.Since(start)
	}
	before := sinceRequest("alice")

	for _, email := range greyAddrs {
		status, body := s.post(t, "/v1/codes", map[string]string{"email": email})
		require.Equal(t, http.StatusAccepted, status, body)
	}
	for _, email := range greyAddrs {
		// The worker records the failed attempt before asynq schedules the
		// next one, whose time the status reads from asynq: wait for it.
		st := s.waitState(t, email, "retrying", "recipient_deferred", "next_attempt_in")
		assert.EqualValues(t, 450, st["reply"])
		assert.Greater(t, st["next_attempt_in"], 20.0, "greylisting is tried again after minutes, not seconds")
	}
	during := sinceRequest("bob")
	t.Logf("request to Maildir: %s before greylisting, %s with %d recipients greylisted", before, during, len(grey))

	assert.Zero(t, s.workerMetric(t, `verifyq_smtp_breaker_opened_total{relay="primary"}`), "greylisting opens no breaker")
	code, body := s.workerReady(t)
	assert.Equal(t, http.StatusOK, code, body)
	assert.Empty(t, s.suppressed(t))
	cleanSessions(t, p)
}
