package relay_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/relay"
)

const (
	testFrom     = "Verifyq <no-reply@verifyq.test>"
	testEnvFrom  = "no-reply@verifyq.test"
	testTo       = "alice.smith@example.com"
	testCode     = "739164"
	testUser     = "verifyq"
	testPass     = "s3cr3t-p4ssw0rd"
	waitMessages = 5 * time.Second
)

func testMessage() mail.Message {
	return mail.Message{To: testTo, Locale: mail.LocaleEN, Code: testCode, ExpiresIn: 10 * time.Minute}
}

// newClient returns a Client for srv (TLS none, no auth unless mod says
// otherwise), closed at cleanup.
func newClient(t *testing.T, srv *smtptest.Server, mod func(*relay.Config), logger *slog.Logger) *relay.Client {
	t.Helper()
	cfg := relay.Config{
		Host:    srv.Host(),
		Port:    srv.Port(),
		TLS:     relay.TLSNone,
		Timeout: 5 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := relay.NewClient(cfg, logger)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// send composes m and sends it with c, from testEnvFrom to m.To.
func send(ctx context.Context, t *testing.T, c *relay.Client, m mail.Message) error {
	t.Helper()
	composed, err := mail.Compose(testFrom, m)
	require.NoError(t, err)
	return c.Send(ctx, relay.Envelope{From: testEnvFrom, To: m.To}, composed)
}

// sendTo sends the test message to to.
func sendTo(t *testing.T, c *relay.Client, to string) error {
	t.Helper()
	m := testMessage()
	m.To = to
	return send(t.Context(), t, c, m)
}

// trySend is sendTo for a goroutine other than the test's: it reports a
// message that does not compose as its error instead of stopping the test
// from a goroutine that is not the test's.
func trySend(ctx context.Context, c *relay.Client, to string) error {
	m := testMessage()
	m.To = to
	composed, err := mail.Compose(testFrom, m)
	if err != nil {
		return err
	}
	return c.Send(ctx, relay.Envelope{From: testEnvFrom, To: m.To}, composed)
}

// relayError returns err's *relay.Error, failing the test when it has none.
func relayError(t *testing.T, err error) *relay.Error {
	t.Helper()
	var e *relay.Error
	require.ErrorAs(t, err, &e)
	return e
}

// trust makes cfg trust srv's certificate.
func TestSendDelivers(t *testing.T) {
	t.Parallel()
	for _, loc := range []mail.Locale{mail.LocaleZhCN, mail.LocaleEN} {
		t.Run(string(loc), func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t)
			c := newClient(t, srv, nil, nil)
			m := testMessage()
			m.Locale = loc
			require.NoError(t, send(t.Context(), t, c, m))

			msgs := srv.WaitMessages(t, 1, waitMessages)
			require.Len(t, msgs, 1)
			got := msgs[0]
			require.Equal(t, testEnvFrom, got.From)
			require.Equal(t, []string{testTo}, got.To)
			require.Contains(t, got.Text, testCode)
			require.Contains(t, got.HTML, testCode)
			if loc == mail.LocaleZhCN {
				require.Equal(t, "验证码", got.Subject)
				require.Contains(t, got.Text, "10 分钟")
			} else {
				require.Equal(t, "Your verification code", got.Subject)
				require.Contains(t, got.Text, "10 minutes")
			}
			require.False(t, got.TLS)
		})
	}
}

// A multi-line reply whose first line is the enhanced code alone
// ("550-5.7.1", then "550 5.7.1 Relaying denied") keeps its code: at RCPT
// it is the relay's policy refusal, not the recipient's, and nobody is
// suppressed for it.
func TestSendMultilineReplyCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		message  string // the reply's lines, each after "550-" or "550 "
		enhanced string
		text     string
		class    delivery.Class
	}{
		{"the code alone on the first line", "5.7.1\n5.7.1 Relaying denied", "5.7.1", "Relaying denied", delivery.RelayRefused},
		{"the code on every line", "5.7.1 Relaying\n5.7.1 denied", "5.7.1", "Relaying\ndenied", delivery.RelayRefused},
		{"the code alone, then a tab", "5.7.1\tRelaying denied", "5.7.1", "Relaying denied", delivery.RelayRefused},
		{"no code at all", "Mailbox unavailable\nfor good", "", "Mailbox unavailable\nfor good", delivery.RecipientRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t)
			c := newClient(t, srv, nil, nil)
			srv.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, EnhancedCode: smtptest.NoEnhancedCode, Message: tt.message})
			err := sendTo(t, c, testTo)
			e := relayError(t, err)
			assert.Equal(t, relay.StageRcpt, e.Stage)
			assert.Equal(t, 550, e.Code)
			assert.Equal(t, tt.enhanced, e.Enhanced)
			assert.Equal(t, tt.text, e.Text)
			assert.Equal(t, tt.class, delivery.ClassOf(err))
			assert.Zero(t, srv.Count())
		})
	}
}

// Every TLS mode delivers, over TLS when it should.
func TestSendTLSModes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		opts    []smtptest.Option
		mode    relay.TLSMode
		wantTLS bool
	}{
		{"none", nil, relay.TLSNone, false},
		{"none ignores STARTTLS", []smtptest.Option{smtptest.WithTLS()}, relay.TLSNone, false},
		{"auto without STARTTLS sends in clear", nil, relay.TLSAuto, false},
		{"auto with STARTTLS", []smtptest.Option{smtptest.WithTLS()}, relay.TLSAuto, true},
		{"starttls", []smtptest.Option{smtptest.WithTLS()}, relay.TLSStartTLS, true},
		{"implicit", []smtptest.Option{smtptest.WithImplicitTLS()}, relay.TLSImplicit, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, tt.opts...)
			c := newClient(t, srv, func(c *relay.Config) { c.TLS = tt.mode; c.RootCAs = srv.RootCAs() }, nil)
			require.NoError(t, sendTo(t, c, testTo))
			require.Equal(t, tt.wantTLS, srv.WaitMessages(t, 1, waitMessages)[0].TLS)
		})
	}
}

func TestSendReplyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		fault    smtptest.Fault
		stage    relay.Stage
		enhanced string
		text     string
		kept     bool // the connection is kept for the next mail
	}{
		{"RCPT 550", smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, EnhancedCode: [3]int{5, 1, 1},
			Message: "<" + testTo + ">: Recipient address rejected"}, relay.StageRcpt, "5.1.1", "<" + testTo + ">: Recipient address rejected", true},
		{"RCPT 451", smtptest.Fault{Stage: smtptest.StageRcpt, Code: 451, EnhancedCode: [3]int{4, 7, 1}}, relay.StageRcpt, "4.7.1", "Injected temporary failure", true},
		{"MAIL 550", smtptest.Fault{Stage: smtptest.StageMail, Code: 550}, relay.StageMail, "5.0.0", "Injected permanent failure", true},
		{"MAIL 451", smtptest.Fault{Stage: smtptest.StageMail, Code: 451}, relay.StageMail, "4.0.0", "Injected temporary failure", true},
		{"DATA 554", smtptest.Fault{Stage: smtptest.StageData, Code: 554, Message: "content " + testCode + " rejected"}, relay.StageDataEnd, "5.0.0", "content " + testCode + " rejected", true},
		{"DATA 452", smtptest.Fault{Stage: smtptest.StageData, Code: 452}, relay.StageDataEnd, "4.0.0", "Injected temporary failure", true},
		{"greeting 421", smtptest.Fault{Stage: smtptest.StageConnect, Code: 421}, relay.StageGreeting, "4.0.0", "Injected temporary failure", false},
		{"greeting 554", smtptest.Fault{Stage: smtptest.StageConnect, Code: 554, EnhancedCode: [3]int{5, 7, 1}}, relay.StageGreeting, "5.7.1", "Injected permanent failure", false},
	}
	for _, tt := range tests {
		for _, pipelining := range []bool{true, false} {
			name := tt.name
			var opts []smtptest.Option
			if !pipelining {
				name += ", one command at a time"
				opts = append(opts, smtptest.WithoutPipelining())
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				srv := smtptest.Start(t, opts...)
				c := newClient(t, srv, nil, nil)
				srv.SetFault(tt.fault)

				err := sendTo(t, c, testTo)
				e := relayError(t, err)
				assert.Equal(t, tt.stage, e.Stage)
				assert.Equal(t, tt.fault.Code, e.Code)
				assert.Equal(t, tt.enhanced, e.Enhanced)
				assert.Equal(t, tt.text, e.Text)
				assert.NoError(t, e.Err)
				assert.True(t, e.Replied())
				assert.Same(t, e, relay.ReplyError(err))
				assert.Equal(t, tt.stage, relay.StageOf(err))
				assert.NotContains(t, err.Error(), testTo, "the reply text is not in the error")
				assert.NotContains(t, err.Error(), testCode)
				assert.Zero(t, srv.Count())

				srv.ClearFault()
				require.NoError(t, sendTo(t, c, testTo))
				require.Equal(t, 1, srv.Count())
				if tt.kept {
					require.Equal(t, 1, srv.Connections(), "the refused transaction's connection is reused")
				} else {
					require.Equal(t, 2, srv.Connections())
				}
			})
		}
	}
}

func TestSendHungServerTimesOut(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		stage smtptest.Stage
		want  relay.Stage
	}{
		{smtptest.StageConnect, relay.StageGreeting},
		{smtptest.StageMail, relay.StageMail},
		{smtptest.StageRcpt, relay.StageRcpt},
		{smtptest.StageData, relay.StageDataEnd},
	} {
		t.Run(tt.stage.String(), func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t)
			c := newClient(t, srv, func(c *relay.Config) { c.Timeout = 300 * time.Millisecond }, nil)
			srv.SetFault(smtptest.Fault{Stage: tt.stage, Hang: true})

			err := sendTo(t, c, testTo)
			require.Error(t, err)
			assert.True(t, relay.IsTimeout(err), "err: %v", err)
			assert.Nil(t, relay.ReplyError(err))
			assert.Equal(t, tt.want, relay.StageOf(err))
			assert.NotErrorIs(t, err, relay.ErrNoGreeting, "tls=none: no hint at implicit TLS")
		})
	}
}

func TestSendHungPooledConnectionTimesOut(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	c := newClient(t, srv, func(c *relay.Config) { c.Timeout = 300 * time.Millisecond }, nil)
	require.NoError(t, sendTo(t, c, testTo))

	srv.SetFault(smtptest.Fault{Stage: smtptest.StageMail, Hang: true})
	err := sendTo(t, c, testTo)
	assert.True(t, relay.IsTimeout(err), "err: %v", err)
	assert.Equal(t, relay.StageMail, relay.StageOf(err))
	assert.Equal(t, 1, srv.Connections(), "a timeout must not be retried on a new connection")
}

