package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
)

// Stage is the step of the SMTP conversation at which a send failed. What
// a reply means depends on it: a 550 at RCPT refuses the recipient, a 550
// at MAIL FROM refuses verifyq's own sender.
type Stage string

// Stages, in the order of a conversation.
const (
	StageConnect  Stage = "connect"  // TCP connection
	StageTLS      Stage = "tls"      // TLS handshake, implicit or after STARTTLS
	StageGreeting Stage = "greeting" // the server's first reply
	StageHello    Stage = "ehlo"     // EHLO (and STARTTLS)
	StageAuth     Stage = "auth"     // AUTH
	StageMail     Stage = "mail"     // MAIL FROM
	StageRcpt     Stage = "rcpt"     // RCPT TO
	StageData     Stage = "data"     // DATA and the message, up to its end
	StageDataEnd  Stage = "data-end" // the end of the message (the final dot) and the reply to it
)

// Errors a send can fail with besides a server's reply, each wrapped in an
// *Error that names the stage.
var (
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("relay: client closed")
	// ErrNoStartTLS: tls=starttls, and the server does not offer STARTTLS.
	ErrNoStartTLS = errors.New("STARTTLS required but not offered by the SMTP server")
	// ErrNoAuthMechanism: credentials are configured, and the server offers
	// neither AUTH PLAIN nor AUTH LOGIN.
	ErrNoAuthMechanism = errors.New("the SMTP server offers neither AUTH PLAIN nor AUTH LOGIN")
	// ErrInsecureAuth: credentials would cross an unencrypted connection to
	// a host that is not loopback.
	ErrInsecureAuth = errors.New("refusing to send credentials over an unencrypted connection")
	// ErrNeedsSMTPUTF8: an address has a non-ASCII local part, and the
	// server does not offer SMTPUTF8 (RFC 6531), so no mail to it can pass
	// this server.
	ErrNeedsSMTPUTF8 = errors.New("a non-ASCII local part needs SMTPUTF8, which the SMTP server does not offer")
	// ErrNoGreeting: tls=auto on a port other than 465, and the server sent
	// no greeting: it probably speaks implicit TLS there.
	ErrNoGreeting = errors.New("no SMTP greeting: if the server speaks implicit TLS on this port, use smtps://")
)

// Error is a failed send: the stage it failed at and, when the server
// replied, its reply. Code is 0 when it did not (Err says why: the
// network, TLS, a timeout, a missing extension).
type Error struct {
	Stage Stage
	// Code is the reply code, e.g. 550; 0 when the server did not reply.
	Code int
	// Enhanced is the reply's enhanced status code (RFC 3463), e.g.
	// "5.1.1"; empty when the reply had none.
	Enhanced string
	// Text is the server's reply text without the enhanced code. It can
	// echo the address: keep or log it only masked (delivery.Diagnostic).
	Text string
	// Err is the cause when the server did not reply.
	Err error
}

// Error names the stage and the reply code and enhanced code, or the
// cause; never the reply text.
func (e *Error) Error() string {
	switch {
	case e.Code != 0 && e.Enhanced != "":
		return fmt.Sprintf("smtp %s: server replied %d %s", e.Stage, e.Code, e.Enhanced)
	case e.Code != 0:
		return fmt.Sprintf("smtp %s: server replied %d", e.Stage, e.Code)
	default:
		return fmt.Sprintf("smtp %s: %v", e.Stage, e.Err)
	}
}

// Unwrap returns the cause when the server did not reply.
func (e *Error) Unwrap() error { return e.Err }

// Replied reports whether the server answered with a reply code.
func (e *Error) Replied() bool { return e.Code != 0 }

// ReplyError returns err's *Error when the server replied, else nil.
func ReplyError(err error) *Error {
	var e *Error
	if errors.As(err, &e) && e.Replied() {
		return e
	}
	return nil
}

// NotAccepted reports whether err, a failed Send, proves that the relay
// did not take the mail, so that handing it to another relay cannot make a
// second copy: the relay replied with a refusal (at any stage), or the
// send failed before the end of the message was sent (connection, TLS,
// greeting, EHLO, AUTH, MAIL, RCPT, DATA, the message's data cut off).
// A failure at StageDataEnd without a reply (a timeout or a dropped
// connection once the final dot may have gone out) proves nothing: the
// relay may have taken the mail. Nor does an error that is not an *Error.
func NotAccepted(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Replied() || e.Stage != StageDataEnd
}

// StageOf returns the stage err failed at, or "" when err is not an *Error.
func StageOf(err error) Stage {
	var e *Error
	if errors.As(err, &e) {
		return e.Stage
	}
	return ""
}

// fail wraps err, which happened at stage, into an *Error: a server reply
// (*smtp.SMTPError) becomes Code, Enhanced and Text. An ended ctx is
// preferred as the cause, since it is what turns into the i/o timeout seen
// on the connection.
func fail(ctx context.Context, stage Stage, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		ec, text := se.EnhancedCode, se.Message
		if enhanced(ec) == "" {
			// go-smtp's client, which reads the replies up to AUTH, finds
			// the code only before a space, not alone on a reply's first
			// line (cutEnhanced).
			ec, text, _ = cutEnhanced(text)
		}
		return &Error{Stage: stage, Code: se.Code, Enhanced: enhanced(ec), Text: text}
	}
	cerr := ctx.Err()
	if d, ok := ctx.Deadline(); cerr == nil && ok && !time.Now().Before(d) {
		// The connection's deadline is ctx's: its read can time out a
		// moment before ctx says it is done.
		cerr = context.DeadlineExceeded
	}
	if cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w (%w)", cerr, err)
	}
	return &Error{Stage: stage, Err: err}
}

// enhanced formats an enhanced status code, or "" for none.
func enhanced(c smtp.EnhancedCode) string {
	if c == (smtp.EnhancedCode{}) || c == smtp.NoEnhancedCode || c[0] <= 0 {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", c[0], c[1], c[2])
}

// isDeadConn reports whether err means the connection was already closed by
// the server (as happens to a pooled connection after an idle timeout or a
// server restart): EOF, reset, broken pipe, or a 421 reply.
func isDeadConn(err error) bool {
	if e := ReplyError(err); e != nil {
		return e.Code == 421
	}
	return errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNABORTED)
}
