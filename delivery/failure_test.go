package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/relay"
)

// reply is a server's reply at stage, wrapped as a send returns it.
func reply(stage relay.Stage, code int, enhanced string) error {
	return fmt.Errorf("send mail: %w", &relay.Error{Stage: stage, Code: code, Enhanced: enhanced, Text: "said to someone@example.com"})
}

// TestClassOf has a row for each rule of the classification and for each
// reply the Postfix measurements met; each row names what it stands for.
func TestClassOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want delivery.Class
	}{
		// The recipient, for good: suppress that address.
		{"no such user", reply(relay.StageRcpt, 550, "5.1.1"), delivery.RecipientRefused},
		{"bad destination system", reply(relay.StageRcpt, 550, "5.1.2"), delivery.RecipientRefused},
		{"bad recipient address syntax", reply(relay.StageRcpt, 553, "5.1.3"), delivery.RecipientRefused},
		{"recipient address has null MX", reply(relay.StageRcpt, 556, "5.1.10"), delivery.RecipientRefused},
		{"mailbox disabled", reply(relay.StageRcpt, 550, "5.2.1"), delivery.RecipientRefused},
		{"no route to a domain that does not exist", reply(relay.StageRcpt, 554, "5.4.4"), delivery.RecipientRefused},
		{"550 at RCPT without an enhanced code", reply(relay.StageRcpt, 550, ""), delivery.RecipientRefused},
		{"551 at RCPT without an enhanced code", reply(relay.StageRcpt, 551, ""), delivery.RecipientRefused},
		{"553 at RCPT without an enhanced code", reply(relay.StageRcpt, 553, ""), delivery.RecipientRefused},
		// verifyq's configuration or the relay's policy: never suppress.
		{"wrong password", reply(relay.StageAuth, 535, "5.7.8"), delivery.RelayRefused},
		{"authentication required", reply(relay.StageMail, 530, "5.7.0"), delivery.RelayRefused},
		{"no credentials, access denied at RCPT", reply(relay.StageRcpt, 554, "5.7.1"), delivery.RelayRefused},
		{"relaying denied at RCPT, the code alone on the reply's first line", reply(relay.StageRcpt, 550, "5.7.1"), delivery.RelayRefused},
		{"mechanism too weak", reply(relay.StageAuth, 534, "5.7.9"), delivery.RelayRefused},
		{"encryption required for auth", reply(relay.StageAuth, 538, "5.7.11"), delivery.RelayRefused},
		{"sender not owned by user", reply(relay.StageMail, 553, "5.7.1"), delivery.RelayRefused},
		{"sending quota at MAIL FROM", reply(relay.StageMail, 550, "5.4.5"), delivery.RelayRefused},
		{"sending quota at RCPT", reply(relay.StageRcpt, 550, "5.4.5"), delivery.RelayRefused},
		{"sender address refused at RCPT", reply(relay.StageRcpt, 550, "5.1.7"), delivery.RelayRefused},
		{"sender domain refused at RCPT", reply(relay.StageRcpt, 550, "5.1.8"), delivery.RelayRefused},
		{"any 5xx at MAIL FROM", reply(relay.StageMail, 550, ""), delivery.RelayRefused},
		{"no SMTP service at greeting", reply(relay.StageGreeting, 554, "5.3.2"), delivery.RelayRefused},
		{"EHLO refused", reply(relay.StageHello, 550, "5.5.0"), delivery.RelayRefused},
		{"content policy at DATA", reply(relay.StageData, 554, "5.7.1"), delivery.RelayRefused},
		{"STARTTLS required but not offered", &relay.Error{Stage: relay.StageHello, Err: relay.ErrNoStartTLS}, delivery.RelayRefused},
		{"neither AUTH PLAIN nor AUTH LOGIN offered", &relay.Error{Stage: relay.StageAuth, Err: relay.ErrNoAuthMechanism}, delivery.RelayRefused},
		{"credentials over cleartext", &relay.Error{Stage: relay.StageAuth, Err: relay.ErrInsecureAuth}, delivery.RelayRefused},
		{"untrusted certificate", &relay.Error{Stage: relay.StageTLS, Err: errors.New("x509: certificate signed by unknown authority")}, delivery.RelayRefused},
		// This message, for good: nobody suppressed.
		{"message too big at DATA", reply(relay.StageData, 552, "5.3.4"), delivery.MessageRefused},
		{"message too big at MAIL FROM (SIZE)", reply(relay.StageRcpt, 552, "5.3.4"), delivery.MessageRefused},
		{"552 without an enhanced code", reply(relay.StageData, 552, ""), delivery.MessageRefused},
		{"content refused", reply(relay.StageData, 550, "5.6.0"), delivery.MessageRefused},
		{"other 5xx at RCPT", reply(relay.StageRcpt, 554, "5.4.6"), delivery.MessageRefused},
		{"other 5xx at DATA", reply(relay.StageData, 554, "5.0.0"), delivery.MessageRefused},
		{"invalid address", fmt.Errorf("compose: %w", mail.ErrInvalidAddress), delivery.MessageRefused},
		{"invalid message", fmt.Errorf("compose: %w", mail.ErrInvalidMessage), delivery.MessageRefused},
		{"non-ASCII address refused by the next hop", reply(relay.StageRcpt, 553, "5.6.7"), delivery.NeedsSMTPUTF8},
		{"relay without SMTPUTF8", &relay.Error{Stage: relay.StageMail, Err: relay.ErrNeedsSMTPUTF8}, delivery.NeedsSMTPUTF8},
		// This recipient, not now: back off this send alone.
		{"greylisted", reply(relay.StageRcpt, 450, "4.2.0"), delivery.RecipientDeferred},
		{"greylisted, 451 4.7.1", reply(relay.StageRcpt, 451, "4.7.1"), delivery.RecipientDeferred},
		{"mailbox busy", reply(relay.StageRcpt, 450, "4.2.1"), delivery.RecipientDeferred},
		{"mailbox full, temporary", reply(relay.StageRcpt, 452, "4.2.2"), delivery.RecipientDeferred},
		{"mailbox full, said as permanent", reply(relay.StageRcpt, 552, "5.2.2"), delivery.RecipientDeferred},
		{"4xx at RCPT without an enhanced code", reply(relay.StageRcpt, 450, ""), delivery.RecipientDeferred},
		// The relay, not now: the breaker.
		{"relay closing", reply(relay.StageData, 421, "4.3.2"), delivery.RelayDeferred},
		{"421 at MAIL without an enhanced code", reply(relay.StageMail, 421, ""), delivery.RelayDeferred},
		{"relay out of storage at RCPT", reply(relay.StageRcpt, 452, "4.3.1"), delivery.RelayDeferred},
		{"temporary authentication failure", reply(relay.StageAuth, 454, "4.7.0"), delivery.RelayDeferred},
		{"4xx at DATA", reply(relay.StageData, 451, "4.3.0"), delivery.RelayDeferred},
		{"4xx at MAIL", reply(relay.StageMail, 451, ""), delivery.RelayDeferred},
		// Postfix checks the sender at RCPT (smtpd_delay_reject), and says
		// 450 for a sender domain it cannot find (unknown_address_reject_code).
		{"sender domain not found at RCPT, temporary", reply(relay.StageRcpt, 450, "4.1.8"), delivery.RelayDeferred},
		{"sender address refused at RCPT, temporary", reply(relay.StageRcpt, 450, "4.1.7"), delivery.RelayDeferred},
		{"connection refused", &relay.Error{Stage: relay.StageConnect, Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}, delivery.RelayDeferred},
		{"send timed out", &relay.Error{Stage: relay.StageData, Err: os.ErrDeadlineExceeded}, delivery.RelayDeferred},
		{"TLS handshake timed out", &relay.Error{Stage: relay.StageTLS, Err: context.DeadlineExceeded}, delivery.RelayDeferred},
		{"connection dropped", &relay.Error{Stage: relay.StageMail, Err: errors.New("EOF")}, delivery.RelayDeferred},
		// Too many connections or too fast: slow down.
		{"too many connections at greeting", reply(relay.StageGreeting, 421, "4.7.0"), delivery.Throttled},
		{"421 at greeting without an enhanced code", reply(relay.StageGreeting, 421, ""), delivery.Throttled},
		{"rate limited at MAIL", reply(relay.StageMail, 450, "4.7.1"), delivery.Throttled},
		{"421 4.7.0 at DATA", reply(relay.StageData, 421, "4.7.0"), delivery.Throttled},
		// verifyq's own: a sealed code no secret of the worker opens.
		{"sealed under another secret", fmt.Errorf("open code: %w", codes.ErrSealed), delivery.Undecryptable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tt.want, delivery.ClassOf(tt.err))
		})
	}
}

