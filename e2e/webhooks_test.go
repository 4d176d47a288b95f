package e2e

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Two secrets, as during a rotation (the new one first).
var (
	hookSecret    = "whsec_" + base64.StdEncoding.EncodeToString([]byte("e2e-webhook-secret-of-32-bytes!!"))
	hookOldSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("e2e-previous-secret-24by"))
)

// hookReceiver is an endpoint on a loopback address of its own that verifies
// every delivery with the Standard Webhooks reference library and can go
// down (its port closed) and come back.
type hookReceiver struct {
	t    *testing.T
	addr string
	wh   *standardwebhooks.Webhook

	mu     sync.Mutex
	srv    *http.Server
	counts map[string]int    // deliveries per webhook-id
	bodies map[string][]byte // the body of each webhook-id
	bad    []string          // deliveries whose signature did not verify
}

func newHookReceiver(t *testing.T, secret string) *hookReceiver {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	require.NoError(t, err)
	r := &hookReceiver{t: t, addr: "127.0.0.1:0", wh: wh, counts: map[string]int{}, bodies: map[string][]byte{}}
	r.up()
	t.Cleanup(r.down)
	return r
}

func (r *hookReceiver) url() string { return "http://" + r.addr + "/hooks/verifyq" }

// up listens on the receiver's address: at first a port the system
// chooses, then the same again.
func (r *hookReceiver) up() {
	r.t.Helper()
	ln, err := net.Listen("tcp", r.addr)
	require.NoError(r.t, err)
	r.addr = ln.Addr().String()
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(r.serve)}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

func (r *hookReceiver) down() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

func (r *hookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 64<<10))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	id := req.Header.Get("webhook-id")
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.wh.Verify(body, req.Header); err != nil {
		r.bad = append(r.bad, id+": "+err.Error())
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	r.counts[id]++
	r.bodies[id] = body
	w.WriteHeader(http.StatusNoContent)
}

// hookEvent is a delivered body.
type hookEvent struct {
	ID        string
	Type      string         `json:"type"`
	Timestamp string         `json:"timestamp"`
	Data      map[string]any `json:"data"`
	raw       string
}

// events returns every event delivered, once per webhook-id, and how many
// deliveries there were in all.
func (r *hookReceiver) events(t *testing.T) ([]hookEvent, int, []string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []hookEvent
	total := 0
	for id, b := range r.bodies {
		var ev hookEvent
		require.NoError(t, json.Unmarshal(b, &ev))
		ev.ID, ev.raw = id, string(b)
		out = append(out, ev)
		total += r.counts[id]
	}
	return out, total, append([]string(nil), r.bad...)
}

// of returns the delivered events of typ about email.
func of(evs []hookEvent, typ, email string) []hookEvent {
	var out []hookEvent
	for _, ev := range evs {
		if ev.Type == typ && ev.Data["email"] == email {
			out = append(out, ev)
		}
	}
	return out
}

func webhookEnv(r *hookReceiver) map[string]string {
	return map[string]string{"WEBHOOK_URLS": r.url(), "WEBHOOK_SECRET": hookSecret + "," + hookOldSecret,
		"RESEND_COOLDOWN": "0", "MAILBOX_GAP": "0", "CODE_LENGTH": longCodes}
}

// sendAndVerify asks for a code for email, waits for its mail, and
// verifies it; it returns the code.
func (s *stack) sendAndVerify(t *testing.T, email string) string {
	t.Helper()
	status, body := s.post(t, "/v1/codes", map[string]string{"email": email})
	require.Equal(t, http.StatusAccepted, status, body)
	require.Eventually(t, func() bool {
		for _, m := range s.smtp.Messages() {
			if len(m.To) == 1 && m.To[0] == email {
				return true
			}
		}
		return false
	}, 15*time.Second, 20*time.Millisecond, "the mail to %s", email)
	code, _ := s.code(t, email)
	status, body = s.post(t, "/v1/codes/verify", map[string]string{"email": email, "code": code})
	require.Equal(t, http.StatusOK, status, body)
	return code
}

