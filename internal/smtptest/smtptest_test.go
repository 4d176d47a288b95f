package smtptest_test

import (
	"crypto/tls"
	"errors"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/verifyq/verifyq/internal/smtptest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const multipartMsg = "From: a@example.com\r\n" +
	"To: b@example.com\r\n" +
	"Subject: =?UTF-8?q?=E9=AA=8C=E8=AF=81=E7=A0=81?=\r\n" +
	"Mime-Version: 1.0\r\n" +
	"Content-Type: multipart/alternative; boundary=XYZ\r\n" +
	"\r\n" +
	"--XYZ\r\n" +
	"Content-Type: text/plain; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"code =E9=AA=8C 123456\r\n" +
	"--XYZ\r\n" +
	"Content-Type: text/html; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"PGI+MTIzNDU2PC9iPg==\r\n" +
	"--XYZ--\r\n"

type client struct {
	tls      *tls.Config
	implicit bool
	user     string
	pass     string
	login    bool // AUTH LOGIN instead of PLAIN
	timeout  time.Duration
}

// loginAuth is AUTH LOGIN without an initial response: the server asks
// for the user name, then for the password.
type loginAuth struct{ user, pass string }

func (a loginAuth) Start(*smtp.ServerInfo) (string, []byte, error) { return "LOGIN", nil, nil }

func (a loginAuth) Next(challenge []byte, more bool) ([]byte, error) {
	switch {
	case !more:
		return nil, nil
	case string(challenge) == "Username:":
		return []byte(a.user), nil
	case string(challenge) == "Password:":
		return []byte(a.pass), nil
	}
	return nil, errors.New("unexpected challenge " + string(challenge))
}

// send delivers multipartMsg to srv with net/smtp and returns the first
// error. It is safe to call from any goroutine.
func (c client) send(t *testing.T, srv *smtptest.Server) error {
	t.Helper()
	timeout := c.timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	conn, err := net.DialTimeout("tcp", srv.Addr(), timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if c.implicit {
		conn = tls.Client(conn, c.tls)
	}
	cl, err := smtp.NewClient(conn, srv.Host())
	if err != nil {
		return err
	}
	defer cl.Close()
	if c.tls != nil && !c.implicit {
		if err := cl.StartTLS(c.tls); err != nil {
			return err
		}
	}
	if c.user != "" {
		// PlainAuth allows unencrypted connections to loopback hosts.
		a := smtp.PlainAuth("", c.user, c.pass, srv.Host())
		if c.login {
			a = loginAuth{c.user, c.pass}
		}
		if err := cl.Auth(a); err != nil {
			return err
		}
	}
	if err := cl.Mail("a@example.com"); err != nil {
		return err
	}
	if err := cl.Rcpt("b@example.com"); err != nil {
		return err
	}
	w, err := cl.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(multipartMsg)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return cl.Quit()
}

func code(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

func TestRecordsAndDecodesMessages(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	require.NoError(t, client{}.send(t, srv))

	msgs := srv.WaitMessages(t, 1, 5*time.Second)
	require.Len(t, msgs, 1)
	m := msgs[0]
	require.Equal(t, "a@example.com", m.From)
	require.Equal(t, []string{"b@example.com"}, m.To)
	require.Equal(t, "验证码", m.Subject)
	require.Equal(t, "code 验 123456", strings.TrimSpace(m.Text))
	require.Equal(t, "<b>123456</b>", m.HTML)
	require.False(t, m.TLS)
	require.Contains(t, string(m.Raw), "Content-Type: multipart/alternative")
	require.Equal(t, 1, srv.Count())
	require.Equal(t, 1, srv.Connections())
	require.NotZero(t, srv.Port())
	require.Equal(t, "127.0.0.1", srv.Host())

	srv.ClearMessages()
	require.Zero(t, srv.Count())
}

func TestReplyFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		fault smtptest.Fault
	}{
		{"connect 421", smtptest.Fault{Stage: smtptest.StageConnect, Code: 421}},
		{"mail 451", smtptest.Fault{Stage: smtptest.StageMail, Code: 451}},
		{"rcpt 550 5.1.1", smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, EnhancedCode: [3]int{5, 1, 1}, Message: "No such user"}},
		{"data 554", smtptest.Fault{Stage: smtptest.StageData, Code: 554}},
		{"data 452", smtptest.Fault{Stage: smtptest.StageData, Code: 452}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t)
			srv.SetFault(tt.fault)

			err := client{}.send(t, srv)
			require.Error(t, err)
			require.Equal(t, tt.fault.Code, code(err), "err: %v", err)
			require.Zero(t, srv.Count())

			srv.ClearFault()
			require.NoError(t, client{}.send(t, srv))
			require.Equal(t, 1, srv.Count())
		})
	}
}

func TestFaultTimes(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 451, Times: 2})
	require.Equal(t, 451, code(client{}.send(t, srv)))
	require.Equal(t, 451, code(client{}.send(t, srv)))
	require.NoError(t, client{}.send(t, srv))
}

func TestHangUntilCleared(t *testing.T) {
	t.Parallel()
	for _, stage := range []smtptest.Stage{smtptest.StageConnect, smtptest.StageMail, smtptest.StageRcpt, smtptest.StageData} {
		t.Run(stage.String(), func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t)
			srv.SetFault(smtptest.Fault{Stage: stage, Hang: true})

			// A hung command times out on the client side.
			err := client{timeout: 200 * time.Millisecond}.send(t, srv)
			var ne net.Error
			require.ErrorAs(t, err, &ne)
			require.True(t, ne.Timeout())

			// A command hung while the fault is cleared proceeds normally.
			done := make(chan error, 1)
			go func() { done <- client{}.send(t, srv) }()
			time.Sleep(100 * time.Millisecond)
			srv.ClearFault()
			require.NoError(t, <-done)
			if stage == smtptest.StageData {
				// The timed-out client's data had been received: once
				// released, it is accepted too.
				srv.WaitMessages(t, 2, 5*time.Second)
				return
			}
			require.Equal(t, 1, srv.Count())
		})
	}
}

