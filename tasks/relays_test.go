package tasks_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/logtest"
	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/relay"
	"github.com/verifyq/verifyq/tasks"
)

// relaysEnv is the worker's send path with two real SMTP servers: a
// primary and a fallback relay, each with its own client and breaker,
// behind Hold and Observe as the worker's mux puts them.
type relaysEnv struct {
	*env
	primary, fallback   *smtptest.Server
	primaryB, fallbackB *tasks.Breaker
	relays              *tasks.Relays
	rec                 *recorder
	lines               *logtest.Buffer
	resumed             atomic.Int32
}

const (
	relayUser = "verifyq"
	relayPass = "right-password"
)

// newRelaysEnv starts both relays. primaryPass is the password the
// primary's client sends ("" for none: the primary then wants none);
// with one set, the primary wants relayPass.
func newRelaysEnv(t *testing.T, primaryPass string) *relaysEnv {
	t.Helper()
	re := &relaysEnv{env: newEnv(t), rec: &recorder{}}
	re.cfg.Logger, re.lines = logtest.New(t)
	var opts []smtptest.Option
	if primaryPass != "" {
		opts = append(opts, smtptest.WithAuth(relayUser, relayPass))
	}
	re.primary, re.fallback = smtptest.Start(t, opts...), smtptest.Start(t)
	var list []tasks.Relay
	for _, r := range []struct {
		name string
		srv  *smtptest.Server
		pass string
		b    **tasks.Breaker
	}{{tasks.RelayPrimary, re.primary, primaryPass, &re.primaryB}, {tasks.RelayFallback, re.fallback, "", &re.fallbackB}} {
		cfg := relay.Config{Host: r.srv.Host(), Port: r.srv.Port(), TLS: relay.TLSNone, Timeout: 500 * time.Millisecond}
		if r.pass != "" {
			cfg.Username, cfg.Password = relayUser, r.pass
		}
		log := re.cfg.Logger.With("relay", r.name)
		client, err := relay.NewClient(cfg, log)
		require.NoError(t, err)
		t.Cleanup(func() { _ = client.Close() })
		b, err := tasks.NewBreaker(tasks.BreakerConfig{
			Probe: client.Probe, ProbeTimeout: 500 * time.Millisecond, Logger: log,
			Resume: func() (int, error) { re.resumed.Add(1); return 0, nil },
		})
		require.NoError(t, err)
		*r.b = b
		list = append(list, tasks.Relay{Name: r.name, Mailer: client, Breaker: b})
	}
	relays, err := tasks.NewRelays(re.cfg.Logger, list...)
	require.NoError(t, err)
	t.Cleanup(relays.Close)
	re.relays = relays
	re.h = re.handler(t, func(c *tasks.HandlerConfig) { c.Mailer = relays }, tasks.Hold(relays), tasks.Observe(re.rec))
	return re
}

// send issues a code for email and runs one attempt of its task, returning
// the attempt's result and error.
func (re *relaysEnv) send(t *testing.T, email string) (tasks.SendResult, error) {
	t.Helper()
	_, err := re.store.GetOrCreate(t.Context(), codes.ID{Email: email})
	require.NoError(t, err)
	_, before, _ := re.rec.snapshot()
	task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{
		Email: email, Locale: "en", RequestedAt: time.Now().Add(-requestedBefore), ExpiresAt: time.Now().Add(10 * time.Minute),
	})
	require.NoError(t, err)
	err = re.h.ProcessTask(t.Context(), task)
	_, results, _ := re.rec.snapshot()
	require.Len(t, results, len(before)+1)
	return results[len(results)-1], err
}

// requestedBefore is how long before its attempt each send of relaysEnv
// was asked for: the least time from request to acceptance.
const requestedBefore = 2 * time.Second

// mailsTo counts the messages to email at srv.
func mailsTo(srv *smtptest.Server, email string) int {
	n := 0
	for _, m := range srv.Messages() {
		if slices.Contains(m.To, email) {
			n++
		}
	}
	return n
}

// relaysOf are the relays tried by the attempt of res, in order.
func relaysOf(res tasks.SendResult) []string {
	var out []string
	for _, try := range res.Tries {
		out = append(out, try.Relay)
	}
	return out
}

