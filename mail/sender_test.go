package mail_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/mail"
)

const (
	testTo   = "alice.smith@example.com"
	testCode = "739164"
	testUser = "verifyq"
	testPass = "s3cr3t-p4ssw0rd"
)

func testMessage() mail.Message {
	return mail.Message{To: testTo, Locale: mail.LocaleEN, Code: testCode, ExpiresIn: 10 * time.Minute}
}

// newSender returns a Sender for srv (TLS none, no auth unless mod says
// otherwise), closed at cleanup.
func newSender(t *testing.T, srv *smtptest.Server, mod func(*mail.SMTPConfig), logger *slog.Logger) *mail.Sender {
	t.Helper()
	cfg := mail.SMTPConfig{
		Host:    srv.Host(),
		Port:    srv.Port(),
		TLS:     mail.TLSNone,
		From:    testFrom,
		Timeout: 5 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := mail.NewSender(cfg, logger)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// isTimeout reports whether err is a timeout (of ctx or of the connection).
func isTimeout(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)
}

func TestSendDelivers(t *testing.T) {
	t.Parallel()
	for _, loc := range []mail.Locale{mail.LocaleZhCN, mail.LocaleEN} {
		t.Run(string(loc), func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t)
			s := newSender(t, srv, nil, nil)
			m := testMessage()
			m.Locale = loc
			require.NoError(t, s.Send(t.Context(), m))

			msgs := srv.WaitMessages(t, 1, 5*time.Second)
			require.Len(t, msgs, 1)
			got := msgs[0]
			require.Equal(t, "no-reply@verifyq.test", got.From)
			require.Equal(t, []string{testTo}, got.To)
			require.Contains(t, got.Text, testCode)
			require.Contains(t, got.HTML, testCode)
			require.Contains(t, got.Text, "10")
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

func TestSendReplyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		fault     smtptest.Fault
		permanent bool
	}{
		{"RCPT 550", smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, EnhancedCode: [3]int{5, 1, 1},
			Message: "<" + testTo + ">: Recipient address rejected"}, true},
		{"RCPT 451", smtptest.Fault{Stage: smtptest.StageRcpt, Code: 451, EnhancedCode: [3]int{4, 7, 1}}, false},
		{"MAIL 550", smtptest.Fault{Stage: smtptest.StageMail, Code: 550}, true},
		{"MAIL 451", smtptest.Fault{Stage: smtptest.StageMail, Code: 451}, false},
		{"DATA 554", smtptest.Fault{Stage: smtptest.StageData, Code: 554, Message: "content " + testCode + " rejected"}, true},
		{"DATA 452", smtptest.Fault{Stage: smtptest.StageData, Code: 452}, false},
		{"greeting 421", smtptest.Fault{Stage: smtptest.StageConnect, Code: 421}, false},
		{"greeting 554", smtptest.Fault{Stage: smtptest.StageConnect, Code: 554}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t)
			s := newSender(t, srv, nil, nil)
			srv.SetFault(tt.fault)

			err := s.Send(t.Context(), testMessage())
			require.Error(t, err)
			var se *mail.SMTPError
			require.ErrorAs(t, err, &se)
			require.Equal(t, tt.fault.Code, se.Code)
			require.Equal(t, tt.permanent, se.Permanent())
			require.Equal(t, tt.permanent, mail.IsPermanent(err))
			require.NotContains(t, err.Error(), testTo)
			require.NotContains(t, err.Error(), testCode)
			require.Zero(t, srv.Count())

			// The failed connection is not reused in a broken state.
			srv.ClearFault()
			require.NoError(t, s.Send(t.Context(), testMessage()))
			require.Equal(t, 1, srv.Count())
		})
	}
}

