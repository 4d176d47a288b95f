//go:build mta

package mtatest_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/mtatest"
)

// wait bounds every wait for a delivery or a log line.
const wait = 30 * time.Second

// mode is how a test's client reaches the server.
type mode string

const (
	plain    mode = "submission without TLS"
	starttls mode = "submission with STARTTLS"
	smtps    mode = "smtps (implicit TLS)"
)

// dial connects to p in mode, says EHLO (and STARTTLS in starttls mode)
// and quits in the test's cleanup when the test has not.
func dial(t *testing.T, p *mtatest.Postfix, m mode) *smtp.Client {
	t.Helper()
	addr := p.SubmissionAddr()
	if m == smtps {
		addr = p.SMTPSAddr()
	}
	conn, err := net.DialTimeout("tcp", addr, wait)
	require.NoError(t, err)
	require.NoError(t, conn.SetDeadline(time.Now().Add(wait)))
	if m == smtps {
		conn = tls.Client(conn, p.TLSConfig())
	}
	c, err := smtp.NewClient(conn, p.ServerName())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.Hello("client.test"))
	if m == starttls {
		require.NoError(t, c.StartTLS(p.TLSConfig()))
	}
	return c
}

// send sends one message from from to each of to over c and quits.
func send(c *smtp.Client, from string, body string, to ...string) error {
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := fmt.Fprint(w, body); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// message is a small message with a subject to find it by.
func message(from, to, subject string) string {
	return fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%d@client.test>\r\n\r\nYour code is 123456.\r\n",
		from, to, subject, time.Now().Format(time.RFC1123Z), time.Now().UnixNano())
}

// reply is the SMTP reply in err as "CODE TEXT" (the enhanced code first in
// the text), or fails the test when err is not a reply.
func reply(t *testing.T, err error) string {
	t.Helper()
	var te *textproto.Error
	require.ErrorAs(t, err, &te, "want an SMTP reply, got %v", err)
	return fmt.Sprintf("%d %s", te.Code, te.Msg)
}

// cleanLog waits for the end of n sessions (past the harness's own start
// probes) and checks that none ended badly.
func cleanLog(t *testing.T, p *mtatest.Postfix) {
	t.Helper()
	p.WaitLog(t, "disconnect from", wait)
	for _, line := range p.Log() {
		for _, bad := range []string{"lost connection after", "non-SMTP command", "warning:", "error:", "fatal:", "panic:"} {
			require.NotContains(t, line, bad, "the Postfix log has a bad line")
		}
	}
}

// loginAuth is the LOGIN mechanism, which net/smtp lacks: the user name and
// the password, each in answer to the server's prompt.
type loginAuth struct{ user, password string }

func (a loginAuth) Start(*smtp.ServerInfo) (string, []byte, error) { return "LOGIN", nil, nil }

func (a loginAuth) Next(fromServer []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	switch strings.ToLower(string(fromServer)) {
	case "username:":
		return []byte(a.user), nil
	case "password:":
		return []byte(a.password), nil
	}
	return nil, errors.New("unexpected LOGIN prompt " + string(fromServer))
}

func itoa(n int) string { return fmt.Sprint(n) }