// Both binaries as processes: a send and a verify deliver code.sent (from
// the worker) and code.verified (from the enqueuer) to the receiver,
// signed with both secrets of a rotation (the receiver knows the previous
// one only), naming the same send, and no body holds the code.
func TestWebhooksEndToEnd(t *testing.T) {
	t.Parallel()
	r := newHookReceiver(t, hookOldSecret)
	s := startStack(t, webhookEnv(r))
	const email = "Hook.User@Example.com"
	code := s.sendAndVerify(t, email)

	var evs []hookEvent
	require.Eventually(t, func() bool {
		evs, _, _ = r.events(t)
		return len(of(evs, "code.sent", email)) == 1 && len(of(evs, "code.verified", email)) == 1
	}, 20*time.Second, 50*time.Millisecond, "code.sent and code.verified delivered")
	_, _, bad := r.events(t)
	assert.Empty(t, bad, "every delivery verifies with the previous secret")
	sent, verified := of(evs, "code.sent", email)[0], of(evs, "code.verified", email)[0]
	assert.NotEmpty(t, sent.Data["task_id"])
	assert.Equal(t, sent.Data["task_id"], verified.Data["task_id"], "both name the send")
	assert.Equal(t, "primary", sent.Data["relay"])
	assert.EqualValues(t, 1, sent.Data["attempt"])
	for _, ev := range evs {
		assert.NotContains(t, ev.raw, code, "no code in any event")
		assert.True(t, strings.HasPrefix(ev.ID, "msg_"))
	}
	s.worker.stop(t)
	s.enqueuer.stop(t)
	for _, p := range []*proc{s.enqueuer, s.worker} {
		assert.NotContains(t, p.logs.String(), code, "no code in the logs")
		assert.NotContains(t, p.logs.String(), email, "no full address in the logs")
		assert.NotContains(t, p.logs.String(), strings.TrimPrefix(hookSecret, "whsec_"), "no secret in the logs")
	}
}

// A receiver that is down for a minute gets every event once it is back:
// each send's code.sent and each verify's code.verified, each webhook-id
// delivered (at least once; a duplicate would share its id), every
// signature valid, and the mail never waited for it.
func TestFaultWebhookReceiverDown(t *testing.T) {
	slowFault(t)
	r := newHookReceiver(t, hookSecret)
	r.down()
	s := startStack(t, webhookEnv(r))
	const n = 10
	emails := make([]string, n)
	codes := make([]string, n)
	start := time.Now()
	for i := range n {
		emails[i] = "down" + string(rune('a'+i)) + "@example.com"
		codes[i] = s.sendAndVerify(t, emails[i])
	}
	t.Logf("%d sends mailed and verified in %s while the receiver was down", n, time.Since(start).Round(time.Millisecond))
	assert.Less(t, time.Since(start), 30*time.Second, "the mail does not wait for the endpoint")
	time.Sleep(time.Minute - time.Since(start))
	r.up()
	back := time.Now()

	var evs []hookEvent
	require.Eventually(t, func() bool {
		evs, _, _ = r.events(t)
		for _, e := range emails {
			if len(of(evs, "code.sent", e)) != 1 || len(of(evs, "code.verified", e)) != 1 {
				return false
			}
		}
		return true
	}, 5*time.Minute, time.Second, "every event delivered after the receiver came back")
	evs, total, bad := r.events(t)
	t.Logf("all %d events delivered %s after the receiver came back; %d deliveries in all", len(evs), time.Since(back).Round(time.Second), total)
	assert.Empty(t, bad)
	ids := map[string]bool{}
	for _, ev := range evs {
		assert.False(t, ids[ev.ID])
		ids[ev.ID] = true
		for _, c := range codes {
			assert.NotContains(t, ev.raw, c)
		}
	}
	assert.GreaterOrEqual(t, len(evs), 2*n)
	res, err := http.Get("http://" + s.wrkAdmin + "/metrics")
	require.NoError(t, err)
	defer res.Body.Close()
	m, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	assert.Contains(t, string(m), `verifyq_webhook_deliveries_total{result="retried",type="code.sent"}`)
	assert.NotContains(t, string(m), `verifyq_webhook_deliveries_total{result="retried",type="code.sent"} 0`, "the deliveries were retried")
}