func TestSendHungServerTimesOut(t *testing.T) {
	t.Parallel()
	for _, stage := range []smtptest.Stage{smtptest.StageConnect, smtptest.StageMail, smtptest.StageRcpt, smtptest.StageData} {
		t.Run(stage.String(), func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t)
			s := newSender(t, srv, func(c *mail.SMTPConfig) { c.Timeout = 300 * time.Millisecond }, nil)
			srv.SetFault(smtptest.Fault{Stage: stage, Hang: true})

			start := time.Now()
			err := s.Send(t.Context(), testMessage())
			elapsed := time.Since(start)
			require.Error(t, err)
			require.False(t, mail.IsPermanent(err), "err: %v", err)
			require.True(t, isTimeout(err), "err: %v", err)
			require.Less(t, elapsed, 5*time.Second)
			require.GreaterOrEqual(t, elapsed, 250*time.Millisecond)
		})
	}
}

func TestSendHungPooledConnectionTimesOut(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	s := newSender(t, srv, func(c *mail.SMTPConfig) { c.Timeout = 300 * time.Millisecond }, nil)
	require.NoError(t, s.Send(t.Context(), testMessage()))

	srv.SetFault(smtptest.Fault{Stage: smtptest.StageMail, Hang: true})
	start := time.Now()
	err := s.Send(t.Context(), testMessage())
	require.True(t, isTimeout(err), "err: %v", err)
	require.False(t, mail.IsPermanent(err))
	require.Less(t, time.Since(start), 5*time.Second)
	require.Equal(t, 1, srv.Connections(), "a timeout must not be retried on a new connection")
}

func TestSendContextCancelAbortsHungSend(t *testing.T) {
	t.Parallel()
	for _, stage := range []smtptest.Stage{smtptest.StageConnect, smtptest.StageData} {
		t.Run(stage.String(), func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t)
			s := newSender(t, srv, func(c *mail.SMTPConfig) { c.Timeout = time.Minute }, nil)
			srv.SetFault(smtptest.Fault{Stage: stage, Hang: true})

			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(100*time.Millisecond, cancel)
			start := time.Now()
			err := s.Send(ctx, testMessage())
			require.ErrorIs(t, err, context.Canceled)
			require.False(t, mail.IsPermanent(err))
			require.Less(t, time.Since(start), 5*time.Second)
		})
	}
}

func TestSendContextDeadlineIsHonoured(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	s := newSender(t, srv, func(c *mail.SMTPConfig) { c.Timeout = time.Minute }, nil)
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Hang: true})

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.Send(ctx, testMessage())
	require.True(t, isTimeout(err), "err: %v", err)
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestSendAlreadyCancelled(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	s := newSender(t, srv, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.ErrorIs(t, s.Send(ctx, testMessage()), context.Canceled)
	require.Zero(t, srv.Count())
}

func TestSendReusesConnection(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	s := newSender(t, srv, nil, nil)
	for range 5 {
		require.NoError(t, s.Send(t.Context(), testMessage()))
	}
	require.Equal(t, 5, srv.Count())
	require.Equal(t, 1, srv.Connections())
}

func TestSendWithoutPooling(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	s := newSender(t, srv, func(c *mail.SMTPConfig) { c.MaxIdle = -1 }, nil)
	for range 3 {
		require.NoError(t, s.Send(t.Context(), testMessage()))
	}
	require.Equal(t, 3, srv.Connections())
}

func TestSendDropsExpiredIdleConnection(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	s := newSender(t, srv, func(c *mail.SMTPConfig) { c.IdleTimeout = 50 * time.Millisecond }, nil)
	require.NoError(t, s.Send(t.Context(), testMessage()))
	time.Sleep(150 * time.Millisecond)
	require.NoError(t, s.Send(t.Context(), testMessage()))
	require.Equal(t, 2, srv.Connections())
	require.Equal(t, 2, srv.Count())
}

func TestSendReplacesStaleConnectionAfterRestart(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	s := newSender(t, srv, nil, nil)
	require.NoError(t, s.Send(t.Context(), testMessage()))

	require.NoError(t, srv.Stop())
	require.Error(t, s.Send(t.Context(), testMessage()), "server is down")
	require.NoError(t, srv.Restart())
	require.NoError(t, s.Send(t.Context(), testMessage()))
	require.Equal(t, 2, srv.Count())
}

func TestSendRetriesStalePooledConnectionOnce(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	s := newSender(t, srv, nil, nil)
	require.NoError(t, s.Send(t.Context(), testMessage()))
	require.Equal(t, 1, srv.Connections())

	// The pooled connection dies while idle; the send must go through on a
	// fresh one.
	require.NoError(t, srv.Stop())
	require.NoError(t, srv.Restart())
	require.NoError(t, s.Send(t.Context(), testMessage()))
	require.Equal(t, 2, srv.Connections())
	require.Equal(t, 2, srv.Count())

	// A 421 on the first command of a pooled connection is retried too.
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageMail, Code: 421, Times: 1})
	require.NoError(t, s.Send(t.Context(), testMessage()))
	require.Equal(t, 3, srv.Connections())
	require.Equal(t, 3, srv.Count())

	// A 421 on a fresh connection is reported, not retried.
	s2 := newSender(t, srv, nil, nil)
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageMail, Code: 421, Times: 1})
	err := s2.Send(t.Context(), testMessage())
	var se *mail.SMTPError
	require.ErrorAs(t, err, &se)
	require.Equal(t, 421, se.Code)
	require.Equal(t, 4, srv.Connections())

	// Other replies on a pooled connection are not retried.
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageMail, Code: 451, Times: 1})
	err = s.Send(t.Context(), testMessage())
	require.ErrorAs(t, err, &se)
	require.Equal(t, 451, se.Code)
	require.Equal(t, 4, srv.Connections())
	require.Equal(t, 3, srv.Count())
}

