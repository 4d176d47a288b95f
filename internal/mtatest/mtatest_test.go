//go:build mta

package mtatest_test

import (
	"bufio"
	"net"
	"net/smtp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/mtatest"
	"github.com/verifyq/verifyq/internal/smtptest"
)

func TestMTADeliversInEveryMode(t *testing.T) {
	t.Parallel()
	p := mtatest.Start(t, mtatest.Options{})
	assert.Equal(t, mtatest.DefaultDomain, p.Domain())
	for i, m := range []mode{plain, starttls, smtps} {
		c := dial(t, p, m)
		_, isTLS := c.TLSConnectionState()
		assert.Equal(t, m != plain, isTLS, "%s: TLS", m)
		subject := "mode " + string(m)
		require.NoError(t, send(c, "sender@client.test", message("sender@client.test", p.Address("alice"), subject), p.Address("alice")), m)
		raw := string(p.WaitMail(t, "alice", wait))
		assert.Contains(t, raw, "Subject: "+subject)
		assert.Contains(t, raw, "Return-Path: <sender@client.test>")
		assert.Len(t, p.Mails(t), i+1, "every message delivered so far, taken or not")
	}
	cleanLog(t, p)
}

func TestMTAUnknownRecipientAndNoPlusAddressing(t *testing.T) {
	t.Parallel()
	p := mtatest.Start(t, mtatest.Options{Mailboxes: []string{"alice"}})
	for _, rcpt := range []string{"alice+x@" + p.Domain(), "bob@" + p.Domain()} {
		c := dial(t, p, plain)
		require.NoError(t, c.Mail("sender@client.test"))
		got := reply(t, c.Rcpt(rcpt))
		assert.True(t, strings.HasPrefix(got, "550 5.1.1 <"+rcpt+">"), got)
		require.NoError(t, c.Quit())
	}
}

func TestMTAAuthPlainAndLoginOnlyUnderTLS(t *testing.T) {
	t.Parallel()
	p := mtatest.Start(t, mtatest.Options{Users: map[string]string{"alice@example.test": "s3cret pass", "carol": "pw"}})

	c := dial(t, p, plain)
	has, _ := c.Extension("AUTH")
	assert.False(t, has, "AUTH before STARTTLS")
	require.NoError(t, c.Quit())

	for _, m := range []mode{starttls, smtps} {
		c := dial(t, p, m)
		has, mechs := c.Extension("AUTH")
		require.True(t, has, m)
		assert.ElementsMatch(t, []string{"PLAIN", "LOGIN"}, strings.Fields(mechs), m)
		got := reply(t, c.Auth(smtp.PlainAuth("", "alice@example.test", "wrong", p.ServerName())))
		assert.True(t, strings.HasPrefix(got, "535 5.7.8 "), got)
		// net/smtp cancels with "*" and quits after a refused AUTH.

		c = dial(t, p, m)
		require.NoError(t, c.Auth(smtp.PlainAuth("", "alice@example.test", "s3cret pass", p.ServerName())), m)
		require.NoError(t, send(c, "alice@example.test", message("alice@example.test", p.Address("bob"), "auth"), p.Address("bob")))
		p.WaitMail(t, "bob", wait)
	}

	c = dial(t, p, starttls)
	got := reply(t, c.Auth(loginAuth{"carol", "wrong"}))
	assert.True(t, strings.HasPrefix(got, "535 5.7.8 "), got)
	c = dial(t, p, starttls)
	require.NoError(t, c.Auth(loginAuth{"carol", "pw"}), "a bare login name is in the domain's realm")
	require.NoError(t, c.Quit())
	p.WaitLog(t, "sasl_username=carol", wait)
}

func TestMTAPlaintextAuth(t *testing.T) {
	t.Parallel()
	p := mtatest.Start(t, mtatest.Options{Users: map[string]string{"alice@example.test": "pw"}, PlaintextAuth: true})
	c := dial(t, p, plain)
	has, _ := c.Extension("AUTH")
	require.True(t, has, "AUTH offered before STARTTLS")
	require.NoError(t, c.Auth(smtp.PlainAuth("", "alice@example.test", "pw", p.ServerName())))
	require.NoError(t, c.Quit())
}