func TestSendContextCancelAbortsHungSend(t *testing.T) {
	t.Parallel()
	for _, stage := range []smtptest.Stage{smtptest.StageConnect, smtptest.StageData} {
		t.Run(stage.String(), func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t)
			c := newClient(t, srv, func(c *relay.Config) { c.Timeout = time.Minute }, nil)
			srv.SetFault(smtptest.Fault{Stage: stage, Hang: true})

			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(100*time.Millisecond, cancel)
			err := send(ctx, t, c, testMessage())
			require.ErrorIs(t, err, context.Canceled)
			require.Nil(t, relay.ReplyError(err))
		})
	}
}

func TestSendContextDeadlineIsHonoured(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	c := newClient(t, srv, func(c *relay.Config) { c.Timeout = time.Minute }, nil)
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Hang: true})

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	err := send(ctx, t, c, testMessage())
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.True(t, relay.IsTimeout(err), "err: %v", err)
	require.Equal(t, relay.StageRcpt, relay.StageOf(err))
}

func TestSendAlreadyCancelled(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	c := newClient(t, srv, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.ErrorIs(t, send(ctx, t, c, testMessage()), context.Canceled)
	require.Zero(t, srv.Count())
}

func TestSendReusesConnection(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	c := newClient(t, srv, nil, nil)
	for range 5 {
		require.NoError(t, sendTo(t, c, testTo))
	}
	require.Equal(t, 5, srv.Count())
	require.Equal(t, 1, srv.Connections())
}

func TestSendDropsExpiredIdleConnection(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithCommands())
	c := newClient(t, srv, func(c *relay.Config) { c.IdleTimeout = 50 * time.Millisecond }, nil)
	require.NoError(t, sendTo(t, c, testTo))
	time.Sleep(150 * time.Millisecond)
	require.NoError(t, sendTo(t, c, testTo))
	require.Equal(t, 2, srv.Connections())
	require.Equal(t, 2, srv.Count())
	cmds := srv.WaitCommand(t, "QUIT", waitMessages)
	require.Equal(t, "QUIT", cmds[0][len(cmds[0])-1], "the expired connection was ended with QUIT")
}

func TestSendReplacesStaleConnectionAfterRestart(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	c := newClient(t, srv, nil, nil)
	require.NoError(t, sendTo(t, c, testTo))

	require.NoError(t, srv.Stop())
	err := sendTo(t, c, testTo)
	require.Error(t, err, "server is down")
	require.Equal(t, relay.StageConnect, relay.StageOf(err), "err: %v", err)
	require.NoError(t, srv.Restart())
	require.NoError(t, sendTo(t, c, testTo))
	require.Equal(t, 2, srv.Count())
}

func TestSendRetriesStalePooledConnectionOnce(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	c := newClient(t, srv, nil, nil)
	require.NoError(t, sendTo(t, c, testTo))
	require.Equal(t, 1, srv.Connections())

	// The pooled connection dies while idle; the send goes through on a
	// fresh one.
	require.NoError(t, srv.Stop())
	require.NoError(t, srv.Restart())
	require.NoError(t, sendTo(t, c, testTo))
	require.Equal(t, 2, srv.Connections())
	require.Equal(t, 2, srv.Count())

	// A 421 at MAIL, the first command of a pooled connection, is
	// retried too.
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageMail, Code: 421, Times: 1})
	require.NoError(t, sendTo(t, c, testTo))
	require.Equal(t, 3, srv.Connections())
	require.Equal(t, 3, srv.Count())

	// A 421 at MAIL on a fresh connection is reported, not retried.
	c2 := newClient(t, srv, nil, nil)
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageMail, Code: 421, Times: 1})
	e := relayError(t, sendTo(t, c2, testTo))
	require.Equal(t, relay.StageMail, e.Stage)
	require.Equal(t, 421, e.Code)
	require.Equal(t, 4, srv.Connections())

	// A 421 after MAIL (at RCPT) on a pooled connection is not retried.
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 421, Times: 1})
	e = relayError(t, sendTo(t, c, testTo))
	require.Equal(t, relay.StageRcpt, e.Stage)
	require.Equal(t, 421, e.Code)
	require.Equal(t, 4, srv.Connections())

	// Other replies at MAIL on a pooled connection are not retried.
	require.NoError(t, sendTo(t, c, testTo))
	require.Equal(t, 5, srv.Connections(), "the 421 connection was dropped")
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageMail, Code: 451, Times: 1})
	e = relayError(t, sendTo(t, c, testTo))
	require.Equal(t, relay.StageMail, e.Stage)
	require.Equal(t, 451, e.Code)
	require.Equal(t, 5, srv.Connections())
	require.Equal(t, 4, srv.Count())
}

func TestSendNeverRetriesAfterData(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	c := newClient(t, srv, nil, nil)
	require.NoError(t, sendTo(t, c, testTo))

	srv.SetFault(smtptest.Fault{Stage: smtptest.StageData, Code: 421, Times: 1})
	e := relayError(t, sendTo(t, c, testTo))
	require.Equal(t, relay.StageDataEnd, e.Stage)
	require.Equal(t, 421, e.Code)
	require.Equal(t, 1, srv.Connections())
	require.Equal(t, 1, srv.Count())
}