func TestStopReleasesHangs(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageData, Hang: true})
	done := make(chan error, 1)
	go func() { done <- client{}.send(t, srv) }()
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, srv.Stop())
	require.Error(t, <-done)
	require.Zero(t, srv.Count(), "a message hung at DATA must not be recorded when the server stops")
}

func TestStopRestartSamePort(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	addr := srv.Addr()
	require.NoError(t, client{}.send(t, srv))

	require.NoError(t, srv.Stop())
	require.NoError(t, srv.Stop(), "Stop is idempotent")
	_, err := net.DialTimeout("tcp", addr, time.Second)
	require.Error(t, err, "server must be down")

	require.NoError(t, srv.Restart())
	require.Error(t, srv.Restart(), "already running")
	require.Equal(t, addr, srv.Addr())
	require.NoError(t, client{}.send(t, srv))
	require.Equal(t, 2, srv.Count())
	require.Equal(t, 2, srv.Connections())

	require.NoError(t, srv.Close())
	require.ErrorIs(t, srv.Restart(), smtptest.ErrClosed)
}

func TestLatency(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	srv.SetLatency(200 * time.Millisecond)
	start := time.Now()
	require.NoError(t, client{}.send(t, srv))
	require.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
	srv.SetLatency(0)
}

func TestAuth(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithAuth("user", "pass"))

	require.Equal(t, 502, code(client{}.send(t, srv)), "MAIL without AUTH")
	require.Equal(t, 535, code(client{user: "user", pass: "wrong"}.send(t, srv)))
	require.NoError(t, client{user: "user", pass: "pass"}.send(t, srv))
	require.Equal(t, 1, srv.Count())
}

// The server offers PLAIN and LOGIN unless WithAuthMechanisms says
// otherwise, and takes only a mechanism it offers.
func TestAuthMechanisms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		opts    []smtptest.Option
		offered string // the AUTH line of EHLO; "" for none
		plain   int    // the reply to good credentials over PLAIN; 0 for success
		login   int    // and over LOGIN
	}{
		{"default", nil, "PLAIN LOGIN", 0, 0},
		{"LOGIN only, as Microsoft 365", []smtptest.Option{smtptest.WithAuthMechanisms(sasl.Login, "XOAUTH2")}, "LOGIN XOAUTH2", 504, 0},
		{"PLAIN only", []smtptest.Option{smtptest.WithAuthMechanisms(sasl.Plain)}, "PLAIN", 0, 504},
		{"another mechanism only", []smtptest.Option{smtptest.WithAuthMechanisms("XOAUTH2")}, "XOAUTH2", 504, 504},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, append(tt.opts, smtptest.WithAuth("user", "pass"))...)
			cl, err := smtp.Dial(srv.Addr())
			require.NoError(t, err)
			require.NoError(t, cl.Hello("localhost"))
			_, offered := cl.Extension("AUTH")
			require.Equal(t, tt.offered, offered)
			require.NoError(t, cl.Quit())

			require.Equal(t, tt.plain, code(client{user: "user", pass: "pass"}.send(t, srv)), "PLAIN")
			require.Equal(t, tt.login, code(client{user: "user", pass: "pass", login: true}.send(t, srv)), "LOGIN")
			if tt.login == 0 {
				require.Equal(t, 535, code(client{user: "user", pass: "wrong", login: true}.send(t, srv)), "LOGIN, wrong password")
			}
		})
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		opt      smtptest.Option
		implicit bool
	}{
		{"starttls", smtptest.WithTLS(), false},
		{"implicit", smtptest.WithImplicitTLS(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, tt.opt, smtptest.WithAuth("user", "pass"))
			require.NotNil(t, srv.RootCAs())
			conf := &tls.Config{RootCAs: srv.RootCAs(), ServerName: srv.Host(), MinVersion: tls.VersionTLS12}
			require.NoError(t, client{tls: conf, implicit: tt.implicit, user: "user", pass: "pass"}.send(t, srv))
			msgs := srv.WaitMessages(t, 1, time.Second)
			require.True(t, msgs[0].TLS)
		})
	}
}

// TestCloseLeaksNothing is not parallel so that goleak sees only its own
// goroutines.
func TestCloseLeaksNothing(t *testing.T) {
	srv, err := smtptest.New(smtptest.WithTLS())
	require.NoError(t, err)

	// Leave a hung connection, an idle connection and a restart behind.
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageMail, Hang: true})
	done := make(chan error, 2)
	go func() { done <- client{}.send(t, srv) }()
	idle, err := net.Dial("tcp", srv.Addr())
	require.NoError(t, err)
	defer idle.Close()
	require.NoError(t, srv.Stop())
	require.Error(t, <-done)
	require.NoError(t, srv.Restart())
	go func() { done <- client{}.send(t, srv) }()
	time.Sleep(50 * time.Millisecond)

	require.NoError(t, srv.Close())
	require.NoError(t, srv.Close(), "Close is idempotent")
	require.Error(t, <-done)
	goleak.VerifyNone(t)
}