func TestSendNeverRetriesAfterData(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	s := newSender(t, srv, nil, nil)
	require.NoError(t, s.Send(t.Context(), testMessage()))

	srv.SetFault(smtptest.Fault{Stage: smtptest.StageData, Code: 421, Times: 1})
	err := s.Send(t.Context(), testMessage())
	var se *mail.SMTPError
	require.ErrorAs(t, err, &se)
	require.Equal(t, 421, se.Code)
	require.False(t, mail.IsPermanent(err))
	require.Equal(t, 1, srv.Connections())
}

func TestSendConcurrent(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	srv.SetLatency(10 * time.Millisecond)
	s := newSender(t, srv, func(c *mail.SMTPConfig) { c.MaxIdle = 2 }, nil)

	const workers, perWorker = 8, 5
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for range workers {
		wg.Go(func() {
			for range perWorker {
				errs <- s.Send(t.Context(), testMessage())
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, workers*perWorker, srv.Count())
	require.LessOrEqual(t, srv.Connections(), workers*perWorker)
}

func TestSendTLSAndAuth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opt  smtptest.Option
		mode mail.TLSMode
	}{
		{"auto with STARTTLS", smtptest.WithTLS(), mail.TLSAuto},
		{"required STARTTLS", smtptest.WithTLS(), mail.TLSStartTLS},
		{"implicit TLS", smtptest.WithImplicitTLS(), mail.TLSImplicit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, tt.opt, smtptest.WithAuth(testUser, testPass))
			s := newSender(t, srv, func(c *mail.SMTPConfig) {
				c.TLS = tt.mode
				c.Username, c.Password = testUser, testPass
				c.TLSConfig = &tls.Config{RootCAs: srv.RootCAs()}
			}, nil)
			for range 2 {
				require.NoError(t, s.Send(t.Context(), testMessage()))
			}
			msgs := srv.WaitMessages(t, 2, 5*time.Second)
			require.True(t, msgs[0].TLS)
			require.True(t, msgs[1].TLS)
			require.Equal(t, 1, srv.Connections())
		})
	}
}

func TestSendAuthOverPlainLoopback(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithAuth(testUser, testPass))
	s := newSender(t, srv, func(c *mail.SMTPConfig) { c.Username, c.Password = testUser, testPass }, nil)
	require.NoError(t, s.Send(t.Context(), testMessage()))
	require.Equal(t, 1, srv.Count())
}

func TestSendWrongPassword(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithAuth(testUser, testPass))
	s := newSender(t, srv, func(c *mail.SMTPConfig) { c.Username, c.Password = testUser, "wrong-pass" }, nil)
	err := s.Send(t.Context(), testMessage())
	var se *mail.SMTPError
	require.ErrorAs(t, err, &se)
	require.Equal(t, 535, se.Code)
	require.NotContains(t, err.Error(), "wrong-pass")
}

