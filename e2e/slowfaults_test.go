package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/tasks"
)

// slowFault marks a fault test that takes minutes. `go test -short` (make
// test) skips it; make test-faults runs every test named TestFault... without
// -short, and CI runs both. A test that calls it under another name fails,
// so no skipped test escapes make test-faults. The fault tests do not run
// in parallel: their figures are timings, and three stacks starting at once
// on a small machine compete for the CPU (and for the free ports that
// freeAddr hands out).
func slowFault(t *testing.T) {
	t.Helper()
	if !strings.HasPrefix(t.Name(), "TestFault") {
		t.Fatalf("%s: a slow fault test must be named TestFault... for make test-faults", t.Name())
	}
	if testing.Short() {
		t.Skip("slow fault test: make test-faults runs it")
	}
}

// requester posts one send request every interval, each for a new address,
// and remembers when each was answered.
type requester struct {
	s      *stack
	prefix string

	mu   sync.Mutex
	sent map[string]time.Time // address -> when it was accepted (202)
	errs []string
}

func newRequester(s *stack, prefix string) *requester {
	return &requester{s: s, prefix: prefix, sent: map[string]time.Time{}}
}

// run posts every interval until stop is closed, at most limit requests.
func (r *requester) run(interval time.Duration, limit int, stop <-chan struct{}) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := range limit {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		email := fmt.Sprintf("%s%04d@example.com", r.prefix, i)
		body := strings.NewReader(`{"email":"` + email + `"}`)
		res, err := http.Post("http://"+r.s.api+"/v1/codes", "application/json", body)
		r.mu.Lock()
		switch {
		case err != nil:
			r.errs = append(r.errs, err.Error())
		case res.StatusCode != http.StatusAccepted:
			r.errs = append(r.errs, email+": "+res.Status)
		default:
			r.sent[email] = time.Now()
		}
		r.mu.Unlock()
		if res != nil {
			res.Body.Close()
		}
	}
}

func (r *requester) accepted() map[string]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.sent)
}

// byAddress groups the accepted mails by recipient.
func byAddress(msgs []smtptest.Message) map[string][]smtptest.Message {
	m := map[string][]smtptest.Message{}
	for _, msg := range msgs {
		for _, to := range msg.To {
			m[to] = append(m[to], msg)
		}
	}
	return m
}

// quantiles returns the p50, p99 and max of ds.
func quantiles(ds []time.Duration) (p50, p99, maxd time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration {
		i := int(q*float64(len(s))+0.5) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return at(0.50), at(0.99), s[len(s)-1]
}

// waitAllMailed waits until every address of want has at least one mail.
func waitAllMailed(t *testing.T, s *stack, want map[string]time.Time, timeout time.Duration) map[string][]smtptest.Message {
	t.Helper()
	var got map[string][]smtptest.Message
	missing := func() []string {
		got = byAddress(s.smtp.Messages())
		var out []string
		for a := range want {
			if len(got[a]) == 0 {
				out = append(out, a)
			}
		}
		return out
	}
	deadline := time.Now().Add(timeout)
	for len(missing()) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	m := missing()
	require.Empty(t, m, "%d of %d accepted requests got no mail within %s", len(m), len(want), timeout)
	return got
}

// An outage window: the SMTP server is down for a while (taken down, or
// answering 451 to every mail) while requests keep arriving at 10/s. Every
// mail must be accepted within 5 s (p99) of the server's return, or of its
// request when that came later; nothing is archived.
func faultOutage(t *testing.T, outage time.Duration, down, up func(*smtptest.Server)) {
	s := startStack(t, noLimits)
	status, _ := s.post(t, "/v1/codes", map[string]string{"email": "warmup@example.com"})
	require.Equal(t, http.StatusAccepted, status)
	s.smtp.WaitMessages(t, 1, 10*time.Second)
	s.smtp.ClearMessages()

	r := newRequester(s, "outage")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run(100*time.Millisecond, 1000, stop)
	}()
	down(s.smtp)
	time.Sleep(outage)
	up(s.smtp)
	back := time.Now()
	time.Sleep(3 * time.Second) // requests keep coming after the return
	close(stop)
	<-done

	want := r.accepted()
	require.Empty(t, r.errs, "every request is answered 202 during the outage")
	require.GreaterOrEqual(t, len(want), int(outage/(100*time.Millisecond))*8/10, "requests arrived throughout")
	got := waitAllMailed(t, s, want, 60*time.Second)

	var lat []time.Duration
	for a, at := range want {
		from := back
		if at.After(back) {
			from = at
		}
		lat = append(lat, got[a][0].Accepted.Sub(from))
		assert.Len(t, got[a], 1, "%s mailed once", a)
	}
	p50, p99, maxd := quantiles(lat)
	t.Logf("%d requests over a %s outage and 3 s after: mail accepted after SMTP's return (or the request, if later): p50 %s, p99 %s, max %s",
		len(want), outage, p50.Round(time.Millisecond), p99.Round(time.Millisecond), maxd.Round(time.Millisecond))
	assert.LessOrEqual(t, p99, 5*time.Second, "p99 after SMTP's return")
	assert.Empty(t, archived(t, s.inspector(t)), "no task archived")
	opened := metric(t, s.wrkAdmin, "verifyq_smtp_breaker_opened_total", nil)
	t.Logf("breaker opened %v times", opened)
	assert.GreaterOrEqual(t, opened, 1.0)
	assert.Zero(t, metric(t, s.wrkAdmin, "verifyq_smtp_breaker_open", nil), "closed again")
	logs := s.worker.logs.String()
	assert.Contains(t, logs, "breaker open")
	assert.Contains(t, logs, "breaker closed")
}

