package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

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

func TestReplied(t *testing.T) {
	t.Parallel()
	assert.True(t, replied(&smtp.SMTPError{Code: 550}))
	assert.True(t, replied(fmt.Errorf("x: %w", &smtp.SMTPError{Code: 451})))
	assert.False(t, replied(&smtp.SMTPError{Code: 421}), "the server closes after 421")
	assert.False(t, replied(io.EOF))
}

func TestOffersPlain(t *testing.T) {
	t.Parallel()
	assert.True(t, offersPlain("PLAIN LOGIN"))
	assert.True(t, offersPlain("LOGIN plain"))
	assert.False(t, offersPlain("LOGIN CRAM-MD5"))
	assert.False(t, offersPlain(""))
	assert.False(t, offersPlain("PLAINX"))
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