func TestSendTLSFailures(t *testing.T) {
	t.Parallel()
	t.Run("starttls required but not offered", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t)
		s := newSender(t, srv, func(c *mail.SMTPConfig) { c.TLS = mail.TLSStartTLS }, nil)
		err := s.Send(t.Context(), testMessage())
		require.ErrorContains(t, err, "STARTTLS")
		require.False(t, mail.IsPermanent(err))
		require.Zero(t, srv.Count())
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t, smtptest.WithTLS())
		s := newSender(t, srv, func(c *mail.SMTPConfig) { c.TLS = mail.TLSAuto }, nil)
		require.Error(t, s.Send(t.Context(), testMessage()))
		require.Zero(t, srv.Count())
	})
	t.Run("auto without STARTTLS sends in clear", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t)
		s := newSender(t, srv, func(c *mail.SMTPConfig) { c.TLS = mail.TLSAuto }, nil)
		require.NoError(t, s.Send(t.Context(), testMessage()))
		require.False(t, srv.WaitMessages(t, 1, time.Second)[0].TLS)
	})
	t.Run("auth required but not offered", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t)
		s := newSender(t, srv, func(c *mail.SMTPConfig) { c.Username, c.Password = testUser, testPass }, nil)
		require.ErrorContains(t, s.Send(t.Context(), testMessage()), "AUTH")
	})
}

func TestSendInvalidMessageDoesNotConnect(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	s := newSender(t, srv, nil, nil)
	m := testMessage()
	m.To = "alice@example.com\r\nBcc: evil@example.net"
	err := s.Send(t.Context(), m)
	require.ErrorIs(t, err, mail.ErrInvalidAddress)
	require.True(t, mail.IsPermanent(err))
	require.Zero(t, srv.Connections())
}

func TestSenderClose(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	s := newSender(t, srv, nil, nil)
	require.NoError(t, s.Send(t.Context(), testMessage()))
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())
	err := s.Send(t.Context(), testMessage())
	require.ErrorIs(t, err, mail.ErrSenderClosed)
	require.False(t, mail.IsPermanent(err))
}

func TestSendLogsNoSecrets(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))

	srv := smtptest.Start(t, smtptest.WithAuth(testUser, testPass))
	s := newSender(t, srv, func(c *mail.SMTPConfig) {
		c.Username, c.Password = testUser, testPass
		c.Timeout = 300 * time.Millisecond
	}, logger)

	ctx := t.Context()
	require.NoError(t, s.Send(ctx, testMessage()))
	require.NoError(t, s.Send(ctx, testMessage()))
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, Message: "<" + testTo + "> unknown"})
	require.Error(t, s.Send(ctx, testMessage()))
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageData, Code: 554, Message: "spam " + testCode})
	require.Error(t, s.Send(ctx, testMessage()))
	srv.SetFault(smtptest.Fault{Stage: smtptest.StageData, Hang: true})
	require.Error(t, s.Send(ctx, testMessage()))
	srv.ClearFault()
	require.NoError(t, srv.Stop())
	require.NoError(t, srv.Restart())
	require.NoError(t, s.Send(ctx, testMessage()))

	out := buf.String()
	require.NotEmpty(t, out)
	require.Contains(t, out, mail.MaskAddress(testTo))
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

