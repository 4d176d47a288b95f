package smtptest_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/smtptest"
)

func TestMaxConnections(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithMaxConnections(1))

	// One connection is open: the next one is refused at its greeting.
	open, err := net.Dial("tcp", srv.Addr())
	require.NoError(t, err)
	defer open.Close()
	r := textproto.NewReader(bufio.NewReader(open))
	_, _, err = r.ReadResponse(220)
	require.NoError(t, err)

	err = client{}.send(t, srv)
	require.Equal(t, 421, code(err), "err: %v", err)
	var te *textproto.Error
	require.ErrorAs(t, err, &te)
	require.Contains(t, te.Msg, "4.7.0")
	require.Equal(t, 2, srv.Connections(), "the refused connection counts")
	require.Equal(t, 1, srv.PeakConnections(), "the refused connection was never open")

	// Once it is closed (the server answered QUIT and hung up), the next
	// one is accepted.
	_, err = open.Write([]byte("QUIT\r\n"))
	require.NoError(t, err)
	_, _, err = r.ReadResponse(221)
	require.NoError(t, err)
	_, err = r.ReadLine()
	require.Error(t, err, "the server hangs up after QUIT")
	require.NoError(t, client{}.send(t, srv))
	require.Equal(t, 1, srv.Count())
	require.Equal(t, 1, srv.PeakConnections())
}

func TestPeakConnections(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", srv.Addr())
		require.NoError(t, err)
		defer c.Close()
		_, _, err = textproto.NewReader(bufio.NewReader(c)).ReadResponse(220)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	require.Equal(t, 3, srv.PeakConnections())
	require.Len(t, conns, 3)
}

func TestCommands(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithCommands())
	require.NoError(t, client{}.send(t, srv))
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550})
	require.Error(t, client{}.send(t, srv))

	got := srv.WaitCommand(t, "QUIT", 5*time.Second)
	require.Len(t, got, 2)
	require.Equal(t, []string{
		"EHLO localhost",
		"MAIL FROM:<a@example.com> BODY=8BITMIME",
		"RCPT TO:<b@example.com>",
		"DATA", // the message data is not recorded
		"QUIT",
	}, got[0])
	require.Equal(t, []string{
		"EHLO localhost",
		"MAIL FROM:<a@example.com> BODY=8BITMIME",
		"RCPT TO:<b@example.com>",
	}, got[1][:3], "the client then quits or hangs up: %q", got[1])
}

func TestCommandsStopAtTLS(t *testing.T) {
	t.Parallel()
	t.Run("starttls", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t, smtptest.WithTLS(), smtptest.WithCommands())
		conf := &tls.Config{RootCAs: srv.RootCAs(), ServerName: srv.Host(), MinVersion: tls.VersionTLS12}
		require.NoError(t, client{tls: conf}.send(t, srv))
		require.Equal(t, [][]string{{"EHLO localhost", "STARTTLS"}}, srv.Commands())
	})
	t.Run("implicit", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t, smtptest.WithImplicitTLS(), smtptest.WithCommands())
		conf := &tls.Config{RootCAs: srv.RootCAs(), ServerName: srv.Host(), MinVersion: tls.VersionTLS12}
		require.NoError(t, client{tls: conf, implicit: true}.send(t, srv))
		require.Empty(t, srv.Commands())
	})
	t.Run("not asked for", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t)
		require.NoError(t, client{}.send(t, srv))
		require.Empty(t, srv.Commands())
	})
}

func TestCertificatePEM(t *testing.T) {
	t.Parallel()
	require.Nil(t, smtptest.Start(t).CertificatePEM())

	srv := smtptest.Start(t, smtptest.WithImplicitTLS())
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(srv.CertificatePEM()))
	conf := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	require.NoError(t, client{tls: conf, implicit: true}.send(t, srv))
}

func TestWithoutPipelining(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		opts    []smtptest.Option
		offered bool
	}{{nil, true}, {[]smtptest.Option{smtptest.WithoutPipelining()}, false}} {
		srv := smtptest.Start(t, tc.opts...)
		c, err := smtp.Dial(srv.Addr())
		require.NoError(t, err)
		require.NoError(t, c.Hello("client.test"))
		ok, _ := c.Extension("PIPELINING")
		require.Equal(t, tc.offered, ok)
		ok, _ = c.Extension("8BITMIME")
		require.True(t, ok, "the lines after it are kept")
		require.NoError(t, c.SendMail("a@x.test", []string{"b@y.test"}, strings.NewReader("Subject: x\r\n\r\nhi\r\n")))
		require.NoError(t, c.Quit())
		require.Equal(t, 1, srv.Count())
	}
}
