package relay_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/relay"
)

// Probe opens a connection as a send would, sends nothing, and leaves the
// connection for the next send.
func TestProbe(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithTLS(), smtptest.WithAuth(testUser, testPass))
	c := newClient(t, srv, func(c *relay.Config) {
		c.TLS = relay.TLSStartTLS
		c.Username, c.Password = testUser, testPass
		c.RootCAs = srv.RootCAs()
	}, nil)
	require.NoError(t, c.Probe(t.Context()))
	assert.Equal(t, 1, srv.Connections())
	assert.Zero(t, srv.Count(), "no mail")
	require.NoError(t, sendTo(t, c, testTo))
	assert.Equal(t, 1, srv.Connections(), "the send reused the probe's connection")
}

// Probe opens a new connection even when one is idle; at the cap it ends
// an idle one to make room.
func TestProbeOpensANewConnection(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithCommands())
	c := newClient(t, srv, func(c *relay.Config) { c.MaxConns = 1 }, nil)
	require.NoError(t, sendTo(t, c, testTo))
	require.NoError(t, c.Probe(t.Context()))
	assert.Equal(t, 2, srv.Connections())
	cmds := srv.WaitCommand(t, "QUIT", 5*time.Second)
	assert.Equal(t, "QUIT", cmds[0][len(cmds[0])-1], "the idle connection was ended for the probe's")
	require.NoError(t, sendTo(t, c, testTo))
	assert.Equal(t, 2, srv.Connections(), "the send reused the probe's connection")
}

func TestProbeFailures(t *testing.T) {
	t.Parallel()
	t.Run("server down", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t)
		c := newClient(t, srv, nil, nil)
		require.NoError(t, srv.Stop())
		err := c.Probe(t.Context())
		require.Error(t, err)
		assert.Equal(t, relay.StageConnect, relay.StageOf(err), "%v", err)
		assert.Nil(t, relay.ReplyError(err))
		require.NoError(t, srv.Restart())
		assert.NoError(t, c.Probe(t.Context()))
	})
	t.Run("hung greeting, bounded by the timeout", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t)
		srv.SetFault(smtptest.Fault{Stage: smtptest.StageConnect, Hang: true})
		c := newClient(t, srv, func(c *relay.Config) { c.Timeout = 300 * time.Millisecond }, nil)
		err := c.Probe(t.Context())
		require.Error(t, err)
		assert.True(t, relay.IsTimeout(err), "%v", err)
		assert.Equal(t, relay.StageGreeting, relay.StageOf(err), "%v", err)
	})
	t.Run("421 greeting", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t)
		srv.SetFault(smtptest.Fault{Stage: smtptest.StageConnect, Code: 421})
		c := newClient(t, srv, nil, nil)
		e := relayError(t, c.Probe(t.Context()))
		assert.Equal(t, relay.StageGreeting, e.Stage)
		assert.Equal(t, 421, e.Code)
	})
	t.Run("wrong password", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t, smtptest.WithAuth(testUser, testPass))
		c := newClient(t, srv, func(c *relay.Config) { c.Username, c.Password = testUser, "wrong" }, nil)
		e := relayError(t, c.Probe(t.Context()))
		assert.Equal(t, relay.StageAuth, e.Stage)
		assert.Equal(t, 535, e.Code)
	})
	t.Run("after Close", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t)
		c := newClient(t, srv, nil, nil)
		require.NoError(t, c.Close())
		assert.ErrorIs(t, c.Probe(t.Context()), relay.ErrClosed)
		assert.Zero(t, srv.Connections())
	})
}