func TestMTAAuthRequired(t *testing.T) {
	t.Parallel()
	p := mtatest.Start(t, mtatest.Options{Users: map[string]string{"alice@example.test": "pw"}, AuthRequired: true})
	c := dial(t, p, starttls)
	got := reply(t, c.Mail("alice@example.test"))
	assert.True(t, strings.HasPrefix(got, "554 5.7.1 "), got)
	assert.Contains(t, got, "Access denied")
	require.NoError(t, c.Quit())

	c = dial(t, p, starttls)
	require.NoError(t, c.Auth(smtp.PlainAuth("", "alice@example.test", "pw", p.ServerName())))
	require.NoError(t, send(c, "alice@example.test", message("alice@example.test", p.Address("bob"), "authed"), p.Address("bob")))
	p.WaitMail(t, "bob", wait)
}

func TestMTASenderNotOwnedByUser(t *testing.T) {
	t.Parallel()
	p := mtatest.Start(t, mtatest.Options{
		Users:        map[string]string{"alice@example.test": "pw", "bob@example.test": "pw"},
		SenderOwners: map[string]string{"alice@example.test": "alice@example.test", "bob@example.test": "bob@example.test"},
	})
	c := dial(t, p, smtps)
	require.NoError(t, c.Auth(smtp.PlainAuth("", "bob@example.test", "pw", p.ServerName())))
	got := reply(t, c.Mail("alice@example.test"))
	assert.True(t, strings.HasPrefix(got, "553 5.7.1 <alice@example.test>"), got)
	assert.Contains(t, got, "not owned by user bob@example.test")
	require.NoError(t, c.Reset())
	require.NoError(t, send(c, "bob@example.test", message("bob@example.test", p.Address("alice"), "own"), p.Address("alice")))
	p.WaitMail(t, "alice", wait)
}

func TestMTADailyQuotaExceeded(t *testing.T) {
	t.Parallel()
	p := mtatest.Start(t, mtatest.Options{
		Users:     map[string]string{"alice@example.test": "pw", "bob@example.test": "pw"},
		OverQuota: []string{"alice@example.test", "quota@client.test"},
	})
	c := dial(t, p, smtps)
	require.NoError(t, c.Auth(smtp.PlainAuth("", "alice@example.test", "pw", p.ServerName())))
	got := reply(t, c.Mail("any@client.test"))
	assert.True(t, strings.HasPrefix(got, "550 5.4.5 "), "by SASL login: %s", got)
	assert.Contains(t, got, "Daily user sending quota exceeded")
	require.NoError(t, c.Quit())

	c = dial(t, p, plain)
	got = reply(t, c.Mail("quota@client.test"))
	assert.True(t, strings.HasPrefix(got, "550 5.4.5 "), "by sender: %s", got)
	require.NoError(t, c.Quit())

	c = dial(t, p, smtps)
	require.NoError(t, c.Auth(smtp.PlainAuth("", "bob@example.test", "pw", p.ServerName())))
	require.NoError(t, c.Mail("bob@example.test"), "another user is under quota")
	require.NoError(t, c.Quit())
}

func TestMTAGreylistedThenDelivered(t *testing.T) {
	t.Parallel()
	p := mtatest.Start(t, mtatest.Options{Greylisted: []string{"bob@example.test"}})
	c := dial(t, p, plain)
	require.NoError(t, c.Mail("sender@client.test"))
	got := reply(t, c.Rcpt(p.Address("bob")))
	assert.True(t, strings.HasPrefix(got, "450 4.2.0 <bob@example.test>"), got)
	assert.Contains(t, got, "Greylisted")
	require.NoError(t, c.Rcpt(p.Address("alice")), "only bob is greylisted")
	require.NoError(t, c.Quit())

	p.SetGreylisted(t)
	c = dial(t, p, plain)
	require.NoError(t, send(c, "sender@client.test", message("sender@client.test", p.Address("bob"), "retried"), p.Address("bob")))
	assert.Contains(t, string(p.WaitMail(t, "bob", wait)), "Subject: retried")

	p.SetGreylisted(t, p.Address("alice"))
	c = dial(t, p, plain)
	require.NoError(t, c.Mail("sender@client.test"))
	got = reply(t, c.Rcpt(p.Address("alice")))
	assert.True(t, strings.HasPrefix(got, "450 4.2.0 "), "greylisted again while running: %s", got)
	require.NoError(t, c.Quit())
}