// With the primary refusing connections, each mail goes through the
// fallback within its own attempt; once the primary's breaker opens, the
// sends go to the fallback straight away; when the primary comes back its
// probe lets a trial through and the sends go back to it. No address is
// mailed twice, counted at both servers.
func TestRelaysFailOverWhileThePrimaryIsDown(t *testing.T) {
	t.Parallel()
	re := newRelaysEnv(t, "")
	res, err := re.send(t, "first@example.com")
	require.NoError(t, err)
	assert.Equal(t, []string{tasks.RelayPrimary}, relaysOf(res))
	line, err := re.relays.Ready()
	require.NoError(t, err)
	assert.Equal(t, "primary: closed; fallback: closed", line)

	require.NoError(t, re.primary.Stop())
	var addrs []string
	for i := range tasks.BreakerUnreachable + 3 {
		email := fmt.Sprintf("down%d@example.com", i)
		addrs = append(addrs, email)
		res, err := re.send(t, email)
		require.NoError(t, err, "the fallback took it in the same attempt")
		assert.Equal(t, tasks.OutcomeSent, res.Outcome)
		assert.Equal(t, tasks.RelayFallback, res.Relay)
		if i < tasks.BreakerUnreachable {
			assert.Equal(t, []string{tasks.RelayPrimary, tasks.RelayFallback}, relaysOf(res), "%s: failed over", email)
			assert.Equal(t, delivery.RelayDeferred, res.Tries[0].Failure)
		} else {
			assert.Equal(t, []string{tasks.RelayFallback}, relaysOf(res), "%s: the primary's breaker is open: straight to the fallback", email)
		}
		st := re.status(t, email)
		assert.Equal(t, delivery.StateSent, st.State)
		assert.Equal(t, tasks.RelayFallback, st.Relay)
		assert.GreaterOrEqual(t, st.SentAfter, requestedBefore, "from the request to the fallback's acceptance")
		assert.Less(t, st.SentAfter, requestedBefore+time.Minute)
	}
	assert.Equal(t, tasks.BreakerOpen, re.primaryB.State())
	assert.Equal(t, tasks.BreakerClosed, re.fallbackB.State())
	line, err = re.relays.Ready()
	require.NoError(t, err, "ready: the fallback takes mail")
	assert.Regexp(t, `^primary: open \(smtp relay failing: breaker open for .*3 connection failures in a row.*\); fallback: closed$`, line)
	assert.Len(t, re.lines.Matching(t, "the primary relay did not take the mail: sending it through the fallback relay"), tasks.BreakerUnreachable)
	assert.Len(t, re.lines.Matching(t, "sends go through the fallback relay while the ones before it fail"), 1)

	require.NoError(t, re.primary.Restart())
	var back string
	require.Eventually(t, func() bool {
		email := fmt.Sprintf("back%d@example.com", len(addrs))
		addrs = append(addrs, email)
		res, err := re.send(t, email)
		require.NoError(t, err)
		if res.Relay == tasks.RelayPrimary {
			back = email
		}
		return back != ""
	}, 10*time.Second, 100*time.Millisecond, "the sends go back to the primary")
	assert.Equal(t, tasks.BreakerClosed, re.primaryB.State(), "the trial was accepted")
	assert.Equal(t, tasks.RelayPrimary, re.status(t, back).Relay)
	res, err = re.send(t, "after@example.com")
	require.NoError(t, err)
	assert.Equal(t, []string{tasks.RelayPrimary}, relaysOf(res))
	assert.Len(t, re.lines.Matching(t, "sends go through the primary relay again"), 1)
	line, err = re.relays.Ready()
	require.NoError(t, err)
	assert.Equal(t, "primary: closed; fallback: closed", line)

	for _, email := range append(addrs, "first@example.com", "after@example.com") {
		assert.Equal(t, 1, mailsTo(re.primary, email)+mailsTo(re.fallback, email), "%s: mailed once", email)
	}
}

