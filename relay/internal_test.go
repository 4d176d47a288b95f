package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recordingConn is a net.Conn that records what is written to it and
// reads from r.
type recordingConn struct {
	net.Conn // nil: only Read and Write are used
	r        io.Reader
	written  []string
}

func (c *recordingConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *recordingConn) Write(p []byte) (int, error) {
	c.written = append(c.written, string(p))
	return len(p), nil
}

func TestGuardHoldsBackTheAuthCancel(t *testing.T) {
	t.Parallel()
	conn := &recordingConn{}
	g := &guard{Conn: conn}
	mech := counted{Client: sasl.NewPlainClient("", "u", "p"), g: g}

	_, err := g.Write([]byte("EHLO x\r\n"))
	require.NoError(t, err, "not armed: every write passes")

	g.arm(true)
	_, err = g.Write([]byte("AUTH ...\r\n"))
	require.ErrorIs(t, err, errCancelHeld, "armed, no response made yet")
	_, _, err = mech.Start()
	require.NoError(t, err)
	_, err = g.Write([]byte("AUTH PLAIN AHUAcA==\r\n"))
	require.NoError(t, err, "the write of the initial response")
	_, err = g.Write([]byte("*\r\n"))
	require.ErrorIs(t, err, errCancelHeld, "the cancel after the final reply")
	g.arm(false)

	_, err = g.Write([]byte("QUIT\r\n"))
	require.NoError(t, err)
	require.Equal(t, []string{"EHLO x\r\n", "AUTH PLAIN AHUAcA==\r\n", "QUIT\r\n"}, conn.written)
}

func TestGuardAllowsEachChallengeResponse(t *testing.T) {
	t.Parallel()
	conn := &recordingConn{}
	g := &guard{Conn: conn}
	g.arm(true)
	g.allow()
	g.allow()
	for range 2 {
		_, err := g.Write([]byte("x"))
		require.NoError(t, err)
	}
	_, err := g.Write([]byte("*"))
	require.ErrorIs(t, err, errCancelHeld)

	// A mechanism's error allows no write.
	g.arm(true)
	_, err = counted{Client: failing{}, g: g}.Next([]byte("challenge"))
	require.Error(t, err)
	_, err = g.Write([]byte("*"))
	require.ErrorIs(t, err, errCancelHeld)
}

// failing is a SASL mechanism whose every step fails.
type failing struct{}

func (failing) Start() (string, []byte, error) { return "", nil, errors.New("no") }
func (failing) Next([]byte) ([]byte, error)    { return nil, errors.New("no") }

func TestGuardReplaysTheGreeting(t *testing.T) {
	t.Parallel()
	conn := &recordingConn{r: stringsReader("250 ok\r\n")}
	g := &guard{Conn: conn, greeting: []byte("220 greeted\r\n")}
	got, err := io.ReadAll(g)
	require.NoError(t, err)
	require.Equal(t, "220 greeted\r\n250 ok\r\n", string(got))
}

type stringReader struct{ s string }

func stringsReader(s string) io.Reader { return &stringReader{s} }

func (r *stringReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	n := copy(p, r.s)
	r.s = r.s[n:]
	return n, nil
}

func TestCutEnhanced(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string // "" when there is none
		rest string
	}{
		{"5.1.1 user unknown", "5.1.1", "user unknown"},
		{"4.7.0", "4.7.0", ""},
		{"2.0.0 OK", "2.0.0", "OK"},
		{"5.123.456 x", "5.123.456", "x"},
		{"3.1.1 x", "", "3.1.1 x"},
		{"5.1.1x y", "", "5.1.1x y"},
		{"5.01.1 x", "", "5.01.1 x"},
		{"+5.1.1 x", "", "+5.1.1 x"},
		{"user unknown", "", "user unknown"},
		{"", "", ""},
		{"5.1. x", "", "5.1. x"},
		// Multi-line replies, their lines joined by "\n".
		{"5.7.1\n5.7.1 Relaying denied", "5.7.1", "Relaying denied"},
		{"5.7.1\nRelaying denied", "5.7.1", "Relaying denied"},
		{"5.1.1 no such\n5.1.1 user", "5.1.1", "no such\nuser"},
		{"5.1.1\tno such user", "5.1.1", "no such user"},
		{"5.1.1 a\n5.1.2 b", "5.1.1", "a\n5.1.2 b"},
		{"5.7.1\n", "5.7.1", ""},
		{"user\n5.1.1 unknown", "", "user\n5.1.1 unknown"},
	}
	for _, tt := range tests {
		ec, rest, ok := cutEnhanced(tt.in)
		assert.Equal(t, tt.want != "", ok, "%q", tt.in)
		assert.Equal(t, tt.rest, rest, "%q", tt.in)
		if ok {
			assert.Equal(t, tt.want, enhanced(ec), "%q", tt.in)
		}
	}
}

