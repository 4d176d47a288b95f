package bounce_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/verifyq/verifyq/bounce"
	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/logtest"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/returnpath"
)

// serve serves e's intake on a free loopback port until the test ends and
// returns its address.
func (e *env) serve(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- e.intake.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, e.intake.Shutdown(ctx))
		assert.NoError(t, <-done)
	})
	return ln.Addr().String()
}

// dial opens an SMTP session with the intake, greeted.
func dial(t *testing.T, addr string) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.Hello("mx.relay.test"))
	return c
}

// replyCode is the SMTP reply code of err, 0 for none.
func replyCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// deliver sends msg from the null sender to rcpt over c and returns the
// reply to the end of DATA.
func deliver(t *testing.T, c *smtp.Client, rcpt string, msg []byte) error {
	t.Helper()
	require.NoError(t, c.Mail("", nil))
	require.NoError(t, c.Rcpt(rcpt, nil))
	w, err := c.Data()
	require.NoError(t, err)
	_, err = w.Write(msg)
	require.NoError(t, err)
	return w.Close()
}

// Over SMTP: a DSN from the null sender to the token's address is taken
// (250) and marks the status; the same DSN again is taken too; a
// recipient other than the return path is refused at RCPT with 550 5.1.1;
// a forged or malformed report is taken and dropped with 250, never an
// error an MTA would retry or bounce.
func TestIntakeOverSMTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	addr := e.serve(t)
	id := codes.ID{Email: "nobody@dest.test"}
	rp := e.send(t, id, "task-1")
	c := dial(t, addr)

	ok, _ := c.Extension("SIZE")
	assert.True(t, ok)
	require.NoError(t, c.Mail("", nil))
	for _, other := range []string{"postmaster@bounce.test", "bounces@other.test", "bounces-x@bounce.test"} {
		var se *smtp.SMTPError
		require.ErrorAs(t, c.Rcpt(other, nil), &se, other)
		assert.Equal(t, 550, se.Code, other)
		assert.Equal(t, smtp.EnhancedCode{5, 1, 1}, se.EnhancedCode, other)
	}
	require.NoError(t, c.Reset())

	msg := sample(t, "postfix-user-unknown.eml", rp)
	require.NoError(t, deliver(t, c, rp, msg))
	assert.Equal(t, delivery.StateBounced, e.status(t, id).State)
	require.NoError(t, deliver(t, c, strings.ToUpper(rp), msg), "an MTA may fold the case")

	forged := strings.Replace(rp, "bounces+", "bounces+a", 1)
	forged = forged[:strings.IndexByte(forged, '@')-1] + forged[strings.IndexByte(forged, '@'):]
	require.NoError(t, deliver(t, c, forged, sample(t, "postfix-user-unknown.eml", forged)))
	require.NoError(t, deliver(t, c, rp, sample(t, "autoreply.eml", rp)))
	require.NoError(t, deliver(t, c, "bounces@bounce.test", []byte("Subject: hi\r\n\r\nhello\r\n")))
	require.NoError(t, c.Quit())

	assert.Equal(t, map[bounce.Result]int{
		bounce.ResultBounced: 2, bounce.ResultForged: 1, bounce.ResultMalformed: 2,
	}, e.counts.get())
	assert.Len(t, e.suppressed(t), 1)
}

// The intake's bounds: a message over MaxMessageBytes gets 552, and the
// recipient past MaxRecipients 452; the session goes on after each.
func TestIntakeBounds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	addr := e.serve(t)
	c := dial(t, addr)
	_, size := c.Extension("SIZE")
	assert.Equal(t, strconv.Itoa(bounce.MaxMessageBytes), size)

	big := append([]byte("Subject: big\r\n\r\n"), bytes.Repeat([]byte(strings.Repeat("x", 76)+"\r\n"), bounce.MaxMessageBytes/78+1)...)
	err := deliver(t, c, "bounces@bounce.test", big)
	assert.Equal(t, 552, replyCode(err), "%v", err)

	require.NoError(t, c.Mail("", nil))
	for i := range bounce.MaxRecipients {
		require.NoError(t, c.Rcpt("bounces@bounce.test", nil), "recipient %d", i)
	}
	assert.Equal(t, 452, replyCode(c.Rcpt("bounces@bounce.test", nil)))
	require.NoError(t, c.Reset())
	require.NoError(t, deliver(t, c, "bounces@bounce.test", []byte("Subject: small\r\n\r\nhi\r\n")))
	assert.Equal(t, map[bounce.Result]int{bounce.ResultTooLarge: 1, bounce.ResultMalformed: 1}, e.counts.get())
}

