package mail

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"syscall"
)

// ErrSenderClosed is returned by Send after Close.
var ErrSenderClosed = errors.New("mail: sender closed")

// SMTPError is a 4xx or 5xx reply from the SMTP server.
type SMTPError struct {
	// Code is the reply code, e.g. 451 or 550.
	Code int
	// Msg is the server's reply text, which may start with an enhanced
	// status code such as "5.1.1". It can echo addresses or content, so it
	// is left out of Error and must not be logged verbatim.
	Msg string
}

// Error returns the reply code and, if present, the enhanced status code,
// e.g. "smtp: server replied 550 (5.1.1)". It never includes the reply text.
func (e *SMTPError) Error() string {
	if ec := enhancedCode(e.Msg); ec != "" {
		return fmt.Sprintf("smtp: server replied %d (%s)", e.Code, ec)
	}
	return fmt.Sprintf("smtp: server replied %d", e.Code)
}

// Permanent reports whether the reply is a permanent failure (5xx), which a
// retry will not fix.
func (e *SMTPError) Permanent() bool { return e.Code >= 500 }

// IsPermanent reports whether err is a failure that retrying cannot fix: a
// 5xx SMTP reply, or an invalid message (ErrInvalidAddress, ErrUnknownLocale,
// ErrInvalidMessage). Network errors, timeouts, context errors and 4xx
// replies are temporary.
func IsPermanent(err error) bool {
	var se *SMTPError
	if errors.As(err, &se) {
		return se.Permanent()
	}
	return errors.Is(err, ErrInvalidAddress) ||
		errors.Is(err, ErrUnknownLocale) ||
		errors.Is(err, ErrInvalidMessage)
}

// enhancedCode returns the RFC 3463 status code ("5.1.1") at the start of an
// SMTP reply text, or "".
func enhancedCode(msg string) string {
	// class "." subject(1-3 digits) "." detail(1-3 digits)
	if len(msg) < 5 || (msg[0] != '2' && msg[0] != '4' && msg[0] != '5') || msg[1] != '.' {
		return ""
	}
	i := 2
	for part := 0; part < 2; part++ {
		start := i
		for i < len(msg) && i-start < 3 && msg[i] >= '0' && msg[i] <= '9' {
			i++
		}
		if i == start {
			return ""
		}
		if part == 0 {
			if i >= len(msg) || msg[i] != '.' {
				return ""
			}
			i++
		}
	}
	if i < len(msg) && msg[i] != ' ' {
		return ""
	}
	return msg[:i]
}

// asSMTPError converts a net/smtp reply error into an *SMTPError; other
// errors are returned unchanged.
func asSMTPError(err error) error {
	var te *textproto.Error
	if errors.As(err, &te) {
		return &SMTPError{Code: te.Code, Msg: te.Msg}
	}
	return err
}

// isDeadConn reports whether err means the connection was already closed by
// the server (as happens to a pooled connection after an idle timeout or a
// server restart): EOF, reset, broken pipe, or a 421 reply.
func isDeadConn(err error) bool {
	var se *SMTPError
	if errors.As(err, &se) {
		return se.Code == 421
	}
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code == 421
	}
	return errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// IsTemporaryReply reports whether err is a 4xx reply from the SMTP server:
// the server answered and asked to try again later.
func IsTemporaryReply(err error) bool {
	var se *SMTPError
	return errors.As(err, &se) && !se.Permanent()
}

// IsUnreachable reports whether err means the SMTP server could not be used
// at all: it refused or dropped the connection, did not answer within the
// timeout, or could not be secured or authenticated as configured. A reply
// (*SMTPError), an invalid message, a cancelled context and ErrSenderClosed
// are not. A deadline that ends the caller's own context looks the same as
// SMTPConfig.Timeout; callers that care check their context.
func IsUnreachable(err error) bool {
	if err == nil || IsPermanent(err) || IsTemporaryReply(err) ||
		errors.Is(err, ErrSenderClosed) || errors.Is(err, context.Canceled) {
		return false
	}
	return true
}