// RFC 3463: class "." subject "." detail, the subject and the detail of
// one to three digits.
func TestCutEnhancedRejectsMalformedNumbers(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"5.-1.1 x", "5.1.-1 x", "5.1234.1 x", "5.1.1234 x"} {
		_, rest, ok := cutEnhanced(in)
		assert.False(t, ok, "%q", in)
		assert.Equal(t, in, rest, "%q", in)
	}
}

func TestReplyOf(t *testing.T) {
	t.Parallel()
	e := replyOf(421, "4.7.0 Too many connections")
	require.Equal(t, 421, e.Code)
	require.Equal(t, smtp.EnhancedCode{4, 7, 0}, e.EnhancedCode)
	require.Equal(t, "Too many connections", e.Message)
	e = replyOf(554, "go away")
	require.Equal(t, "", enhanced(e.EnhancedCode))
	require.Equal(t, "go away", e.Message)
}

func TestEnhanced(t *testing.T) {
	t.Parallel()
	require.Equal(t, "5.1.1", enhanced(smtp.EnhancedCode{5, 1, 1}))
	require.Equal(t, "", enhanced(smtp.EnhancedCode{}))
	require.Equal(t, "", enhanced(smtp.NoEnhancedCode))
}

func TestFail(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	err := fail(ctx, StageRcpt, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	require.Equal(t, &Error{Stage: StageRcpt, Code: 550, Enhanced: "5.1.1", Text: "no such user"}, err)
	// go-smtp's client leaves the code in the text when it is alone on the
	// reply's first line.
	err = fail(ctx, StageAuth, &smtp.SMTPError{Code: 535, Message: "5.7.8\n5.7.8 Authentication failed"})
	require.Equal(t, &Error{Stage: StageAuth, Code: 535, Enhanced: "5.7.8", Text: "Authentication failed"}, err)
	err = fail(ctx, StageAuth, &smtp.SMTPError{Code: 535, Message: "no code"})
	require.Equal(t, &Error{Stage: StageAuth, Code: 535, Text: "no code"}, err)

	inner := &Error{Stage: StageTLS, Err: io.EOF}
	wrapped := fmt.Errorf("x: %w", inner)
	require.Equal(t, wrapped, fail(ctx, StageData, wrapped), "an *Error keeps its stage") //nolint:testifylint // the very value

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	err = fail(cancelled, StageData, os.ErrDeadlineExceeded)
	require.ErrorIs(t, err, context.Canceled, "the ended ctx is the cause")
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.Equal(t, StageData, StageOf(err))
}

func TestIsDeadConn(t *testing.T) {
	t.Parallel()
	for _, err := range []error{
		io.EOF,
		io.ErrUnexpectedEOF,
		net.ErrClosed,
		syscall.ECONNRESET,
		syscall.EPIPE,
		syscall.ECONNABORTED,
		&Error{Stage: StageMail, Code: 421, Enhanced: "4.4.2"},
		&Error{Stage: StageMail, Err: fmt.Errorf("read: %w", io.EOF)},
		&net.OpError{Op: "write", Err: os.NewSyscallError("write", syscall.EPIPE)},
	} {
		assert.True(t, isDeadConn(err), "%v", err)
	}
	for _, err := range []error{
		&Error{Stage: StageMail, Code: 451},
		&Error{Stage: StageMail, Code: 554},
		&Error{Stage: StageMail, Err: os.ErrDeadlineExceeded},
		errors.New("x"),
		context.Canceled,
	} {
		assert.False(t, isDeadConn(err), "%v", err)
	}
}

func TestMechanism(t *testing.T) {
	t.Parallel()
	for params, want := range map[string]string{
		"PLAIN LOGIN":      "PLAIN",
		"LOGIN plain":      "PLAIN",
		"LOGIN CRAM-MD5":   "LOGIN",
		"LOGIN XOAUTH2":    "LOGIN",
		"login":            "LOGIN",
		"CRAM-MD5 XOAUTH2": "",
		"":                 "",
		"PLAINX LOGINX":    "",
		"XOAUTH2 PLAIN":    "PLAIN",
	} {
		assert.Equal(t, want, mechanism(params), "%q", params)
	}
}

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	for host, want := range map[string]bool{
		"localhost":        true,
		"LocalHost":        true,
		"127.0.0.1":        true,
		"127.1.2.3":        true,
		"::1":              true,
		"0.0.0.0":          false,
		"10.0.0.1":         false,
		"smtp.example.com": false,
		"localhost.":       false,
		"":                 false,
	} {
		assert.Equal(t, want, isLoopback(host), host)
	}
}