// With Redis away, a report whose token verified gets 451: the MTA keeps
// it and tries again, and nothing is lost. What cannot be matched still
// gets 250.
func TestIntakeRedisAway(t *testing.T) {
	t.Parallel()
	e := newEnv(t, failingRecords{})
	addr := e.serve(t)
	rp := e.path.For(returnpath.Send{Task: "task-1", Email: "nobody@dest.test"}, e.now)
	c := dial(t, addr)
	err := deliver(t, c, rp, sample(t, "postfix-user-unknown.eml", rp))
	assert.Equal(t, 451, replyCode(err), "%v", err)
	require.NoError(t, deliver(t, c, rp, sample(t, "autoreply.eml", rp)))
	assert.Equal(t, map[bounce.Result]int{bounce.ResultError: 1, bounce.ResultMalformed: 1}, e.counts.get())
}

// Shutdown closes the sessions open, idle or not, and returns once every
// goroutine of the intake is gone.
func TestIntakeShutdown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	path, err := returnpath.New("bounces@bounce.test", secret)
	require.NoError(t, err)
	logger, _ := logtest.New(t)
	in, err := bounce.New(bounce.Config{Path: path, Records: failingRecords{}, Logger: logger})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- in.Serve(ln) }()

	idle, err := smtp.Dial(ln.Addr().String())
	require.NoError(t, err)
	require.NoError(t, idle.Hello("mx.relay.test"))
	midway, err := smtp.Dial(ln.Addr().String())
	require.NoError(t, err)
	require.NoError(t, midway.Mail("", nil))
	require.NoError(t, midway.Rcpt("bounces@bounce.test", nil))
	w, err := midway.Data()
	require.NoError(t, err)
	_, err = w.Write([]byte("Subject: half a message\r\n"))
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, in.Shutdown(ctx))
	require.NoError(t, <-done)
	assert.Error(t, w.Close(), "the unfinished message is not taken: its MTA sends it again")
	assert.Error(t, idle.Noop())
	_ = idle.Close()
	_ = midway.Close()
}

// A client that trickles its commands, each byte well within Timeout,
// holds its connection no longer than the session's bound: the intake
// closes it, and its place under MaxPerSource is free again.
func TestIntakeSessionBound(t *testing.T) {
	t.Parallel()
	path, err := returnpath.New("bounces@bounce.test", secret)
	require.NoError(t, err)
	logger, _ := logtest.New(t)
	in, err := bounce.New(bounce.Config{Path: path, Records: failingRecords{}, Logger: logger, SessionTimeout: 300 * time.Millisecond})
	require.NoError(t, err)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := platform.LimitListener(inner, platform.ConnLimits{Max: 4, PerSource: 1})
	done := make(chan error, 1)
	go func() { done <- in.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, in.Shutdown(ctx))
		assert.NoError(t, <-done)
	})

	slow, err := net.Dial("tcp", inner.Addr().String())
	require.NoError(t, err)
	defer slow.Close()
	r := bufio.NewReader(slow)
	greeting, err := r.ReadString('\n')
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(greeting, "220 "), "%q", greeting)

	stop := make(chan struct{})
	trickled := make(chan struct{})
	defer func() { close(stop); <-trickled }()
	go func() {
		defer close(trickled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := slow.Write([]byte{"NOOP\r\n"[i%6]}); err != nil {
				return
			}
		}
	}()
	// Generous: the bound is 300 ms, but a loaded machine may be slow.
	require.NoError(t, slow.SetReadDeadline(time.Now().Add(20*time.Second)))
	replies := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "the session was never cut off (%d replies)", replies)
			break
		}
		require.True(t, strings.HasPrefix(line, "250 "), "%q", line)
		replies++
	}

	// The place the slow client held is free again.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		conn, err := net.DialTimeout("tcp", inner.Addr().String(), time.Second)
		if !assert.NoError(c, err) {
			return
		}
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		greeting, err := bufio.NewReader(conn).ReadString('\n')
		assert.NoError(c, err)
		assert.True(c, strings.HasPrefix(greeting, "220 "), "%q", greeting)
	}, 20*time.Second, 50*time.Millisecond)
}