func TestMTAConnectionCap(t *testing.T) {
	t.Parallel()
	const limit = 2
	p := mtatest.Start(t, mtatest.Options{MaxConnections: limit})
	greeting := func() string {
		conn, err := net.DialTimeout("tcp", p.SubmissionAddr(), wait)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		require.NoError(t, conn.SetDeadline(time.Now().Add(wait)))
		line, err := bufio.NewReader(conn).ReadString('\n')
		require.NoError(t, err)
		return strings.TrimSpace(line)
	}
	for range limit {
		assert.True(t, strings.HasPrefix(greeting(), "220 "))
	}
	got := greeting()
	assert.True(t, strings.HasPrefix(got, "421 4.7.0 "), got)
	assert.Contains(t, got, "too many connections")
}

func TestMTAMessageSizeLimit(t *testing.T) {
	t.Parallel()
	const limit = 4096
	p := mtatest.Start(t, mtatest.Options{MessageSizeLimit: limit})
	c := dial(t, p, plain)
	has, size := c.Extension("SIZE")
	require.True(t, has)
	assert.Equal(t, "4096", size)
	body := message("sender@client.test", p.Address("alice"), "big") + strings.Repeat("0123456789abcdef\r\n", 2*limit/18)
	got := reply(t, send(c, "sender@client.test", body, p.Address("alice")))
	assert.True(t, strings.HasPrefix(got, "552 5.3.4 "), got)
}

func TestMTASMTPUTF8(t *testing.T) {
	t.Parallel()
	for _, off := range []bool{false, true} {
		p := mtatest.Start(t, mtatest.Options{NoSMTPUTF8: off})
		c := dial(t, p, plain)
		has, _ := c.Extension("SMTPUTF8")
		assert.Equal(t, !off, has, "NoSMTPUTF8 %v", off)
		require.NoError(t, c.Quit())
	}
}

func TestMTATransportsRelayAndBounce(t *testing.T) {
	t.Parallel()
	next := smtptest.Start(t)
	refusing := smtptest.Start(t)
	refusing.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, EnhancedCode: [3]int{5, 1, 1}, Message: "no such user here"})
	p := mtatest.Start(t, mtatest.Options{Transports: map[string]string{
		"relay.test":  "smtp:[127.0.0.1]:" + itoa(next.Port()),
		"bounce.test": "smtp:[127.0.0.1]:" + itoa(refusing.Port()),
	}})
	c := dial(t, p, plain)
	require.NoError(t, send(c, "sender@client.test", message("sender@client.test", "x@relay.test", "relayed"), "x@relay.test"))
	msgs := next.WaitMessages(t, 1, wait)
	assert.Equal(t, []string{"x@relay.test"}, msgs[0].To)
	assert.Equal(t, "sender@client.test", msgs[0].From)

	c = dial(t, p, plain)
	require.NoError(t, send(c, p.Address("alice"), message(p.Address("alice"), "x@bounce.test", "bounced"), "x@bounce.test"))
	dsn := string(p.WaitMail(t, "alice", wait))
	assert.Contains(t, dsn, "Undelivered Mail Returned to Sender")
	// message/global-delivery-status here: net/smtp asked for SMTPUTF8.
	assert.Contains(t, dsn, "report-type=delivery-status")
	assert.Contains(t, dsn, "Status: 5.1.1")
	assert.Contains(t, dsn, "Return-Path: <>", "a DSN has the null sender")
}

func TestMTASpamScore(t *testing.T) {
	t.Parallel()
	score, rules := mtatest.SpamScore(t, []byte(message("alice@example.test", "bob@example.test", "Your verification code")))
	assert.Less(t, score, 5.0, rules)
	assert.NotEmpty(t, rules, "a message without Received headers trips a rule or two")

	bare, bareRules := mtatest.SpamScore(t, []byte("Subject: hi\r\n\r\nhello\r\n"))
	assert.Greater(t, bare, score, "no From, Date or Message-ID scores higher: %s", bareRules)
	assert.Contains(t, bareRules, "MISSING_DATE")
}
