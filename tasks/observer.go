package tasks

import (
	"time"

	"github.com/verifyq/verifyq/delivery"
)

// Outcome is what became of one attempt to send a code. The set is fixed:
// metrics use it as a label value.
type Outcome string

// Outcomes of a send attempt.
const (
	// OutcomeSent: the SMTP server accepted the mail.
	OutcomeSent Outcome = "sent"
	// OutcomeRetried: the attempt failed in a way a retry may fix (an SMTP
	// 4xx reply, a timeout, Redis unreachable, a shutdown cutting the send
	// off); the task goes back to the queue.
	OutcomeRetried Outcome = "retried"
	// OutcomeFailed: the task is archived without a mail: a failure whose
	// class is undeliverable (delivery.Class.Handling), a payload that
	// cannot be decoded, or the last retry failed.
	OutcomeFailed Outcome = "failed"
	// OutcomeExpired: the code was gone before it could be sent (it expired,
	// or was used with an earlier mail), so there was nothing to send.
	OutcomeExpired Outcome = "expired"
	// OutcomeDuplicate: the task had sent its mail before (the server
	// accepted it, but Redis lost the task's acknowledgement and the task
	// ran again), or the reconciler queued another task in its place, so
	// it ended without a second mail.
	OutcomeDuplicate Outcome = "duplicate"
)

// Outcomes lists every Outcome, for metrics that pre-create their series.
var Outcomes = []Outcome{OutcomeSent, OutcomeRetried, OutcomeFailed, OutcomeExpired, OutcomeDuplicate}

// SendResult describes one finished attempt of SendCodeHandler.
type SendResult struct {
	Outcome Outcome
	// SMTP is how long handing the mail to the relays took (one SMTP
	// transaction, or two when the attempt failed over); zero when SMTP
	// was not tried (the code was gone, Redis failed, the payload was bad).
	SMTP time.Duration
	// SMTPErr is true when SMTP was tried and no relay accepted the mail.
	SMTPErr bool
	// Relay names the relay that accepted the mail or, when none did, the
	// last one tried; empty when SMTP was not tried or the mailer is not
	// Relays.
	Relay string
	// Tries are the SMTP transactions of the attempt, one per relay tried,
	// in order (Relays fills them in): one, or two when the first relay
	// did not take the mail and the attempt failed over.
	Tries []Try
	// Failure is the class of the failure, when the mail was not accepted
	// (or could not be composed).
	Failure delivery.Class
	// SinceRequest is the time from the request (the payload's
	// RequestedAt) to the SMTP server accepting the mail; set only for
	// OutcomeSent.
	SinceRequest time.Duration
}

// Try is one SMTP transaction of an attempt, with one relay.
type Try struct {
	// Relay names the relay (RelayPrimary, RelayFallback).
	Relay string
	// Took is how long the transaction took.
	Took time.Duration
	// Failure is the class of its failure; empty when the relay accepted
	// the mail.
	Failure delivery.Class
}

// Observer is told what the send-code handler does, for metrics. It must be
// safe for concurrent use and must not block: it runs on the send path.
// The tasks package stays free of any metrics library; the worker wires an
// implementation in.
type Observer interface {
	// SendStarted is called when the handler starts a task.
	SendStarted()
	// SendFinished is called once for each SendStarted, when the handler
	// returns.
	SendFinished(SendResult)
	// TaskExpired is called by ErrorHandler when asynq archives a task
	// because its deadline (the code's expiry) passed before a mail was
	// accepted, typically a task that waited in the queue for too long.
	// Such a task never reaches the handler again.
	TaskExpired()
}

type nopObserver struct{}

func (nopObserver) SendStarted()            {}
func (nopObserver) SendFinished(SendResult) {}
func (nopObserver) TaskExpired()            {}