// A failure fails over within the attempt only when it is the relay's as
// a whole and proves the relay did not take the mail; a recipient's
// refusal or a timeout after the final dot is the attempt's result, as
// with one relay.
func TestRelaysFailOverOnlyWhatTheRelayDidNotTake(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		pass     string // the primary's client's password
		fault    *smtptest.Fault
		tries    []string
		failure  delivery.Class // the primary's
		sent     bool
		primary  int // messages at the primary in the end (a hung one is taken late)
		breakerB tasks.BreakerState
	}{
		{name: "wrong password", pass: "wrong-password", tries: []string{"primary", "fallback"}, failure: delivery.RelayRefused,
			sent: true, breakerB: tasks.BreakerOpen},
		{name: "sender refused", fault: &smtptest.Fault{Stage: smtptest.StageMail, Code: 550, EnhancedCode: [3]int{5, 7, 1}},
			tries: []string{"primary", "fallback"}, failure: delivery.RelayRefused, sent: true, breakerB: tasks.BreakerOpen},
		{name: "451 4.3.0 after the dot", fault: &smtptest.Fault{Stage: smtptest.StageData, Code: 451, EnhancedCode: [3]int{4, 3, 0}},
			tries: []string{"primary", "fallback"}, failure: delivery.RelayDeferred, sent: true, breakerB: tasks.BreakerClosed},
		{name: "MAIL unanswered", fault: &smtptest.Fault{Stage: smtptest.StageMail, Hang: true},
			tries: []string{"primary", "fallback"}, failure: delivery.RelayDeferred, sent: true, breakerB: tasks.BreakerClosed},
		{name: "recipient refused", fault: &smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, EnhancedCode: [3]int{5, 1, 1}},
			tries: []string{"primary"}, failure: delivery.RecipientRefused, breakerB: tasks.BreakerClosed},
		{name: "greylisted", fault: &smtptest.Fault{Stage: smtptest.StageRcpt, Code: 450, EnhancedCode: [3]int{4, 2, 0}},
			tries: []string{"primary"}, failure: delivery.RecipientDeferred, breakerB: tasks.BreakerClosed},
		{name: "no reply after the dot", fault: &smtptest.Fault{Stage: smtptest.StageData, Hang: true},
			tries: []string{"primary"}, failure: delivery.RelayDeferred, primary: 1, breakerB: tasks.BreakerClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			re := newRelaysEnv(t, tt.pass)
			if tt.fault != nil {
				re.primary.SetFault(*tt.fault)
			}
			const email = "one@example.com"
			res, err := re.send(t, email)
			assert.Equal(t, tt.tries, relaysOf(res))
			assert.Equal(t, tt.failure, res.Tries[0].Failure)
			assert.Equal(t, tt.breakerB, re.primaryB.State())
			refusals := 0
			for _, line := range re.lines.Lines(t) {
				if strings.HasPrefix(line["msg"].(string), "the SMTP relay refuses verifyq's mail") {
					refusals++
					assert.Equal(t, "ERROR", line["level"])
					assert.Equal(t, tasks.RelayPrimary, line["relay"])
				}
			}
			assert.Equal(t, btoi(tt.failure == delivery.RelayRefused), refusals,
				"the primary refusing verifyq's mail is an error, also when the fallback took it")
			if tt.sent {
				require.NoError(t, err)
				assert.Equal(t, tasks.RelayFallback, re.status(t, email).Relay)
			} else {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "send mail: "+string(tt.failure)+": primary relay: smtp ",
					"the task's last error, as the dashboard shows it, names the relay")
				assert.Empty(t, re.status(t, email).Relay)
			}
			re.primary.ClearFault() // a hung mail is taken now, late
			if tt.primary > 0 {
				re.primary.WaitMessages(t, tt.primary, 5*time.Second)
			}
			assert.Equal(t, tt.primary, mailsTo(re.primary, email))
			assert.Equal(t, btoi(tt.sent), mailsTo(re.fallback, email), "the fallback mailed only what the primary did not take")
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// While every relay fails, the gate holds the task before it reads the
// code, and /readyz says not ready, naming each relay; the first relay
// back takes the held send.
func TestRelaysHoldWhileEveryRelayFails(t *testing.T) {
	t.Parallel()
	re := newRelaysEnv(t, "")
	require.NoError(t, re.primary.Stop())
	require.NoError(t, re.fallback.Stop())
	for i := range tasks.BreakerUnreachable {
		res, err := re.send(t, fmt.Sprintf("lost%d@example.com", i))
		require.Error(t, err)
		assert.Equal(t, []string{tasks.RelayPrimary, tasks.RelayFallback}, relaysOf(res))
		assert.Contains(t, err.Error(), "fallback relay: smtp connect: ")
		assert.Contains(t, err.Error(), "(after primary relay: smtp connect: ")
	}
	require.Equal(t, tasks.BreakerOpen, re.primaryB.State())
	require.Equal(t, tasks.BreakerOpen, re.fallbackB.State())
	_, err := re.relays.Ready()
	require.Error(t, err)
	assert.Regexp(t, `^every smtp relay failing: primary: open \(smtp relay failing: .*\); fallback: open \(smtp relay failing: .*\)$`, err.Error())

	_, err = re.store.GetOrCreate(t.Context(), codes.ID{Email: "held@example.com"})
	require.NoError(t, err)
	done := make(chan error, 1)
	task := re.task(t, "held@example.com", "en")
	go func() { done <- re.h.ProcessTask(t.Context(), task) }()
	select {
	case err := <-done:
		t.Fatalf("the task was not held: %v", err)
	case <-time.After(1500 * time.Millisecond):
	}
	assert.Equal(t, delivery.StateQueued, re.status(t, "held@example.com").State, "held before it read the code")
	require.NoError(t, re.fallback.Restart())
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("still held with the fallback back")
	}
	assert.Equal(t, 1, mailsTo(re.fallback, "held@example.com"))
	assert.Equal(t, tasks.RelayFallback, re.status(t, "held@example.com").Relay)
	_, err = re.relays.Ready()
	assert.NoError(t, err)
}

