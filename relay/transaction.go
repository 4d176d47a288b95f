package relay

import (
	"context"
	"errors"
	"io"
	"net/textproto"
	"strings"
	"time"
)

// verifyq speaks the mail transaction (MAIL, RCPT, DATA and the message),
// RSET and QUIT itself on the session's connection; go-smtp's client
// greets, says EHLO, starts TLS and authenticates. go-smtp's client sends
// each command and waits for its reply. To a server that offers
// PIPELINING (RFC 2920), verifyq sends MAIL, RCPT and DATA in one write
// and then reads their three replies: a mail takes two round trips
// instead of four, and the message itself goes out only after the
// server's 354, so nothing can be accepted before every earlier reply
// was read.

// maxRefusals is how many refused replies a session takes between two
// delivered mails before it is ended (QUIT) instead of reset, so that the
// next mail goes on a new connection. Servers count a client's errors
// until it delivers a mail: Postfix answers every command a second late
// after more than 10 (smtpd_soft_error_limit) and hangs up at 20. A
// pipelined transaction refused at RCPT draws two refusals (RCPT and
// DATA), one refused at MAIL three, so a session of recipients refused in
// a row is ended after four of them, before Postfix slows it down.
const maxRefusals = 8

// maxReplyLine bounds one line of a reply, in bytes: twice RFC 5321's
// 512, as go-smtp's client allows.
const maxReplyLine = 2000

// errReplyLine is a reply line longer than maxReplyLine.
var errReplyLine = errors.New("relay: reply line too long")

// errLineBreak is an address with CR or LF in it, which would end the
// command early.
var errLineBreak = errors.New("relay: a command line must not contain CR or LF")

// command is one command of a mail transaction and the reply that lets
// the transaction go on: want is its first digit (replyOK, replyGoOn), as
// a client tells replies (RFC 5321, 4.2.1 and 4.3.2): RCPT may be
// answered 251 as well as 250, and is then accepted all the same.
type command struct {
	stage Stage
	line  string
	want  int
}

// The first digits of the replies that let a transaction go on.
const (
	replyOK   = 2 // 2yz: done (MAIL, RCPT, the end of the message, RSET)
	replyGoOn = 3 // 3yz: go on (354 to DATA)
)

// newText returns the session's command stream on conn, whose reads are
// bounded per line by maxReplyLine.
func newText(conn io.ReadWriteCloser) *textproto.Conn {
	return textproto.NewConn(struct {
		io.Reader
		io.Writer
		io.Closer
	}{&lineLimit{r: conn}, conn, conn})
}

// transaction runs one mail transaction (MAIL, RCPT, DATA and the
// message) on s. inStep reports that the session can go on: the server
// answered every command sent, and none with 421; sent, that a command
// was sent at all.
func (c *Client) transaction(ctx context.Context, s *session, from, to string, needUTF8 bool, msg io.WriterTo) (inStep, sent bool, err error) {
	if err := ctx.Err(); err != nil {
		return true, false, &Error{Stage: StageMail, Err: err}
	}
	if needUTF8 && !s.utf8 {
		return true, false, &Error{Stage: StageMail, Err: ErrNeedsSMTPUTF8}
	}
	mail := "MAIL FROM:<" + from + ">"
	if s.eightBit {
		mail += " BODY=8BITMIME"
	}
	if needUTF8 {
		mail += " SMTPUTF8"
	}
	cmds := []command{
		{StageMail, mail, replyOK},
		{StageRcpt, "RCPT TO:<" + to + ">", replyOK},
		{StageData, "DATA", replyGoOn},
	}
	for _, cmd := range cmds {
		if strings.ContainsAny(cmd.line, "\r\n") {
			return true, false, &Error{Stage: cmd.stage, Err: errLineBreak}
		}
	}
	inStep, err = c.commands(ctx, s, cmds, msg)
	return inStep, true, err
}

