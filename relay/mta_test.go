//go:build mta

package relay_test

import (
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/mtatest"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/relay"
)

// mtaWait bounds every wait for a delivery or a Postfix log line.
const mtaWait = 30 * time.Second

// mtaLogin is verifyq's SASL account at the relay (in the domain's realm).
const mtaLogin = "verifyq@" + mtatest.DefaultDomain

// Log lines that a clean session never leaves: the client dropped the
// connection mid-conversation, or sent something that is not a command
// (go-smtp's "*" after a refused AUTH).
var badLogLines = []string{"lost connection after", "non-SMTP command"}

// startMTA starts a Postfix for the test and waits until the harness's own
// start probes (one session per listener) have ended, so that every session
// logged afterwards is the test's. At the end of the test, after the
// clients' Close (cleanups run last first), it waits for every session to
// end and checks the log for bad lines; allowed are substrings of lines
// that the test expects (a client refusing the server's certificate drops
// the connection in the TLS handshake).
func startMTA(t *testing.T, opts mtatest.Options, allowed ...string) *mtatest.Postfix {
	t.Helper()
	p := mtatest.Start(t, opts)
	settle(t, p, 2)
	t.Cleanup(func() {
		settle(t, p, 0)
		checkLog(t, p, allowed...)
	})
	return p
}

// checkLog fails the test for any bad line in p's log, other than one
// containing an allowed substring.
func checkLog(t *testing.T, p *mtatest.Postfix, allowed ...string) {
	t.Helper()
lines:
	for _, line := range p.Log() {
		for _, a := range allowed {
			if strings.Contains(line, a) {
				continue lines
			}
		}
		for _, bad := range badLogLines {
			assert.NotContains(t, line, bad, "the Postfix log has a bad line")
		}
	}
}

// Session lines of Postfix's smtpd: ": connect from" (not "disconnect").
const (
	connectLine    = ": connect from "
	disconnectLine = ": disconnect from "
)