func TestAddressLiteral(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 4321}, "[192.0.2.7]"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 4321}, "[IPv6:2001:db8::7]"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 4321}, "[192.0.2.7]"},
	} {
		got := addressLiteral(tt.addr)
		assert.Equal(t, tt.want, got)
		assert.NoError(t, ValidateHelloName(got))
	}
}

// scriptedConn answers with replies, whatever is written, and records
// each write: one write is one flush of the session's commands.
type scriptedConn struct{ recordingConn }

func (*scriptedConn) SetDeadline(time.Time) error { return nil }
func (*scriptedConn) Close() error                { return nil }

// scripted returns a session on a connection that answers with replies.
func scripted(replies string, pipelining bool) (*session, *scriptedConn) {
	conn := &scriptedConn{recordingConn{r: strings.NewReader(replies)}}
	g := &guard{Conn: conn}
	return &session{g: g, text: newText(g), pipelining: pipelining}, conn
}

const testBody = "Subject: x\r\n\r\n.hi\r\n"

func runTransaction(s *session) (bool, error) {
	inStep, _, err := (&Client{}).transaction(context.Background(), s, "a@x.test", "b@y.test", false, strings.NewReader(testBody))
	return inStep, err
}

// With PIPELINING, MAIL, RCPT and DATA go out in one write, and the
// message in a second one after the 354.
func TestTransactionPipelined(t *testing.T) {
	t.Parallel()
	s, conn := scripted("250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n", true)
	inStep, err := runTransaction(s)
	require.NoError(t, err)
	require.True(t, inStep)
	require.Equal(t, []string{
		"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
		"Subject: x\r\n\r\n..hi\r\n.\r\n",
	}, conn.written)
}

// Without PIPELINING, each command waits for its reply: a write each.
func TestTransactionOneCommandAtATime(t *testing.T) {
	t.Parallel()
	s, conn := scripted("250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n", false)
	s.eightBit = true
	inStep, err := runTransaction(s)
	require.NoError(t, err)
	require.True(t, inStep)
	require.Equal(t, []string{
		"MAIL FROM:<a@x.test> BODY=8BITMIME\r\n", "RCPT TO:<b@y.test>\r\n", "DATA\r\n",
		"Subject: x\r\n\r\n..hi\r\n.\r\n",
	}, conn.written)

	s, conn = scripted("250 ok\r\n550 5.1.1 no such user\r\n", false)
	inStep, err = runTransaction(s)
	requireRefused(t, err, StageRcpt, 550, "5.1.1")
	require.True(t, inStep)
	require.Len(t, conn.written, 2, "no DATA after the refused RCPT: %q", conn.written)
}

func requireRefused(t *testing.T, err error, stage Stage, code int, enhanced string) {
	t.Helper()
	var e *Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, stage, e.Stage, "%v", err)
	require.Equal(t, code, e.Code, "%v", err)
	require.Equal(t, enhanced, e.Enhanced, "%v", err)
}