func TestNewSenderValidates(t *testing.T) {
	t.Parallel()
	good := mail.SMTPConfig{Host: "smtp.example.com", Port: 587, From: "no-reply@example.com"}
	tests := []struct {
		name   string
		mutate func(*mail.SMTPConfig)
		want   string // the whole error; empty when cfg is good
	}{
		{"good", func(*mail.SMTPConfig) {}, ""},
		{"display name From", func(c *mail.SMTPConfig) { c.From = "Verifyq 验证 <no-reply@example.com>" }, ""},
		{"IPv6 host", func(c *mail.SMTPConfig) { c.Host = "::1" }, ""},
		{"zero timeouts take defaults", func(c *mail.SMTPConfig) { c.Timeout, c.IdleTimeout = 0, 0 }, ""},
		{"empty host", func(c *mail.SMTPConfig) { c.Host = "" }, "Host: empty or malformed"},
		{"host with space", func(c *mail.SMTPConfig) { c.Host = "smtp example" }, "Host: empty or malformed"},
		{"port 0", func(c *mail.SMTPConfig) { c.Port = 0 }, "Port: 0 is not in 1..65535"},
		{"port too big", func(c *mail.SMTPConfig) { c.Port = 70000 }, "Port: 70000 is not in 1..65535"},
		{"bad TLS mode", func(c *mail.SMTPConfig) { c.TLS = "ssl3" }, `TLS: "ssl3": want auto, none, starttls or tls`},
		{"empty From", func(c *mail.SMTPConfig) { c.From = "" }, "From: invalid email address: malformed"},
		{"From injection", func(c *mail.SMTPConfig) { c.From = "a@b.co\r\nBcc: x@y.z" }, "From: invalid email address: contains a control character"},
		{"password without user", func(c *mail.SMTPConfig) { c.Password = "hunter2" }, "Password: set without a username"},
		{"negative timeout", func(c *mail.SMTPConfig) { c.Timeout = -1 }, "Timeout: -1ns is negative"},
		{"negative idle timeout", func(c *mail.SMTPConfig) { c.IdleTimeout = -1 }, "IdleTimeout: -1ns is negative"},
		{"every problem at once", func(c *mail.SMTPConfig) { *c = mail.SMTPConfig{Password: "hunter2", Timeout: -1} },
			"Host: empty or malformed\nPort: 0 is not in 1..65535\nFrom: invalid email address: malformed\n" +
				"Password: set without a username\nTimeout: -1ns is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := good
			tt.mutate(&cfg)
			s, err := mail.NewSender(cfg, nil)
			if tt.want == "" {
				require.NoError(t, cfg.Validate())
				require.NoError(t, err)
				require.NoError(t, s.Close())
				return
			}
			require.Error(t, err)
			assert.Equal(t, tt.want, err.Error())
			assert.Equal(t, tt.want, cfg.Validate().Error(), "NewSender reports what Validate does")
			assert.NotContains(t, err.Error(), "hunter2", "the password is never repeated")
		})
	}
}