func TestSendConcurrent(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	srv.SetLatency(10 * time.Millisecond)
	c := newClient(t, srv, nil, nil)

	const workers, perWorker = 8, 5
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for range workers {
		wg.Go(func() {
			for range perWorker {
				errs <- trySend(t.Context(), c, testTo)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, workers*perWorker, srv.Count())
	require.LessOrEqual(t, srv.Connections(), workers)
}

// MaxConns caps the connections open at once: the other sends wait for
// one of them.
func TestMaxConnsCapsOpenConnections(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	srv.SetLatency(20 * time.Millisecond)
	c := newClient(t, srv, func(c *relay.Config) { c.MaxConns = 2 }, nil)

	const sends = 8
	var wg sync.WaitGroup
	errs := make(chan error, sends)
	for range sends {
		wg.Go(func() { errs <- trySend(t.Context(), c, testTo) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, sends, srv.Count())
	require.LessOrEqual(t, srv.PeakConnections(), 2)
	require.LessOrEqual(t, srv.Connections(), 2)
}

// A relay that caps connections below MaxConns refuses the extra ones at
// the greeting with 421: the sends wait for an open connection instead of
// failing.
func TestGreeting421WaitsForAnOpenConnection(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithMaxConnections(1))
	c := newClient(t, srv, func(c *relay.Config) { c.MaxConns = 4 }, nil)

	// The first send holds its connection at MAIL until another one was
	// refused.
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageMail, Hang: true, Times: 1})
	const sends = 4
	var wg sync.WaitGroup
	errs := make(chan error, sends)
	for range sends {
		wg.Go(func() { errs <- trySend(t.Context(), c, testTo) })
	}
	require.Eventually(t, func() bool { return srv.Connections() >= 2 }, 10*time.Second, 5*time.Millisecond,
		"a second connection, refused at its greeting")
	srv.ClearFault()
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, sends, srv.Count())
	require.Equal(t, 1, srv.PeakConnections())
	require.GreaterOrEqual(t, srv.Connections(), 2, "one accepted, one or more refused")
}

// A 421 at the greeting with no other connection open fails the send.
func TestGreeting421WithNoneOpenFails(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	c := newClient(t, srv, nil, nil)
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageConnect, Code: 421, EnhancedCode: [3]int{4, 7, 0}, Times: 1})
	e := relayError(t, sendTo(t, c, testTo))
	require.Equal(t, relay.StageGreeting, e.Stage)
	require.Equal(t, 421, e.Code)
	require.Equal(t, "4.7.0", e.Enhanced)
	require.Equal(t, 1, srv.Connections())
}

// After a refused recipient the connection stays in step (RSET) and
// carries the next mail.
func TestRcptRefusalKeepsConnection(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithCommands())
	c := newClient(t, srv, nil, nil)
	require.NoError(t, sendTo(t, c, testTo))
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, EnhancedCode: [3]int{5, 1, 1}, Times: 1})
	e := relayError(t, sendTo(t, c, "bob@example.com"))
	require.Equal(t, relay.StageRcpt, e.Stage)
	require.Equal(t, 550, e.Code)
	require.Equal(t, "5.1.1", e.Enhanced)
	require.NoError(t, sendTo(t, c, testTo))

	require.Equal(t, 1, srv.Connections())
	require.Equal(t, 2, srv.Count())
	cmds := srv.Commands()
	require.Len(t, cmds, 1)
	// The server offers PIPELINING: DATA went out with the refused RCPT,
	// and RSET follows their replies.
	verbs := commandVerbs(cmds[0])
	i := slices.Index(verbs, "RSET")
	require.Positive(t, i, "RSET after the refused RCPT: %q", cmds[0])
	require.Equal(t, []string{"RCPT", "DATA"}, verbs[i-2:i], "%q", cmds[0])
	require.Equal(t, []string{"MAIL", "RCPT", "DATA"}, verbs[i+1:], "the next mail on the same connection: %q", cmds[0])
}

// A session that the server keeps refusing is ended after 8 refused
// replies (with QUIT, not reset) since its last delivered mail, before a
// server that counts errors (Postfix: more than 10) slows it down: after
// four recipients refused in a row when pipelined (RCPT and DATA refused
// each time), after eight when not. A delivered mail starts the count again.
func TestRefusalsInARowEndTheSession(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		opts    []smtptest.Option
		perConn int // refused transactions per connection
	}{
		{"pipelined", nil, 4},
		{"one command at a time", []smtptest.Option{smtptest.WithoutPipelining()}, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, append(tc.opts, smtptest.WithCommands())...)
			c := newClient(t, srv, nil, nil)
			srv.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 450, EnhancedCode: [3]int{4, 2, 0}})
			for range 2*tc.perConn + 1 {
				require.Equal(t, relay.StageRcpt, relay.StageOf(sendTo(t, c, "bob@example.com")))
			}
			require.Equal(t, 3, srv.Connections(), "a new connection after each %d refused", tc.perConn)

			// A delivered mail starts the count again: the refusals on
			// either side of it share the third connection.
			srv.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 450, EnhancedCode: [3]int{4, 2, 0}, Times: tc.perConn - 2})
			for range tc.perConn - 2 {
				require.Error(t, sendTo(t, c, "bob@example.com"))
			}
			require.NoError(t, sendTo(t, c, testTo))
			srv.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 450, EnhancedCode: [3]int{4, 2, 0}})
			for range tc.perConn - 1 {
				require.Error(t, sendTo(t, c, "bob@example.com"))
			}
			require.Equal(t, 3, srv.Connections())

			require.NoError(t, c.Close()) // waits for the QUITs it started
			for _, conn := range srv.Commands()[:2] {
				verbs := commandVerbs(conn)
				require.Equal(t, tc.perConn-1, countOf(verbs, "RSET"), "%q", conn)
				require.Equal(t, "QUIT", verbs[len(verbs)-1], "ended with QUIT: %q", conn)
			}
		})
	}
}

func countOf(ss []string, s string) int {
	n := 0
	for _, x := range ss {
		if x == s {
			n++
		}
	}
	return n
}