// TestHandling checks what each class makes verifyq do: only a refused
// recipient suppresses, only the relay's classes count toward the
// breaker, and the relay refusing verifyq's own mail opens it at once.
func TestHandling(t *testing.T) {
	t.Parallel()
	for _, c := range delivery.Classes {
		h := c.Handling()
		assert.Equal(t, c == delivery.RecipientRefused, h.Suppress, "%s suppress", c)
		assert.Equal(t, c == delivery.RelayRefused || c == delivery.RelayDeferred || c == delivery.Throttled, h.RelayWide, "%s relay-wide", c)
		assert.Equal(t, c == delivery.RelayRefused, h.HoldAtOnce, "%s hold at once", c)
		assert.Equal(t, h.Undeliverable, h.Retry == delivery.RetryNone, "%s: undeliverable exactly when not retried", c)
	}
	assert.Equal(t, delivery.RetryRecipient, delivery.RecipientDeferred.Handling().Retry)
	assert.True(t, delivery.Undecryptable.Handling().Undeliverable, "no retry of this worker opens the code")
}

// TestClassOfReport reads the Status of a DSN's recipient, and the reply
// its Diagnostic-Code quotes, by the same table: only the recipient's own
// failures suppress.
func TestClassOfReport(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status string
		reply  int
		want   delivery.Class
	}{
		{"5.1.1", 550, delivery.RecipientRefused}, // Postfix: User unknown
		{"5.1.1", 0, delivery.RecipientRefused},   // no reply quoted (X-Postfix; ...)
		{"5.1.10", 556, delivery.RecipientRefused},
		{"5.2.1", 550, delivery.RecipientRefused},
		{"5.4.4", 0, delivery.RecipientRefused}, // Postfix: Host or domain name not found
		{"5.1.7", 550, delivery.RelayRefused},   // the sender's address: ours, not the recipient's
		{"5.7.1", 554, delivery.RelayRefused},   // policy: spam, SPF, DMARC
		{"5.7.26", 550, delivery.RelayRefused},  // Gmail: unauthenticated sender
		{"5.6.0", 554, delivery.MessageRefused},
		{"5.6.7", 553, delivery.NeedsSMTPUTF8},
		{"5.3.4", 552, delivery.MessageRefused},
		{"5.2.2", 552, delivery.RecipientDeferred}, // a full mailbox
		{"5.4.7", 0, delivery.MessageRefused},      // delivery time expired
		{"5.0.0", 550, delivery.MessageRefused},
		{"4.4.1", 0, delivery.RecipientDeferred},  // given up after retries: not the recipient's for good
		{"5.1.1", 450, delivery.RecipientRefused}, // a quoted reply of another class is not believed
		{"", 550, delivery.MessageRefused},
		{"5.1", 550, delivery.MessageRefused},
		{"x.1.1", 550, delivery.MessageRefused},
	}
	for _, tt := range tests {
		got := delivery.ClassOfReport(tt.status, tt.reply)
		assert.Equal(t, tt.want, got, "%s %d", tt.status, tt.reply)
		assert.Equal(t, tt.want == delivery.RecipientRefused, got.Handling().Suppress, "%s %d suppresses", tt.status, tt.reply)
	}
}

func TestReplyCode(t *testing.T) {
	t.Parallel()
	assert.Equal(t, 550, delivery.ReplyCode(reply(relay.StageRcpt, 550, "5.1.1")))
	assert.Equal(t, 0, delivery.ReplyCode(&relay.Error{Stage: relay.StageConnect, Err: errors.New("refused")}))
	assert.Equal(t, 0, delivery.ReplyCode(errors.New("other")))
}