func TestParseTLSMode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want mail.TLSMode
		ok   bool
	}{
		{"", mail.TLSAuto, true},
		{"auto", mail.TLSAuto, true},
		{"NONE", mail.TLSNone, true},
		{"starttls", mail.TLSStartTLS, true},
		{"tls", mail.TLSImplicit, true},
		{"ssl", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := mail.ParseTLSMode(tt.in)
			if !tt.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestSMTPErrorText(t *testing.T) {
	t.Parallel()
	e := &mail.SMTPError{Code: 550, Msg: "5.1.1 <alice@example.com>: user unknown"}
	require.Equal(t, "smtp: server replied 550 (5.1.1)", e.Error())
	require.True(t, e.Permanent())
	e = &mail.SMTPError{Code: 451, Msg: "try later"}
	require.Equal(t, "smtp: server replied 451", e.Error())
	require.False(t, e.Permanent())
	require.False(t, mail.IsPermanent(errors.New("x")))
	require.False(t, mail.IsPermanent(nil))
	require.True(t, strings.HasPrefix(e.Error(), "smtp:"))
}

// An internationalized domain goes to the server as its A-label, in the
// envelope and the To header; a non-ASCII local part needs SMTPUTF8 and is
// refused permanently, before RCPT, by a server without it.
func TestSendInternationalAddresses(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	s := newSender(t, srv, nil, nil)
	m := testMessage()
	m.To = "Kim@Bücher.de"
	require.NoError(t, s.Send(t.Context(), m))
	got := srv.WaitMessages(t, 1, 5*time.Second)[0]
	require.Equal(t, []string{"Kim@xn--bcher-kva.de"}, got.To)
	require.Contains(t, string(got.Raw), "\r\nTo: Kim@xn--bcher-kva.de\r\n")

	m.To = "张三@example.com"
	err := s.Send(t.Context(), m)
	require.ErrorIs(t, err, mail.ErrInvalidAddress)
	require.True(t, mail.IsPermanent(err))

	utf8srv := smtptest.Start(t, smtptest.WithSMTPUTF8())
	require.NoError(t, newSender(t, utf8srv, nil, nil).Send(t.Context(), m))
	require.Equal(t, []string{"张三@example.com"}, utf8srv.WaitMessages(t, 1, 5*time.Second)[0].To)
}

func TestParseSMTPURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want mail.SMTPConfig
	}{
		{"smtp://localhost:1025", mail.SMTPConfig{Host: "localhost", Port: 1025, TLS: mail.TLSAuto}},
		{"smtp://mail.example.com", mail.SMTPConfig{Host: "mail.example.com", Port: 25, TLS: mail.TLSAuto}},
		{"smtps://mail.example.com", mail.SMTPConfig{Host: "mail.example.com", Port: 465, TLS: mail.TLSImplicit}},
		{"smtp://u%40x.com:p%3Aa%2Fss%25@mail.example.com:587?tls=starttls&timeout=20s",
			mail.SMTPConfig{Host: "mail.example.com", Port: 587, Username: "u@x.com", Password: "p:a/ss%", TLS: mail.TLSStartTLS, Timeout: 20 * time.Second}},
		{"smtp://127.0.0.1:2525/?tls=none", mail.SMTPConfig{Host: "127.0.0.1", Port: 2525, TLS: mail.TLSNone}},
		{"smtp://[::1]:25?tls=AUTO", mail.SMTPConfig{Host: "::1", Port: 25, TLS: mail.TLSAuto}},
		{"smtps://user@mail.example.com:2465?timeout=1m", mail.SMTPConfig{Host: "mail.example.com", Port: 2465, Username: "user", TLS: mail.TLSImplicit, Timeout: time.Minute}},
	}
	for _, tt := range tests {
		got, err := mail.ParseSMTPURL(tt.in)
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.want, got, tt.in)
		got.From = "no-reply@example.com"
		assert.NoError(t, got.Validate(), tt.in)
	}

	for in, want := range map[string]string{
		"http://hunter2@mail.example.com":              "want the scheme smtp:// or smtps://",
		"smtp://:hunter2@mail.example.com":             "a password without a user",
		"smtp://u:hunter2@mail.example.com:99999":      "the port is not in 1..65535",
		"smtp://u:hunter2@:25":                         "the host is empty or malformed",
		"smtp://u:hunter2@mail.example.com/x":          "want no path and no fragment",
		"smtp://u:hunter2@mail.example.com?tls=tls":    "tls: want auto, starttls or none (smtps:// for implicit TLS)",
		"smtp://u:hunter2@mail.example.com?tls=ssl":    "tls: want auto, starttls or none",
		"smtps://u:hunter2@mail.example.com?tls=none":  "tls: smtps:// is always implicit TLS",
		"smtp://u:hunter2@mail.example.com?timeout=0s": "timeout: want a positive duration",
		"smtp://u:hunter2@mail.example.com?timeout=x":  "timeout: want a positive duration",
		"smtp://mail.example.com?hunter2=1":            "an unknown parameter: want only tls and timeout",
		"smtp://mail.example.com?tls=none&tls=auto":    "tls: given twice",
		"smtp://u:hunter2@mail.example.com?a=%zz":      "the query is malformed",
		"smtp://u:hunt%zzer2@mail.example.com":         "not a valid URL",
		"smtp:hunter2":                                 "not a valid URL",
	} {
		_, err := mail.ParseSMTPURL(in)
		require.Error(t, err, in)
		assert.Contains(t, err.Error(), want, in)
		assert.NotContains(t, err.Error(), "hunter2", "%s: the URL is never repeated", in)
		assert.NotContains(t, err.Error(), "mail.example.com", "%s: the URL is never repeated", in)
	}
	_, err := mail.ParseSMTPURL("ftp://:hunter2@:0/x?tls=tls&timeout=-1s")
	require.Error(t, err)
	assert.Len(t, strings.Split(err.Error(), "\n"), 7, "every problem at once: %v", err)
}