// Every reply of a pipelined group is read, and the first refusal is the
// one returned; the message is not sent.
func TestTransactionPipelinedRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, replies string
		stage         Stage
		code          int
		enhanced      string
		inStep        bool
		written       int
	}{
		{"mail", "550 5.7.1 sender refused\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need RCPT\r\n", StageMail, 550, "5.7.1", true, 1},
		{"rcpt", "250 ok\r\n550 5.1.1 no such user\r\n554 5.5.1 no valid recipients\r\n", StageRcpt, 550, "5.1.1", true, 1},
		{"data", "250 ok\r\n250 ok\r\n451 4.3.0 try later\r\n", StageData, 451, "4.3.0", true, 1},
		{"rcpt deferred, multi-line", "250 ok\r\n450-4.2.0 greylisted\r\n450 4.2.0 come back later\r\n503 no recipients\r\n", StageRcpt, 450, "4.2.0", true, 1},
		{"421 at mail ends the session", "421 4.3.2 shutting down\r\n", StageMail, 421, "4.3.2", false, 1},
		{"421 after a refusal keeps the refusal", "250 ok\r\n550 5.1.1 no\r\n421 4.3.2 bye\r\n", StageRcpt, 550, "5.1.1", false, 1},
		{"the end of data", "250 ok\r\n250 ok\r\n354 go\r\n554 5.7.1 spam\r\n", StageDataEnd, 554, "5.7.1", true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, conn := scripted(tc.replies, true)
			inStep, err := runTransaction(s)
			requireRefused(t, err, tc.stage, tc.code, tc.enhanced)
			require.Equal(t, tc.inStep, inStep)
			require.Len(t, conn.written, tc.written, "%q", conn.written)
		})
	}
}

// A server that accepts DATA although it refused the recipient gets an
// empty message's end, so that the session stays in step (RFC 2920, 3.1).
func TestTransactionEndsDataAcceptedAfterARefusal(t *testing.T) {
	t.Parallel()
	s, conn := scripted("250 ok\r\n550 5.1.1 no\r\n354 go\r\n554 no valid recipients\r\n", true)
	inStep, err := runTransaction(s)
	requireRefused(t, err, StageRcpt, 550, "5.1.1")
	require.True(t, inStep)
	require.Equal(t, []string{"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n", ".\r\n"}, conn.written)
}

// No reply at all: the connection was dead, at MAIL, before any data.
func TestTransactionNoReply(t *testing.T) {
	t.Parallel()
	s, _ := scripted("", true)
	inStep, err := runTransaction(s)
	require.False(t, inStep)
	require.Equal(t, StageMail, StageOf(err))
	require.True(t, isDeadConn(err), "%v", err)
	require.True(t, NotAccepted(err))

	s, _ = scripted("250 ok\r\n250 ok\r\n354 go\r\n", true)
	inStep, err = runTransaction(s)
	require.False(t, inStep)
	require.Equal(t, StageDataEnd, StageOf(err))
	require.False(t, NotAccepted(err), "the final dot went out: the relay may have the mail")
}

// A reply line over maxReplyLine bytes is an error, not a growing buffer.
func TestTransactionBoundsReplyLines(t *testing.T) {
	t.Parallel()
	s, _ := scripted("250 "+strings.Repeat("x", maxReplyLine)+"\r\n", true)
	inStep, err := runTransaction(s)
	require.False(t, inStep)
	require.ErrorIs(t, err, errReplyLine)

	s, _ = scripted("250-"+strings.Repeat("x", maxReplyLine-10)+"\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n", true)
	_, err = runTransaction(s)
	require.NoError(t, err, "the bound is per line")
}

// An address with a line break in it is never sent.
func TestTransactionRefusesLineBreaks(t *testing.T) {
	t.Parallel()
	s, conn := scripted("", true)
	inStep, _, err := (&Client{}).transaction(context.Background(), s, "a@x.test", "b@y.test\r\nRSET", false, strings.NewReader(testBody))
	require.ErrorIs(t, err, errLineBreak)
	require.Equal(t, StageRcpt, StageOf(err))
	require.True(t, inStep)
	require.Empty(t, conn.written)
}

// A positive reply is told by its first digit (RFC 5321, 4.2.1 and
// 4.3.2): 251 to RCPT accepts the recipient, so the message goes out in
// full, not as an empty one ended after a refusal.
func TestTransactionTakesAnyPositiveReply(t *testing.T) {
	t.Parallel()
	for _, pipelining := range []bool{true, false} {
		s, conn := scripted("250 2.1.0 ok\r\n251 2.1.5 user not local; will forward\r\n354 go\r\n250 2.0.0 queued\r\n", pipelining)
		inStep, err := runTransaction(s)
		require.NoError(t, err, "pipelining %v", pipelining)
		require.True(t, inStep)
		require.Equal(t, "Subject: x\r\n\r\n..hi\r\n.\r\n", conn.written[len(conn.written)-1], "pipelining %v", pipelining)
		require.Zero(t, s.refusals)
	}
}