// Close lets the held sends go with ErrSMTPUnavailable, as a breaker does.
func TestRelaysClose(t *testing.T) {
	t.Parallel()
	re := newRelaysEnv(t, "")
	require.NoError(t, re.primary.Stop())
	require.NoError(t, re.fallback.Stop())
	for range tasks.BreakerUnreachable {
		re.primaryB.Report(t.Context(), errors.New("connection refused"))
		re.fallbackB.Report(t.Context(), errors.New("connection refused"))
	}
	res := make(chan error, 1)
	go func() {
		_, err := re.relays.Wait(t.Context())
		res <- err
	}()
	select {
	case err := <-res:
		t.Fatalf("Wait returned while every relay fails: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	re.relays.Close()
	select {
	case err := <-res:
		require.ErrorIs(t, err, tasks.ErrSMTPUnavailable)
	case <-time.After(5 * time.Second):
		t.Fatal("Wait still blocked after Close")
	}
}

// One relay is its breaker: Ready says what the breaker says and adds no
// line, and a send held at the gate goes when the relay is back.
func TestRelaysOfOne(t *testing.T) {
	t.Parallel()
	be := newBreakerEnv(t)
	relays, err := tasks.NewRelays(nil, tasks.Relay{Name: tasks.RelayPrimary, Mailer: be.sender, Breaker: be.b})
	require.NoError(t, err)
	line, err := relays.Ready()
	assert.Empty(t, line)
	require.NoError(t, err)
	require.NoError(t, be.smtp.Stop())
	for range tasks.BreakerUnreachable {
		be.b.Report(t.Context(), errors.New("connection refused"))
	}
	_, err = relays.Ready()
	require.Error(t, err)
	assert.Equal(t, be.b.Ready().Error(), err.Error())

	ctx := t.Context()
	be.h = be.handler(t, func(c *tasks.HandlerConfig) { c.Mailer = relays }, tasks.Hold(relays))
	_, err = be.store.GetOrCreate(ctx, codes.ID{Email: "one@example.com"})
	require.NoError(t, err)
	done := make(chan error, 1)
	task := be.task(t, "one@example.com", "en")
	go func() { done <- be.h.ProcessTask(ctx, task) }()
	select {
	case err := <-done:
		t.Fatalf("the task was not held: %v", err)
	case <-time.After(1500 * time.Millisecond):
	}
	require.NoError(t, be.smtp.Restart())
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("still held with the relay back")
	}
	assert.Equal(t, tasks.BreakerClosed, be.b.State())
	assert.Equal(t, tasks.RelayPrimary, be.status(t, "one@example.com").Relay)
	assert.Equal(t, 1, be.smtp.Count())
}

func TestNewRelaysChecksItsRelays(t *testing.T) {
	t.Parallel()
	be := newBreakerEnv(t)
	ok := tasks.Relay{Name: tasks.RelayPrimary, Mailer: be.sender, Breaker: be.b}
	for name, list := range map[string][]tasks.Relay{
		"none":         nil,
		"no name":      {{Mailer: be.sender, Breaker: be.b}},
		"no breaker":   {{Name: "x", Mailer: be.sender}},
		"no mailer":    {{Name: "x", Breaker: be.b}},
		"a name twice": {ok, ok},
	} {
		_, err := tasks.NewRelays(nil, list...)
		assert.Error(t, err, name)
	}
}