// commandVerbs returns the first word of each command line.
func commandVerbs(lines []string) []string {
	verbs := make([]string, len(lines))
	for i, l := range lines {
		verbs[i], _, _ = strings.Cut(l, " ")
	}
	return verbs
}

// mailLines returns the MAIL commands among lines.
func mailLines(lines []string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, "MAIL ") {
			out = append(out, l)
		}
	}
	return out
}

// SMTPUTF8 is asked for only when an address needs it.
func TestSMTPUTF8OnlyWhenNeeded(t *testing.T) {
	t.Parallel()
	t.Run("server with SMTPUTF8", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t, smtptest.WithSMTPUTF8(), smtptest.WithCommands())
		c := newClient(t, srv, nil, nil)
		require.NoError(t, sendTo(t, c, testTo))
		require.NoError(t, sendTo(t, c, "张三@example.com"))
		msgs := srv.WaitMessages(t, 2, waitMessages)
		require.Equal(t, []string{"张三@example.com"}, msgs[1].To)

		mails := mailLines(srv.Commands()[0])
		require.Len(t, mails, 2)
		assert.NotContains(t, mails[0], "SMTPUTF8", "ASCII addresses: %q", mails[0])
		assert.True(t, strings.HasSuffix(mails[1], " SMTPUTF8"), "non-ASCII local part: %q", mails[1])
	})
	t.Run("server without SMTPUTF8", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t, smtptest.WithCommands())
		c := newClient(t, srv, nil, nil)
		require.NoError(t, sendTo(t, c, testTo))
		err := sendTo(t, c, "张三@example.com")
		require.ErrorIs(t, err, relay.ErrNeedsSMTPUTF8)
		require.Equal(t, relay.StageMail, relay.StageOf(err))
		require.Nil(t, relay.ReplyError(err))
		require.Len(t, mailLines(srv.Commands()[0]), 1, "no MAIL for the mail that cannot pass")
		require.Equal(t, 1, srv.Count())

		require.NoError(t, sendTo(t, c, testTo))
		require.Equal(t, 1, srv.Connections(), "the connection was kept")
		require.Equal(t, 2, srv.Count())
	})
}

// An internationalized domain goes to the server as its A-label, in the
// envelope and the To header, without SMTPUTF8.
func TestSendInternationalAddresses(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithCommands())
	c := newClient(t, srv, nil, nil)
	require.NoError(t, sendTo(t, c, "Kim@Bücher.de"))
	got := srv.WaitMessages(t, 1, waitMessages)[0]
	require.Equal(t, []string{"Kim@xn--bcher-kva.de"}, got.To)
	require.Contains(t, string(got.Raw), "\r\nTo: Kim@xn--bcher-kva.de\r\n")
	require.NotContains(t, mailLines(srv.Commands()[0])[0], "SMTPUTF8")
}

// The EHLO name is HelloName, or an address literal of the connection's
// own address.
func TestHelloName(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, want string }{
		{"mx1.verifyq.test", "EHLO mx1.verifyq.test"},
		{"", "EHLO [127.0.0.1]"},
		{"[192.0.2.7]", "EHLO [192.0.2.7]"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, smtptest.WithCommands())
			c := newClient(t, srv, func(c *relay.Config) { c.HelloName = tt.name }, nil)
			require.NoError(t, sendTo(t, c, testTo))
			require.Equal(t, tt.want, srv.Commands()[0][0])
		})
	}
}

func TestSendTLSAndAuth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opt  smtptest.Option
		mode relay.TLSMode
	}{
		{"auto with STARTTLS", smtptest.WithTLS(), relay.TLSAuto},
		{"required STARTTLS", smtptest.WithTLS(), relay.TLSStartTLS},
		{"implicit TLS", smtptest.WithImplicitTLS(), relay.TLSImplicit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, tt.opt, smtptest.WithAuth(testUser, testPass))
			c := newClient(t, srv, func(c *relay.Config) {
				c.TLS = tt.mode
				c.Username, c.Password = testUser, testPass
				c.RootCAs = srv.RootCAs()
			}, nil)
			for range 2 {
				require.NoError(t, sendTo(t, c, testTo))
			}
			msgs := srv.WaitMessages(t, 2, waitMessages)
			require.True(t, msgs[0].TLS)
			require.True(t, msgs[1].TLS)
			require.Equal(t, 1, srv.Connections())
		})
	}
}

func TestSendAuthOverPlainLoopback(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithAuth(testUser, testPass))
	c := newClient(t, srv, func(c *relay.Config) { c.Username, c.Password = testUser, testPass }, nil)
	require.NoError(t, sendTo(t, c, testTo))
	require.Equal(t, 1, srv.Count())
}