// commands sends cmds on s, pipelined when the server offers it, then the
// message.
func (c *Client) commands(ctx context.Context, s *session, cmds []command, msg io.WriterTo) (inStep bool, err error) {
	stop := watch(ctx, s.g.Conn)
	defer func() {
		if !stop() {
			// ctx ended meanwhile and poisoned the connection's deadline;
			// the transaction's own result still stands.
			s.poisoned = true
		}
	}()
	group := 1
	if s.pipelining {
		group = len(cmds)
	}
	for i := 0; i < len(cmds); i += group {
		if inStep, err := c.exchange(ctx, s, cmds[i:i+group]); err != nil {
			return inStep, err
		}
	}
	w := s.text.DotWriter()
	if _, err := msg.WriteTo(w); err != nil {
		_ = w.Close()
		return false, fail(ctx, StageData, err)
	}
	// Close sends the final dot: from here on a failure without a reply
	// leaves open whether the relay took the mail (NotAccepted).
	c.stage(ctx, StageDataEnd)
	if err := w.Close(); err != nil {
		return false, fail(ctx, StageDataEnd, err)
	}
	inStep, err = s.read(ctx, command{StageDataEnd, "", replyOK})
	if err == nil {
		s.refusals = 0
	}
	return inStep, err
}

// exchange sends cmds in one write and reads a reply to each. It returns
// the first refusal, or the failure to read a reply. When DATA was
// accepted after a refusal (RFC 2920, 3.1), it ends the empty message.
func (c *Client) exchange(ctx context.Context, s *session, cmds []command) (inStep bool, err error) {
	for _, cmd := range cmds {
		c.stage(ctx, cmd.stage)
		_, _ = s.text.W.WriteString(cmd.line)
		_, _ = s.text.W.WriteString("\r\n")
	}
	if err := s.text.W.Flush(); err != nil {
		return false, fail(ctx, cmds[0].stage, err)
	}
	var refused error
	for _, cmd := range cmds {
		inStep, err := s.read(ctx, cmd)
		switch {
		case !inStep:
			if refused != nil {
				return false, refused
			}
			return false, err
		case err != nil:
			if refused == nil {
				refused = err
			}
		case refused != nil && cmd.want == replyGoOn:
			_, _ = s.text.W.WriteString(".\r\n")
			if err := s.text.W.Flush(); err != nil {
				return false, refused
			}
			if inStep, _ := s.read(ctx, command{StageDataEnd, "", replyOK}); !inStep {
				return false, refused
			}
		}
	}
	return true, refused
}

// read reads the reply to cmd. A reply whose first digit is not cmd.want
// is a refusal at cmd.stage, counted in s.refusals; inStep is false when
// no reply came or it was 421.
func (s *session) read(ctx context.Context, cmd command) (inStep bool, err error) {
	code, msg, err := s.text.ReadResponse(cmd.want)
	if err == nil {
		return true, nil
	}
	var te *textproto.Error
	if !errors.As(err, &te) {
		return false, fail(ctx, cmd.stage, err)
	}
	s.refusals++
	return code != 421, fail(ctx, cmd.stage, replyOf(code, msg))
}

// reset sends RSET, keeping the session for the next transaction.
func (s *session) reset() error {
	if s.poisoned {
		return errors.New("relay: session poisoned")
	}
	if err := s.text.PrintfLine("RSET"); err != nil {
		return err
	}
	_, _, err := s.text.ReadResponse(replyOK)
	return err
}

// quit ends the session with QUIT, waiting at most timeout for the reply,
// and closes the connection.
func (s *session) quit(timeout time.Duration) {
	_ = s.g.Conn.SetDeadline(time.Now().Add(timeout))
	if err := s.text.PrintfLine("QUIT"); err == nil {
		_, _, _ = s.text.ReadResponse(221)
	}
	_ = s.g.Conn.Close()
}

// lineLimit fails a read that would make a line longer than maxReplyLine.
type lineLimit struct {
	r    io.Reader
	line int // bytes since the last LF
}

func (l *lineLimit) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	for _, b := range p[:n] {
		if b == '\n' {
			l.line = 0
		} else if l.line++; l.line > maxReplyLine {
			return 0, errReplyLine
		}
	}
	return n, err
}
