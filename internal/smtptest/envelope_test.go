package smtptest_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/smtptest"
)

func TestEnvelopeOnlyKeepsEnvelopeAndAcceptTime(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithEnvelopeOnly())
	srv.SetLatency(50 * time.Millisecond)
	start := time.Now()
	require.NoError(t, client{}.send(t, srv))

	msgs := srv.WaitMessages(t, 1, 5*time.Second)
	m := msgs[0]
	require.Equal(t, "a@example.com", m.From)
	require.Equal(t, []string{"b@example.com"}, m.To)
	require.Nil(t, m.Raw, "the data is not kept")
	require.Empty(t, m.Subject, "nor decoded")
	require.Empty(t, m.Text)
	require.GreaterOrEqual(t, m.Accepted.Sub(start), 50*time.Millisecond, "accepted after the latency")
	require.WithinDuration(t, time.Now(), m.Accepted, 5*time.Second)
}

func TestAcceptedIsSetOnDecodedMessages(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	before := time.Now()
	require.NoError(t, client{}.send(t, srv))
	m := srv.WaitMessages(t, 1, 5*time.Second)[0]
	require.False(t, m.Accepted.Before(before))
	require.NotEmpty(t, m.Raw)
}