// After a refused AUTH, by PLAIN or by LOGIN where PLAIN is not offered,
// the client does not cancel the finished exchange with "*" (which the
// server would read as a command) and ends the session with QUIT; either
// way the failure is the relay refusing verifyq's mail.
func TestSendWrongPassword(t *testing.T) {
	t.Parallel()
	b64 := base64.StdEncoding.EncodeToString
	for _, tt := range []struct {
		mech  string
		opts  []smtptest.Option
		verbs []string
	}{
		{"PLAIN", nil, []string{"EHLO", "AUTH", "QUIT"}},
		{"LOGIN", []smtptest.Option{smtptest.WithAuthMechanisms(sasl.Login)}, []string{"EHLO", "AUTH", b64([]byte("wrong-pass")), "QUIT"}},
	} {
		srv := smtptest.Start(t, append(tt.opts, smtptest.WithAuth(testUser, testPass), smtptest.WithCommands())...)
		c := newClient(t, srv, func(c *relay.Config) { c.Username, c.Password = testUser, "wrong-pass" }, nil)
		err := sendTo(t, c, testTo)
		e := relayError(t, err)
		require.Equal(t, relay.StageAuth, e.Stage)
		require.Equal(t, 535, e.Code)
		require.Equal(t, "5.7.8", e.Enhanced)
		require.NotContains(t, err.Error(), "wrong-pass")
		require.Equal(t, delivery.RelayRefused, delivery.ClassOf(err), "%s: the relay refuses verifyq's mail", tt.mech)

		cmds := srv.WaitCommand(t, "QUIT", waitMessages)
		require.Len(t, cmds, 1)
		require.Equal(t, tt.verbs, commandVerbs(cmds[0]), "%q", cmds[0])
		require.NotContains(t, cmds[0], "*")
		require.True(t, strings.HasPrefix(cmds[0][1], "AUTH "+tt.mech+" "), "%q", cmds[0][1])
		require.Zero(t, srv.Count())
	}
}

// A relay that offers AUTH LOGIN and not PLAIN, as Microsoft 365
// (smtp.office365.com: "AUTH LOGIN XOAUTH2"), takes verifyq's mail over
// LOGIN with the configured credentials; PLAIN stays preferred where both
// are offered; a relay that offers neither gets no credentials (a wrong
// password: TestSendWrongPassword).
func TestSendAuthLogin(t *testing.T) {
	t.Parallel()
	b64 := base64.StdEncoding.EncodeToString
	login := smtptest.WithAuthMechanisms(sasl.Login, "XOAUTH2")

	t.Run("LOGIN only", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t, smtptest.WithAuth(testUser, testPass), login, smtptest.WithCommands())
		c := newClient(t, srv, func(c *relay.Config) { c.Username, c.Password = testUser, testPass }, nil)
		require.NoError(t, sendTo(t, c, testTo))
		require.Len(t, srv.WaitMessages(t, 1, waitMessages), 1)
		cmds := srv.Commands()
		require.Len(t, cmds, 1)
		require.Equal(t, []string{"EHLO", "AUTH", b64([]byte(testPass)), "MAIL"}, commandVerbs(cmds[0])[:4], "%q", cmds[0])
		require.Equal(t, "AUTH LOGIN "+b64([]byte(testUser)), cmds[0][1])
	})
	t.Run("LOGIN only, over STARTTLS", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t, smtptest.WithTLS(), smtptest.WithAuth(testUser, testPass), login)
		c := newClient(t, srv, func(c *relay.Config) {
			c.TLS = relay.TLSStartTLS
			c.Username, c.Password = testUser, testPass
			c.RootCAs = srv.RootCAs()
		}, nil)
		require.NoError(t, sendTo(t, c, testTo))
		require.True(t, srv.WaitMessages(t, 1, waitMessages)[0].TLS)
	})
	t.Run("PLAIN preferred", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t, smtptest.WithAuth(testUser, testPass), smtptest.WithCommands())
		c := newClient(t, srv, func(c *relay.Config) { c.Username, c.Password = testUser, testPass }, nil)
		require.NoError(t, sendTo(t, c, testTo))
		require.True(t, strings.HasPrefix(srv.Commands()[0][1], "AUTH PLAIN "), "%q", srv.Commands()[0])
	})
	t.Run("neither PLAIN nor LOGIN", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t, smtptest.WithAuth(testUser, testPass), smtptest.WithAuthMechanisms("XOAUTH2"), smtptest.WithCommands())
		c := newClient(t, srv, func(c *relay.Config) { c.Username, c.Password = testUser, testPass }, nil)
		err := sendTo(t, c, testTo)
		require.ErrorIs(t, err, relay.ErrNoAuthMechanism)
		require.Equal(t, relay.StageAuth, relay.StageOf(err))
		require.Contains(t, err.Error(), "neither AUTH PLAIN nor AUTH LOGIN")
		require.Equal(t, delivery.RelayRefused, delivery.ClassOf(err))
		for _, lines := range srv.Commands() {
			require.NotContains(t, commandVerbs(lines), "AUTH")
		}
	})
}

func TestSendTLSFailures(t *testing.T) {
	t.Parallel()
	t.Run("starttls required but not offered", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t)
		c := newClient(t, srv, func(c *relay.Config) { c.TLS = relay.TLSStartTLS }, nil)
		err := sendTo(t, c, testTo)
		require.ErrorIs(t, err, relay.ErrNoStartTLS)
		require.Equal(t, relay.StageHello, relay.StageOf(err))
		require.Zero(t, srv.Count())
	})
	for _, tt := range []struct {
		name string
		opt  smtptest.Option
		mode relay.TLSMode
	}{
		{"starttls", smtptest.WithTLS(), relay.TLSAuto},
		{"implicit", smtptest.WithImplicitTLS(), relay.TLSImplicit},
	} {
		t.Run("untrusted certificate, "+tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, tt.opt, smtptest.WithAuth(testUser, testPass), smtptest.WithCommands())
			c := newClient(t, srv, func(c *relay.Config) {
				c.TLS = tt.mode
				c.Username, c.Password = testUser, testPass
			}, nil)
			err := sendTo(t, c, testTo)
			require.Equal(t, relay.StageTLS, relay.StageOf(err), "err: %v", err)
			var uae x509.UnknownAuthorityError
			require.ErrorAs(t, err, &uae)
			require.Zero(t, srv.Count())
			for _, lines := range srv.Commands() {
				require.NotContains(t, commandVerbs(lines), "AUTH", "no credentials without TLS")
			}
		})
	}
	t.Run("auth required but not offered", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t)
		c := newClient(t, srv, func(c *relay.Config) { c.Username, c.Password = testUser, testPass }, nil)
		err := sendTo(t, c, testTo)
		require.ErrorIs(t, err, relay.ErrNoAuthMechanism)
		require.Equal(t, relay.StageAuth, relay.StageOf(err))
	})
	t.Run("credentials in clear to a host that is not loopback", func(t *testing.T) {
		t.Parallel()
		// Whatever the mechanism: PLAIN, or LOGIN where PLAIN is not offered.
		for _, opts := range [][]smtptest.Option{nil, {smtptest.WithAuthMechanisms(sasl.Login)}} {
			srv := smtptest.Start(t, append(opts, smtptest.WithAuth(testUser, testPass), smtptest.WithCommands())...)
			c := newClient(t, srv, func(c *relay.Config) {
				// 0.0.0.0 reaches the local host, but is not a loopback address.
				c.Host = "0.0.0.0"
				c.Username, c.Password = testUser, testPass
			}, nil)
			err := sendTo(t, c, testTo)
			require.ErrorIs(t, err, relay.ErrInsecureAuth)
			require.Equal(t, relay.StageAuth, relay.StageOf(err))
			for _, lines := range srv.Commands() {
				require.NotContains(t, commandVerbs(lines), "AUTH")
			}
		}
	})
}