// countLog counts p's log lines containing substr.
func countLog(p *mtatest.Postfix, substr string) int {
	n := 0
	for _, line := range p.Log() {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

// settle waits until at least least sessions were logged and every one
// logged has ended (its disconnect line logged too), and returns the
// number of sessions.
func settle(t *testing.T, p *mtatest.Postfix, least int) int {
	t.Helper()
	deadline := time.Now().Add(mtaWait)
	for {
		c, d := countLog(p, connectLine), countLog(p, disconnectLine)
		if c >= least && c == d {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions did not end within %s: %d connects, %d disconnects; log:\n%s", mtaWait, c, d, strings.Join(p.Log(), "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sessions closes c and returns the disconnect lines of the sessions that
// p logged after the first skip ones (the harness's probes, two): one per
// connection, each with the count of every command of the session (e.g.
// "ehlo=2 starttls=1 auth=1 mail=2 rcpt=2 data=2 quit=1 commands=11").
func sessions(t *testing.T, p *mtatest.Postfix, c *relay.Client) []string {
	t.Helper()
	require.NoError(t, c.Close())
	settle(t, p, 0)
	var lines []string
	for _, line := range p.Log() {
		if strings.Contains(line, disconnectLine) {
			lines = append(lines, line)
		}
	}
	require.GreaterOrEqual(t, len(lines), 2, "the harness's probes")
	return lines[2:]
}

// mtaConfig is a Client's configuration for p: the submission port with
// STARTTLS, the CA loaded from p's CA file, verifyq's SASL account.
func mtaConfig(t *testing.T, p *mtatest.Postfix) relay.Config {
	t.Helper()
	roots, err := relay.LoadCAFile(p.CAFile())
	require.NoError(t, err)
	return relay.Config{
		Host:     p.Host(),
		Port:     p.SubmissionPort(),
		TLS:      relay.TLSStartTLS,
		CAFile:   p.CAFile(),
		RootCAs:  roots,
		Username: mtaLogin,
		Password: testPass,
		Timeout:  mtaWait,
	}
}

// mtaClient returns a Client for cfg, closed at the end of the test
// (before startMTA's log check, which was registered earlier).
func mtaClient(t *testing.T, cfg relay.Config, logger *slog.Logger) *relay.Client {
	t.Helper()
	c, err := relay.NewClient(cfg, logger)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// mtaSend composes the verification mail m (from testFrom) and sends it
// with c, from testEnvFrom to m.To.
func mtaSend(t *testing.T, c *relay.Client, m mail.Message) error {
	t.Helper()
	if m.Locale == "" {
		m.Locale = mail.LocaleEN
	}
	if m.Code == "" {
		m.Code = testCode
	}
	if m.ExpiresIn == 0 {
		m.ExpiresIn = 10 * time.Minute
	}
	// An error, not require: the load tests send from goroutines of their
	// own, where require cannot stop the test.
	composed, err := mail.Compose(testFrom, m)
	if err != nil {
		return fmt.Errorf("compose: %w", err)
	}
	return c.Send(t.Context(), relay.Envelope{From: testEnvFrom, To: m.To}, composed)
}

// mtaSendTo sends a verification mail with code to to.
func mtaSendTo(t *testing.T, c *relay.Client, to, code string) error {
	t.Helper()
	return mtaSend(t, c, mail.Message{To: to, Code: code})
}

// requireFailure checks err's stage, reply and class, and returns the
// reply's text.
func requireFailure(t *testing.T, err error, stage relay.Stage, code int, enhanced string, class delivery.Class) string {
	t.Helper()
	e := relayError(t, err)
	assert.Equal(t, stage, e.Stage, "%v", err)
	assert.Equal(t, code, e.Code, "%v", err)
	assert.Equal(t, enhanced, e.Enhanced, "%v", err)
	assert.Equal(t, class, delivery.ClassOf(err), "%v", err)
	return e.Text
}

// received is the Received field that Postfix added to a delivered mail,
// unfolded.
func received(t *testing.T, raw []byte) string {
	t.Helper()
	head, _, _ := strings.Cut(string(raw), "\n\n")
	head = strings.ReplaceAll(head, "\r", "")
	for field := range strings.SplitSeq(strings.ReplaceAll(head, "\n\t", " "), "\n") {
		if strings.HasPrefix(field, "Received: ") {
			return field
		}
	}
	t.Fatalf("no Received field in\n%s", raw)
	return ""
}

// Delivery in every TLS mode, with AUTH: two mails on one connection each.
// Postfix's Received field names the protocol: ESMTPSA is ESMTP with TLS
// (S) and AUTH (A).
func TestMTAEveryTLSMode(t *testing.T) {
	t.Parallel()
	p := startMTA(t, mtatest.Options{Users: map[string]string{mtaLogin: testPass}, PlaintextAuth: true})
	for _, tc := range []struct {
		name     string
		tls      relay.TLSMode
		port     int
		protocol string
	}{
		{"starttls", relay.TLSStartTLS, p.SubmissionPort(), "ESMTPSA"},
		{"smtps", relay.TLSImplicit, p.SMTPSPort(), "ESMTPSA"},
		{"auto", relay.TLSAuto, p.SubmissionPort(), "ESMTPSA"},
		{"none", relay.TLSNone, p.SubmissionPort(), "ESMTPA"},
	} {
		before := countLog(p, disconnectLine)
		cfg := mtaConfig(t, p)
		cfg.TLS, cfg.Port = tc.tls, tc.port
		c := mtaClient(t, cfg, nil)
		for i, box := range []string{"alice", "bob"} {
			code := fmt.Sprintf("%s-%d", tc.name, i)
			require.NoError(t, mtaSendTo(t, c, p.Address(box), code), tc.name)
			raw := p.WaitMail(t, box, mtaWait)
			assert.Contains(t, string(raw), "Return-Path: <"+testEnvFrom+">", tc.name)
			assert.Contains(t, received(t, raw), " with "+tc.protocol+" id ", tc.name)
			assert.Contains(t, string(raw), code, tc.name)
		}
		got := sessions(t, p, c)[before-2:]
		require.Len(t, got, 1, "%s: both mails on one connection", tc.name)
		assert.Contains(t, got[0], " auth=1 mail=2 rcpt=2 data=2 quit=1 ", tc.name)
		t.Logf("%s: %s", tc.name, got[0])
	}
	assert.Len(t, p.Mails(t), 8)
}

// A wrong password is refused with 535 5.7.8 and the session ends with
// QUIT, not with go-smtp's "*" (which Postfix logs as a non-SMTP command).
func TestMTAWrongPassword(t *testing.T) {
	t.Parallel()
	p := startMTA(t, mtatest.Options{Users: map[string]string{mtaLogin: testPass}})
	cfg := mtaConfig(t, p)
	cfg.Password = "wrong password"
	bad := mtaClient(t, cfg, nil)
	err := mtaSendTo(t, bad, p.Address("alice"), testCode)
	requireFailure(t, err, relay.StageAuth, 535, "5.7.8", delivery.RelayRefused)
	assert.NotContains(t, err.Error(), "wrong password")
	got := sessions(t, p, bad)
	require.Len(t, got, 1)
	assert.Contains(t, got[0], " auth=0/1 quit=1 ", "QUIT after the refusal, nothing else")
	p.WaitLog(t, "authentication failed", mtaWait)
	assert.Zero(t, countLog(p, "non-SMTP command"))

	good := mtaClient(t, mtaConfig(t, p), nil)
	require.NoError(t, mtaSendTo(t, good, p.Address("alice"), testCode))
	p.WaitMail(t, "alice", mtaWait)
}

// A refused recipient leaves the session in step: the next mail goes on the
// same connection, still authenticated (the relay requires it). Postfix
// offers PIPELINING, so DATA went out with the refused RCPT and was
// refused too (data=1/2).
func TestMTAUnknownUserKeepsConnection(t *testing.T) {
	t.Parallel()
	p := startMTA(t, mtatest.Options{Users: map[string]string{mtaLogin: testPass}, AuthRequired: true})
	c := mtaClient(t, mtaConfig(t, p), nil)
	text := requireFailure(t, mtaSendTo(t, c, "alice+x@"+p.Domain(), testCode), relay.StageRcpt, 550, "5.1.1", delivery.RecipientRefused)
	assert.Contains(t, text, "User unknown")
	require.NoError(t, mtaSendTo(t, c, p.Address("alice"), testCode))
	p.WaitMail(t, "alice", mtaWait)
	got := sessions(t, p, c)
	require.Len(t, got, 1, "one connection")
	assert.Equal(t, 3, countLog(p, connectLine), "the harness's two probes and the client's one connection")
	assert.Contains(t, got[0], " auth=1 mail=2 rcpt=1/2 data=1/2 rset=1 quit=1 ")
	assert.Zero(t, countLog(p, "lost connection after RCPT"))
	t.Logf("%s", got[0])
}

func TestMTASenderNotOwned(t *testing.T) {
	t.Parallel()
	const intruder = "intruder@" + mtatest.DefaultDomain
	p := startMTA(t, mtatest.Options{
		Users:        map[string]string{mtaLogin: testPass, intruder: testPass},
		SenderOwners: map[string]string{testEnvFrom: mtaLogin},
	})
	cfg := mtaConfig(t, p)
	cfg.Username = intruder
	c := mtaClient(t, cfg, nil)
	text := requireFailure(t, mtaSendTo(t, c, p.Address("alice"), testCode), relay.StageMail, 553, "5.7.1", delivery.RelayRefused)
	assert.Contains(t, text, "not owned by user "+intruder)
	got := sessions(t, p, c)
	require.Len(t, got, 1)
	assert.Contains(t, got[0], " mail=0/1 ")

	owner := mtaClient(t, mtaConfig(t, p), nil)
	require.NoError(t, mtaSendTo(t, owner, p.Address("alice"), testCode))
	p.WaitMail(t, "alice", mtaWait)
}

func TestMTAQuota(t *testing.T) {
	t.Parallel()
	p := startMTA(t, mtatest.Options{Users: map[string]string{mtaLogin: testPass}, OverQuota: []string{mtaLogin}})
	c := mtaClient(t, mtaConfig(t, p), nil)
	text := requireFailure(t, mtaSendTo(t, c, p.Address("alice"), testCode), relay.StageMail, 550, "5.4.5", delivery.RelayRefused)
	assert.Contains(t, text, "Daily user sending quota exceeded")
	got := sessions(t, p, c)
	require.Len(t, got, 1)
	assert.Contains(t, got[0], " mail=0/1 ")
	assert.Empty(t, p.Mails(t))
}

func TestMTASizeLimit(t *testing.T) {
	t.Parallel()
	p := startMTA(t, mtatest.Options{MessageSizeLimit: 1024})
	cfg := mtaConfig(t, p)
	cfg.Username, cfg.Password = "", ""
	c := mtaClient(t, cfg, nil)
	text := requireFailure(t, mtaSendTo(t, c, p.Address("alice"), testCode), relay.StageDataEnd, 552, "5.3.4", delivery.MessageRefused)
	t.Logf("552 5.3.4 %s", text)
	// The session stays in step (RSET): a small message on the same
	// connection is delivered.
	small := "Subject: small\r\n\r\nx\r\n"
	require.NoError(t, c.Send(t.Context(), relay.Envelope{From: testEnvFrom, To: p.Address("alice")}, strings.NewReader(small)))
	assert.Contains(t, string(p.WaitMail(t, "alice", mtaWait)), "Subject: small")
	got := sessions(t, p, c)
	require.Len(t, got, 1, "one connection")
	assert.Contains(t, got[0], " data=1/2 rset=1 ")
}

// greylisting starts a Postfix that greylists bob (450 4.2.0 at RCPT),
// with extra lines of main.cf, and a client that does not authenticate.
func greylisting(t *testing.T, extra ...string) (*mtatest.Postfix, *relay.Client) {
	t.Helper()
	p := startMTA(t, mtatest.Options{Greylisted: []string{"bob@" + mtatest.DefaultDomain}, Extra: extra})
	cfg := mtaConfig(t, p)
	cfg.Username, cfg.Password = "", ""
	return p, mtaClient(t, cfg, nil)
}

func TestMTAGreylisted(t *testing.T) {
	t.Parallel()
	p, c := greylisting(t)
	text := requireFailure(t, mtaSendTo(t, c, p.Address("bob"), testCode), relay.StageRcpt, 450, "4.2.0", delivery.RecipientDeferred)
	assert.Contains(t, text, "Greylisted")
	require.NoError(t, mtaSendTo(t, c, p.Address("alice"), testCode))
	p.WaitMail(t, "alice", mtaWait)
	got := sessions(t, p, c)
	require.Len(t, got, 1, "one connection")
	assert.Contains(t, got[0], " mail=2 rcpt=1/2 data=1/2 rset=1 quit=1 ")
}

// Recipients refused in a row do not slow the relay's connection down:
// Postfix answers every command a second late once a client has made more
// than 10 errors without delivering a mail (smtpd_soft_error_limit) and
// hangs up at 20. The client ends a session after 8 refused replies since
// its last delivered mail (four pipelined transactions refused at RCPT),
// so no session gets there, and the next mail goes on a new connection.
func TestMTARefusalsInARowStayUnderPostfixsErrorLimit(t *testing.T) {
	t.Parallel()
	p, c := greylisting(t)
	for range 14 {
		requireFailure(t, mtaSendTo(t, c, p.Address("bob"), testCode), relay.StageRcpt, 450, "4.2.0", delivery.RecipientDeferred)
	}
	require.NoError(t, mtaSendTo(t, c, p.Address("alice"), testCode))
	p.WaitMail(t, "alice", mtaWait)
	got := sessions(t, p, c)
	require.Len(t, got, 4, "a new connection after each four refused: %q", got)
	counts := regexp.MustCompile(` commands=(\d+)/(\d+)$`)
	for _, line := range got {
		m := counts.FindStringSubmatch(line)
		require.NotNil(t, m, "%q", line)
		ok, _ := strconv.Atoi(m[1])
		all, _ := strconv.Atoi(m[2])
		assert.LessOrEqual(t, all-ok, 8, "failed commands in one session: %q", line)
		assert.Contains(t, line, " quit=1 ", "ended with QUIT: %q", line)
	}
	assert.Zero(t, countLog(p, "too many errors"))
}

// MAIL, RCPT and DATA go out in one write where Postfix offers PIPELINING,
// even with smtpd_forbid_unauth_pipelining (the default from Postfix 3.9),
// and one at a time where it does not: Postfix logs "improper command
// pipelining" for a client that sends ahead unasked.
func TestMTAPipelining(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		extra string
		data  string // the summary's DATA count: DATA goes out with a refused RCPT only when pipelined
	}{
		{"offered", "smtpd_forbid_unauth_pipelining = yes", "data=3/4"},
		{"not offered", "smtpd_discard_ehlo_keywords = pipelining", "data=3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, c := greylisting(t, tc.extra)
			requireFailure(t, mtaSendTo(t, c, p.Address("bob"), testCode), relay.StageRcpt, 450, "4.2.0", delivery.RecipientDeferred)
			for range 3 {
				require.NoError(t, mtaSendTo(t, c, p.Address("alice"), testCode))
			}
			got := sessions(t, p, c)
			require.Len(t, got, 1, "one connection")
			assert.Contains(t, got[0], " mail=4 rcpt=3/4 "+tc.data+" rset=1 quit=1 ")
			assert.Zero(t, countLog(p, "improper command pipelining"), "%q", p.Log())
			assert.Zero(t, countLog(p, "synchronization"), "%q", p.Log())
		})
	}
}

// An address with a non-ASCII local part fails before MAIL FROM when the
// relay does not offer SMTPUTF8, and the connection goes on; with
// SMTPUTF8 it is delivered.
func TestMTAWithoutSMTPUTF8(t *testing.T) {
	t.Parallel()
	const jurgen = "jürgen"
	boxes := []string{"alice", jurgen}
	for _, off := range []bool{true, false} {
		p := startMTA(t, mtatest.Options{NoSMTPUTF8: off, Mailboxes: boxes})
		cfg := mtaConfig(t, p)
		cfg.Username, cfg.Password = "", ""
		c := mtaClient(t, cfg, nil)
		err := mtaSendTo(t, c, p.Address(jurgen), testCode)
		if !off {
			require.NoError(t, err)
			raw := p.WaitMail(t, jurgen, mtaWait)
			assert.Contains(t, string(raw), "Delivered-To: "+p.Address(jurgen))
			got := sessions(t, p, c)
			require.Len(t, got, 1)
			assert.Contains(t, got[0], " mail=1 rcpt=1 data=1 quit=1 ")
			continue
		}
		require.ErrorIs(t, err, relay.ErrNeedsSMTPUTF8)
		assert.Equal(t, relay.StageMail, relay.StageOf(err))
		assert.Equal(t, delivery.NeedsSMTPUTF8, delivery.ClassOf(err))
		require.NoError(t, mtaSendTo(t, c, p.Address("alice"), testCode))
		p.WaitMail(t, "alice", mtaWait)
		got := sessions(t, p, c)
		require.Len(t, got, 1, "one connection")
		// One MAIL, the ASCII mail's: none was sent for jürgen.
		assert.Contains(t, got[0], " mail=1 rcpt=1 data=1 quit=1 ")
		assert.Zero(t, countLog(p, jurgen))
	}
}

// The server's certificate is checked against the configured CA and name.
// A client that refuses the certificate ends the TLS handshake, so Postfix
// logs a lost connection after STARTTLS for each refusal, and only then.
func TestMTACertificate(t *testing.T) {
	t.Parallel()
	p := startMTA(t, mtatest.Options{Users: map[string]string{mtaLogin: testPass}}, "lost connection after STARTTLS")

	cfg := mtaConfig(t, p)
	cfg.CAFile, cfg.RootCAs = "", nil
	noCA := mtaClient(t, cfg, nil)
	e := relayError(t, mtaSendTo(t, noCA, p.Address("alice"), testCode))
	assert.Equal(t, relay.StageTLS, e.Stage, "%v", e)
	assert.Equal(t, delivery.RelayRefused, delivery.ClassOf(e))
	t.Logf("without the CA: %v", e)

	wrongName := mtaConfig(t, p)
	wrongName.ServerName = "wrong.example"
	wrong := mtaClient(t, wrongName, nil)
	e = relayError(t, mtaSendTo(t, wrong, p.Address("alice"), testCode))
	assert.Equal(t, relay.StageTLS, e.Stage, "%v", e)
	assert.Equal(t, delivery.RelayRefused, delivery.ClassOf(e))
	t.Logf("wrong server name: %v", e)

	byName := mtaConfig(t, p)
	byName.ServerName = p.ServerName()
	good := mtaClient(t, byName, nil)
	require.NoError(t, mtaSendTo(t, good, p.Address("alice"), testCode))
	p.WaitMail(t, "alice", mtaWait)

	require.NoError(t, noCA.Close())
	require.NoError(t, wrong.Close())
	require.NoError(t, good.Close())
	settle(t, p, 5)
	assert.Equal(t, 2, countLog(p, "lost connection after STARTTLS"), "one for each refused certificate")
	assert.Equal(t, 1, countLog(p, "sasl_username="), "no credentials over a refused certificate: only the good client authenticates")
}

// tooManyLines is the reply text to a connection over Postfix's cap,
// which it does not log (see concurrencyExceeded).
const tooManyLines = "too many connections"

// The relay caps connections at 5. verifyq's client, capped at 5 too,
// never hits the relay's cap; capped at 10, it is refused (421 at the
// greeting) until it keeps to the connections it has. Every mail is
// delivered either way. Not parallel, so that no other test of the
// package runs meanwhile: the durations logged (a cold pool: connections,
// TLS and all) are compared with an uncapped run's. They are not asserted.
func TestMTAConnectionCap(t *testing.T) {
	const (
		mails    = 100
		senders  = 20
		relayCap = 5
	)
	boxes := make([]string, mails)
	for i := range boxes {
		boxes[i] = fmt.Sprintf("u%d", i)
	}
	run := func(t *testing.T, postfixCap, maxConns int) (time.Duration, *mtatest.Postfix, string) {
		t.Helper()
		p := startMTA(t, mtatest.Options{Mailboxes: boxes, MaxConnections: postfixCap})
		var logs syncBuffer
		cfg := mtaConfig(t, p)
		cfg.Username, cfg.Password = "", ""
		cfg.MaxConns = maxConns
		c := mtaClient(t, cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
		next := make(chan string)
		go func() {
			defer close(next)
			for _, b := range boxes {
				next <- b
			}
		}()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		start := time.Now()
		for range senders {
			wg.Go(func() {
				for b := range next {
					if err := mtaSendTo(t, c, p.Address(b), testCode); err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("%s: %w", b, err))
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		require.Empty(t, errs)
		waitMails(t, p, mails)
		for _, b := range boxes {
			assert.Contains(t, string(p.WaitMail(t, b, mtaWait)), "Delivered-To: "+p.Address(b))
		}
		got := sessions(t, p, c)
		t.Logf("relay cap %d, MaxConns %d: %d mails in %s over %d sessions (refused ones included)", postfixCap, maxConns, mails, elapsed, len(got))
		return elapsed, p, logs.String()
	}

	var capped, over, uncapped time.Duration
	t.Run("MaxConns5", func(t *testing.T) {
		var p *mtatest.Postfix
		capped, p, _ = run(t, relayCap, relayCap)
		assert.Zero(t, countLog(p, tooManyLines))
		assert.Zero(t, countLog(p, concurrencyExceeded))
	})
	t.Run("MaxConns10", func(t *testing.T) {
		var p *mtatest.Postfix
		var logs string
		over, p, logs = run(t, relayCap, 2*relayCap)
		refused := countLog(p, concurrencyExceeded)
		t.Logf("421 at the greeting: %d refusals in Postfix's log (%d lines with %q); the client warned %d times",
			refused, countLog(p, tooManyLines), tooManyLines, strings.Count(logs, "relay refused a connection at its greeting"))
		assert.Positive(t, refused, "10 connections to a relay that takes 5")
	})
	t.Run("Uncapped", func(t *testing.T) {
		var p *mtatest.Postfix
		uncapped, p, _ = run(t, 0, 20)
		assert.Zero(t, countLog(p, concurrencyExceeded))
	})
	if uncapped > 0 {
		t.Logf("durations: MaxConns 5 (relay cap 5) %s, MaxConns 10 (relay cap 5) %s, uncapped MaxConns 20 %s; capped/uncapped %.2f, over-capped/uncapped %.2f",
			capped, over, uncapped, capped.Seconds()/uncapped.Seconds(), over.Seconds()/uncapped.Seconds())
	}
}

// waitMails waits until p has delivered n mails.
func waitMails(t *testing.T, p *mtatest.Postfix, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * mtaWait)
	for {
		got := len(p.Mails(t))
		if got >= n {
			require.Equal(t, n, got)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d mails delivered within %s", got, n, 2*mtaWait)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Postfix's Received field for a client it did not look up (mtatest turns
// the lookups off): "from HELO (unknown [127.0.0.1])".
var postfixClient = regexp.MustCompile(`\((?:unknown|localhost) \[127\.0\.0\.1\]\)`)

// asFirstExternalHop rewrites the client part of Postfix's Received field
// of raw into an external host's: 198.18.0.7, whose reverse DNS names it
// mail.verifyq.test. SpamAssassin trusts loopback: a message that came
// from 127.0.0.1 has no external relay, and no HELO rule (they look at the
// first external one) can fire. verifyq's host is the first external hop
// of a real mail, seen by the relay's Received field just like this, with
// verifyq's EHLO name after "from".
//
// The address is from the range reserved for network tests (RFC 2544),
// not a documentation one (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24):
// SpamAssassin's RCVD_ILLEGAL_IP adds 1.3 for those, since no real mail
// comes from them. The reverse DNS name is what a well-set-up sending host
// has; Postfix's "unknown" is the harness's (no lookups), not verifyq's,
// and RDNS_NONE would add 2.4 for it.
func asFirstExternalHop(t *testing.T, raw []byte) []byte {
	t.Helper()
	loc := postfixClient.FindIndex(raw)
	require.NotNil(t, loc, "Postfix's Received field: %s", received(t, raw))
	require.Contains(t, string(raw[:loc[0]]), "Received: from ", "the client part is in the first Received field")
	out := append([]byte{}, raw[:loc[0]]...)
	out = append(out, "(mail.verifyq.test [198.18.0.7])"...)
	return append(out, raw[loc[1]:]...)
}

// SpamAssassin scores verifyq's mails, as a relay delivered them, low in
// every locale and for every purpose when verifyq says EHLO with a fully
// qualified name; "EHLO localhost" (Config allows it to a loopback relay)
// is the control that shows the test can fail.
func TestMTASpamScore(t *testing.T) {
	t.Parallel()
	p := startMTA(t, mtatest.Options{})
	client := func(hello string) *relay.Client {
		cfg := mtaConfig(t, p)
		cfg.Username, cfg.Password = "", ""
		cfg.HelloName = hello
		return mtaClient(t, cfg, nil)
	}
	deliver := func(c *relay.Client, m mail.Message) []byte {
		m.To = p.Address("alice")
		require.NoError(t, mtaSend(t, c, m))
		raw := p.WaitMail(t, "alice", mtaWait)
		require.Contains(t, received(t, raw), "Received: from ")
		return asFirstExternalHop(t, raw)
	}

	fqdn := client("mail.verifyq.test")
	for _, locale := range mail.Locales() {
		for _, purpose := range append([]string{""}, codes.DefaultPurposes...) {
			raw := deliver(fqdn, mail.Message{Locale: locale, Purpose: purpose})
			score, rules := mtatest.SpamScore(t, raw)
			t.Logf("%s %q: %.3f %s", locale, purpose, score, rules)
			assert.Less(t, score, 2.0, "%s %q: %s", locale, purpose, rules)
			assert.Contains(t, received(t, raw), "from mail.verifyq.test (mail.verifyq.test [198.18.0.7])")
		}
	}

	raw := deliver(client("localhost"), mail.Message{Locale: mail.LocaleEN})
	score, rules := mtatest.SpamScore(t, raw)
	t.Logf("control, EHLO localhost: %.3f %s", score, rules)
	assert.GreaterOrEqual(t, score, 2.0, rules)
	assert.Contains(t, rules, "HELO_LOCALHOST")
}

// concurrencyExceeded is how Postfix logs a connection that it refused over
// its cap (MaxConnections) with 421 at the greeting; "too many
// connections" is in its reply only.
const concurrencyExceeded = "Connection concurrency limit exceeded"

// With MaxConns at the relay's cap, idle connections that expired make
// room for new ones without the relay refusing any: a connection counts
// against the relay's cap until the relay has ended it, so its slot in
// the pool must too. Each round fills the pool, lets it expire and sends
// one more mail, which ends the expired connections (QUIT) and opens one.
func TestMTAIdleExpiryWithinRelayCap(t *testing.T) {
	t.Parallel()
	const (
		relayCap = 5
		rounds   = 15
		idle     = 300 * time.Millisecond
	)
	p := startMTA(t, mtatest.Options{MaxConnections: relayCap})
	cfg := mtaConfig(t, p)
	cfg.Username, cfg.Password = "", ""
	cfg.MaxConns = relayCap
	cfg.IdleTimeout = idle
	c := mtaClient(t, cfg, nil)
	var mu sync.Mutex
	var errs []error
	send := func(round int) {
		if err := mtaSendTo(t, c, p.Address("alice"), testCode); err != nil {
			mu.Lock()
			errs = append(errs, fmt.Errorf("round %d: %w (%s)", round, err, delivery.ClassOf(err)))
			mu.Unlock()
		}
	}
	for round := range rounds {
		var wg sync.WaitGroup
		for range relayCap {
			wg.Go(func() { send(round) })
		}
		wg.Wait()
		time.Sleep(idle + idle/3)
		send(round)
		time.Sleep(idle + idle/3)
	}
	assert.Empty(t, errs)
	require.NoError(t, c.Close())
	settle(t, p, 0)
	assert.Zero(t, countLog(p, concurrencyExceeded), "the relay refused a connection over its cap")
	waitMails(t, p, rounds*(relayCap+1)-len(errs))
}