// SMTP down for 30 s (connections refused) with requests arriving
// throughout.
func TestFaultSMTPDown30s(t *testing.T) {
	slowFault(t)
	faultOutage(t, 30*time.Second,
		func(s *smtptest.Server) { require.NoError(t, s.Stop()) },
		func(s *smtptest.Server) { require.NoError(t, s.Restart()) })
}

// SMTP answers 451 to every mail for 20 s with requests arriving
// throughout.
func TestFaultSMTP451Burst20s(t *testing.T) {
	slowFault(t)
	faultOutage(t, 20*time.Second,
		func(s *smtptest.Server) {
			s.SetFault(smtptest.Fault{Stage: smtptest.StageData, Code: 451, EnhancedCode: [3]int{4, 7, 1}})
		},
		func(s *smtptest.Server) { s.ClearFault() })
}

// The worker is killed (SIGKILL) while ten sends wait on a slow SMTP
// server, and a new worker starts: every accepted request gets its mail
// (0 lost), each once. The sends in flight at the kill, cut off before the
// SMTP server accepted them, are sent again only when asynq's recoverer
// finds their lease expired, which the test measures; had the server
// accepted one before the kill, it would arrive twice (at least once).
func TestFaultWorkerSIGKILL(t *testing.T) {
	slowFault(t)
	s := startStack(t, map[string]string{
		"RESEND_COOLDOWN": "0", "MAILBOX_GAP": "0", "ADDRESS_SENDS_PER_HOUR": "0", "CLIENT_SENDS_PER_HOUR": "0",
		smtpTimeout: "20s",
	})
	s.smtp.SetLatency(5 * time.Second)
	const n = 30
	want := map[string]time.Time{}
	for i := range n {
		email := fmt.Sprintf("kill%02d@example.com", i)
		status, body := s.post(t, "/v1/codes", map[string]string{"email": email})
		require.Equal(t, http.StatusAccepted, status, body)
		want[email] = time.Now()
	}
	require.Eventually(t, func() bool {
		return metric(t, s.wrkAdmin, "verifyq_sends_in_flight", nil) == 10
	}, 10*time.Second, 20*time.Millisecond, "every slot sends")
	active, err := s.inspector(t).ListActiveTasks(tasks.Queue)
	require.NoError(t, err)
	inFlight := map[string]bool{}
	for _, a := range active {
		var p tasks.SendCodePayload
		require.NoError(t, json.Unmarshal(a.Payload, &p))
		inFlight[p.Email] = true
	}
	require.Len(t, inFlight, 10)

	s.worker.kill(t)
	killed := time.Now()
	// The SMTP server never accepted the transactions cut off by the kill:
	// take it down (which drops them) and bring it back fast.
	require.NoError(t, s.smtp.Stop())
	require.NoError(t, s.smtp.Restart())
	s.smtp.SetLatency(0)
	env := maps.Clone(s.wrkEnv)
	env["ADMIN_ADDR"] = ""
	start(t, "worker", env)

	got := waitAllMailed(t, s, want, 200*time.Second)
	var rerun []time.Duration
	for a := range want {
		if inFlight[a] {
			last := got[a][len(got[a])-1]
			rerun = append(rerun, last.Accepted.Sub(killed))
			continue
		}
		assert.Len(t, got[a], 1, "%s was not in flight: mailed once", a)
	}
	// Nothing is left to run, so no late repeat can come.
	insp := s.inspector(t)
	require.Eventually(t, func() bool {
		pending, active, retry, _ := queueState(t, insp)
		return pending+active+retry == 0
	}, 10*time.Second, 50*time.Millisecond)
	got = byAddress(s.smtp.Messages())
	dups := 0
	for a, msgs := range got {
		if len(msgs) > 1 {
			dups++
			assert.True(t, inFlight[a], "only a send in flight at the kill may repeat: %s", a)
		}
	}
	lo, hi := slices.Min(rerun), slices.Max(rerun)
	t.Logf("%d requests, %d sends in flight at SIGKILL: 0 lost, %d mailed twice; the ones in flight were sent again %s to %s after the kill",
		n, len(inFlight), dups, lo.Round(time.Second), hi.Round(time.Second))
	assert.Empty(t, archived(t, s.inspector(t)))
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Kill())
	select {
	case <-p.exited:
		var exit *exec.ExitError
		require.ErrorAs(t, p.err, &exit, "killed")
	case <-time.After(10 * time.Second):
		t.Fatal("no exit after SIGKILL")
	}
}