// tls=auto on a port other than 465 against a server that speaks implicit
// TLS there: no greeting comes, and the error says what to do.
func TestAutoTLSAgainstImplicitTLSPort(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithImplicitTLS())
	require.NotEqual(t, 465, srv.Port())
	for _, tt := range []struct {
		mode relay.TLSMode
		hint bool
	}{{relay.TLSAuto, true}, {relay.TLSStartTLS, false}, {relay.TLSNone, false}} {
		c := newClient(t, srv, func(c *relay.Config) { c.TLS = tt.mode; c.Timeout = 300 * time.Millisecond }, nil)
		err := sendTo(t, c, testTo)
		require.Error(t, err)
		assert.Equal(t, relay.StageGreeting, relay.StageOf(err), "%s: %v", tt.mode, err)
		assert.True(t, relay.IsTimeout(err), "%s: %v", tt.mode, err)
		assert.Equal(t, tt.hint, errors.Is(err, relay.ErrNoGreeting), "%s: %v", tt.mode, err)
	}
	require.Zero(t, srv.Count())
}

// The server's certificate must chain to RootCAs (or the CA file's) and be
// valid for ServerName, or Host.
func TestTLSVerification(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithImplicitTLS())
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, srv.CertificatePEM(), 0o600))
	fromFile, err := relay.LoadCAFile(caFile)
	require.NoError(t, err)
	empty := x509.NewCertPool()

	tests := []struct {
		name string
		mod  func(*relay.Config)
		ok   bool
	}{
		{"system roots", func(*relay.Config) {}, false},
		{"RootCAs", func(c *relay.Config) { c.RootCAs = srv.RootCAs() }, true},
		{"CA file", func(c *relay.Config) { c.CAFile, c.RootCAs = caFile, fromFile }, true},
		{"RootCAs over TLSConfig's", func(c *relay.Config) {
			c.RootCAs = srv.RootCAs()
			c.TLSConfig = &tls.Config{RootCAs: empty}
		}, true},
		{"TLSConfig's RootCAs", func(c *relay.Config) { c.TLSConfig = &tls.Config{RootCAs: srv.RootCAs()} }, true},
		{"ServerName the certificate names", func(c *relay.Config) { c.RootCAs, c.ServerName = srv.RootCAs(), "localhost" }, true},
		{"ServerName the certificate does not name", func(c *relay.Config) { c.RootCAs, c.ServerName = srv.RootCAs(), "mx.example.com" }, false},
		{"ServerName over TLSConfig's", func(c *relay.Config) {
			c.RootCAs, c.ServerName = srv.RootCAs(), "localhost"
			c.TLSConfig = &tls.Config{ServerName: "mx.example.com"}
		}, true},
		{"TLSConfig's ServerName over Host", func(c *relay.Config) {
			c.RootCAs = srv.RootCAs()
			c.TLSConfig = &tls.Config{ServerName: "mx.example.com"}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newClient(t, srv, func(c *relay.Config) { c.TLS = relay.TLSImplicit; tt.mod(c) }, nil)
			err := sendTo(t, c, testTo)
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Equal(t, relay.StageTLS, relay.StageOf(err), "err: %v", err)
			require.Nil(t, relay.ReplyError(err))
		})
	}
}

func TestLoadCAFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, err := relay.LoadCAFile(filepath.Join(dir, "missing.pem"))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, "ca_file: ")

	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("secret-content\n"), 0o600))
	_, err = relay.LoadCAFile(notPEM)
	require.ErrorContains(t, err, "holds no PEM certificate")
	require.NotContains(t, err.Error(), "secret-content")

	big := filepath.Join(dir, "big.pem")
	require.NoError(t, os.WriteFile(big, bytes.Repeat([]byte("x"), 1<<20+1), 0o600))
	_, err = relay.LoadCAFile(big)
	require.ErrorContains(t, err, "is over 1048576 bytes")
}

