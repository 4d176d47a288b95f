package mail_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/mail"
)

// Probe opens a connection as a send would, sends nothing, and leaves the
// connection for the next send.
func TestProbe(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithTLS(), smtptest.WithAuth(testUser, testPass))
	s := newSender(t, srv, func(c *mail.SMTPConfig) {
		c.TLS = mail.TLSStartTLS
		c.Username, c.Password = testUser, testPass
		c.TLSConfig = &tls.Config{RootCAs: srv.RootCAs()}
	}, nil)
	require.NoError(t, s.Probe(t.Context()))
	assert.Equal(t, 1, srv.Connections())
	assert.Zero(t, srv.Count(), "no mail")
	require.NoError(t, s.Send(t.Context(), testMessage()))
	assert.Equal(t, 1, srv.Connections(), "the send reused the probe's connection")
}

func TestProbeFailures(t *testing.T) {
	t.Parallel()
	t.Run("server down", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t)
		s := newSender(t, srv, nil, nil)
		require.NoError(t, srv.Stop())
		err := s.Probe(t.Context())
		require.Error(t, err)
		assert.True(t, mail.IsUnreachable(err), "%v", err)
		require.NoError(t, srv.Restart())
		assert.NoError(t, s.Probe(t.Context()))
	})
	t.Run("hung greeting, bounded by the timeout", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t)
		srv.SetFault(smtptest.Fault{Stage: smtptest.StageConnect, Hang: true})
		s := newSender(t, srv, func(c *mail.SMTPConfig) { c.Timeout = 300 * time.Millisecond }, nil)
		start := time.Now()
		err := s.Probe(t.Context())
		require.Error(t, err)
		assert.True(t, isTimeout(err), "%v", err)
		assert.True(t, mail.IsUnreachable(err), "%v", err)
		assert.Less(t, time.Since(start), 3*time.Second)
	})
	t.Run("421 greeting", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t)
		srv.SetFault(smtptest.Fault{Stage: smtptest.StageConnect, Code: 421})
		s := newSender(t, srv, nil, nil)
		err := s.Probe(t.Context())
		require.Error(t, err)
		assert.True(t, mail.IsTemporaryReply(err), "%v", err)
		assert.False(t, mail.IsUnreachable(err))
	})
	t.Run("wrong password", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t, smtptest.WithAuth(testUser, testPass))
		s := newSender(t, srv, func(c *mail.SMTPConfig) { c.Username, c.Password = testUser, "wrong" }, nil)
		err := s.Probe(t.Context())
		require.Error(t, err)
		assert.True(t, mail.IsPermanent(err), "%v", err)
	})
	t.Run("after Close", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t)
		s := newSender(t, srv, nil, nil)
		require.NoError(t, s.Close())
		assert.ErrorIs(t, s.Probe(t.Context()), mail.ErrSenderClosed)
		assert.Zero(t, srv.Connections())
	})
}

func TestErrorClasses(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err                    error
		permanent, temp, unrch bool
	}{
		{&mail.SMTPError{Code: 451}, false, true, false},
		{fmt.Errorf("mail: DATA: %w", &mail.SMTPError{Code: 421}), false, true, false},
		{&mail.SMTPError{Code: 550}, true, false, false},
		{fmt.Errorf("mail: dial: %w", errors.New("connection refused")), false, false, true},
		{fmt.Errorf("mail: EHLO: %w", io.EOF), false, false, true},
		{fmt.Errorf("mail: DATA: %w", context.DeadlineExceeded), false, false, true},
		{fmt.Errorf("mail: send: %w", context.Canceled), false, false, false},
		{mail.ErrSenderClosed, false, false, false},
		{fmt.Errorf("x: %w", mail.ErrInvalidAddress), true, false, false},
		{nil, false, false, false},
	} {
		assert.Equal(t, tt.permanent, mail.IsPermanent(tt.err), "IsPermanent(%v)", tt.err)
		assert.Equal(t, tt.temp, mail.IsTemporaryReply(tt.err), "IsTemporaryReply(%v)", tt.err)
		assert.Equal(t, tt.unrch, mail.IsUnreachable(tt.err), "IsUnreachable(%v)", tt.err)
	}
}
