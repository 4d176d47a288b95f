package delivery

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/verifyq/verifyq/mail"
)

// Classes of a failed send, as a delivery status reports them: never the
// server's reply text, which can echo the address.
const (
	FailureTemporary  = "temporary"  // a 4xx reply: the server asks to try later
	FailureTimeout    = "timeout"    // the server or the network did not answer in time
	FailureConnection = "connection" // the connection could not be made or broke
	FailurePermanent  = "permanent"  // a 5xx reply or a message no server can take
)

// FailureOf classifies err, a failed send: permanent when mail says
// retrying cannot fix it (mail.IsPermanent), temporary for any other SMTP
// reply, else a timeout or a connection failure.
func FailureOf(err error) string {
	var se *mail.SMTPError
	var ne net.Error
	switch {
	case mail.IsPermanent(err):
		return FailurePermanent
	case errors.As(err, &se):
		return FailureTemporary
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return FailureTimeout
	default:
		return FailureConnection
	}
}

// ReplyCode returns the SMTP reply code of err (e.g. 550), or 0 when err is
// not a reply.
func ReplyCode(err error) int {
	var se *mail.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// EnhancedCode returns the RFC 3463 status code at the start of err's SMTP
// reply text (e.g. "5.1.1"), or "" when err is no reply or its text has
// none.
func EnhancedCode(err error) string {
	return strings.TrimSpace(enhancedCodeRE.FindString(ReplyText(err)))
}

// ReplyText returns err's SMTP reply text, or "" when err is not a reply.
// It can echo addresses: keep it only as Diagnostic has it.
func ReplyText(err error) string {
	var se *mail.SMTPError
	if errors.As(err, &se) {
		return se.Msg
	}
	return ""
}