func TestClientClose(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithCommands())
	c := newClient(t, srv, nil, nil)
	require.NoError(t, sendTo(t, c, testTo))
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "Close is idempotent")

	// Close waited for the idle connection's QUIT.
	cmds := srv.Commands()
	require.Len(t, cmds, 1)
	require.Equal(t, "QUIT", cmds[0][len(cmds[0])-1], "%q", cmds[0])

	err := sendTo(t, c, testTo)
	require.ErrorIs(t, err, relay.ErrClosed)
	require.Equal(t, relay.StageConnect, relay.StageOf(err))
	require.Equal(t, 1, srv.Connections())
}

func TestClientTimeout(t *testing.T) {
	t.Parallel()
	c, err := relay.NewClient(relay.Config{Host: "smtp.example.com", Port: 587}, nil)
	require.NoError(t, err)
	require.Equal(t, relay.DefaultTimeout, c.Timeout())
	require.NoError(t, c.Close())
	c, err = relay.NewClient(relay.Config{Host: "smtp.example.com", Port: 587, Timeout: 7 * time.Second}, nil)
	require.NoError(t, err)
	require.Equal(t, 7*time.Second, c.Timeout())
	require.NoError(t, c.Close())
}

func TestSendLogsNoSecrets(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))

	srv := smtptest.Start(t, smtptest.WithAuth(testUser, testPass))
	c := newClient(t, srv, func(c *relay.Config) {
		c.Username, c.Password = testUser, testPass
		c.Timeout = 300 * time.Millisecond
	}, logger)

	require.NoError(t, sendTo(t, c, testTo))
	require.NoError(t, sendTo(t, c, testTo))
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, Message: "<" + testTo + "> unknown"})
	require.Error(t, sendTo(t, c, testTo))
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageData, Code: 554, Message: "spam " + testCode})
	require.Error(t, sendTo(t, c, testTo))
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageData, Hang: true})
	require.Error(t, sendTo(t, c, testTo))
	srv.ClearFault()
	require.NoError(t, srv.Stop())
	require.NoError(t, srv.Restart())
	require.NoError(t, sendTo(t, c, testTo))
	bad := newClient(t, srv, func(c *relay.Config) { c.Username, c.Password = testUser, "wrong-"+testPass }, logger)
	require.Error(t, sendTo(t, bad, testTo))

	// A greeting refused while another connection is open.
	capped := smtptest.Start(t, smtptest.WithMaxConnections(1))
	c2 := newClient(t, capped, func(c *relay.Config) { c.MaxConns = 2 }, logger)
	capped.SetFault(smtptest.Fault{Stage: smtptest.StageMail, Hang: true, Times: 1})
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Go(func() { errs <- trySend(t.Context(), c2, testTo) })
	}
	require.Eventually(t, func() bool { return capped.Connections() >= 2 }, 10*time.Second, 5*time.Millisecond,
		"a second connection, refused at its greeting")
	capped.ClearFault()
	wg.Wait()
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)

	out := buf.String()
	require.NotEmpty(t, out)
	require.Contains(t, out, mail.MaskAddress(testTo))
	require.Contains(t, out, "relay refused a connection at its greeting")
	require.NotContains(t, out, testCode)
	require.NotContains(t, out, testPass)
	require.NotContains(t, out, testTo)
	require.NotContains(t, out, "alice.smith")
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// NotAccepted holds for every failure that proves the relay did not take
// the mail, and not for a timeout after the final dot: the server may have
// taken the mail then, as this one does once the hang ends.
func TestNotAccepted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		stop  bool            // the server is down
		fault *smtptest.Fault // else this fault
		auth  string          // else the client's wrong password
		stage relay.Stage
		want  bool
	}{
		{name: "refused connection", stop: true, stage: relay.StageConnect, want: true},
		{name: "no greeting", fault: &smtptest.Fault{Stage: smtptest.StageConnect, Hang: true}, stage: relay.StageGreeting, want: true},
		{name: "wrong password", auth: "wrong-" + testPass, stage: relay.StageAuth, want: true},
		{name: "MAIL unanswered", fault: &smtptest.Fault{Stage: smtptest.StageMail, Hang: true}, stage: relay.StageMail, want: true},
		{name: "RCPT 451", fault: &smtptest.Fault{Stage: smtptest.StageRcpt, Code: 451}, stage: relay.StageRcpt, want: true},
		{name: "451 after the dot", fault: &smtptest.Fault{Stage: smtptest.StageData, Code: 451}, stage: relay.StageDataEnd, want: true},
		{name: "no reply after the dot", fault: &smtptest.Fault{Stage: smtptest.StageData, Hang: true}, stage: relay.StageDataEnd, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var opts []smtptest.Option
			if tt.auth != "" {
				opts = append(opts, smtptest.WithAuth(testUser, testPass))
			}
			srv := smtptest.Start(t, opts...)
			c := newClient(t, srv, func(c *relay.Config) {
				c.Timeout = 300 * time.Millisecond
				if tt.auth != "" {
					c.Username, c.Password = testUser, tt.auth
				}
			}, nil)
			switch {
			case tt.stop:
				require.NoError(t, srv.Stop())
			case tt.fault != nil:
				srv.SetFault(*tt.fault)
			}
			err := sendTo(t, c, testTo)
			require.Error(t, err)
			assert.Equal(t, tt.stage, relay.StageOf(err), "%v", err)
			assert.Equal(t, tt.want, relay.NotAccepted(err), "%v", err)
			srv.ClearFault()
			if tt.want {
				assert.Zero(t, srv.Count(), "nothing taken")
			} else {
				srv.WaitMessages(t, 1, waitMessages) // taken late: a second relay would have made a copy
			}
		})
	}
	assert.False(t, relay.NotAccepted(errors.New("no stage")))
	assert.False(t, relay.NotAccepted(nil))
}
