// Package events tells the callers' systems what became of their codes and
// of the relays: lifecycle events, each type declared once (Types), that
// the binaries emit where each fact is known (Emitter), and that workers
// POST to the configured endpoints in the Standard Webhooks format
// (https://www.standardwebhooks.com/), signed, from a queue of their own
// with retries (Deliverer).
//
// An event never holds a code. It may hold the address the caller asked a
// code for, which is the caller's own data, and otherwise purposes,
// states, SMTP reply and status codes, relay names, task IDs and times.
//
// Delivery is at least once: an event is queued once per endpoint under a
// task ID derived from the fact it reports (Event.ID), so the same fact
// emitted again while its delivery is pending or retrying is not queued
// twice, and a delivery that ran twice carries the same webhook-id, on
// which receivers deduplicate.
package events

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// Type is the type of an event, the "type" of its body. The set is fixed
// (Types): it is a metric label value.
type Type string

// The event types. Spec of Types says when each fires and what data it
// carries.
const (
	CodeSent              Type = "code.sent"
	CodeRetrying          Type = "code.retrying"
	CodeUndeliverable     Type = "code.undeliverable"
	CodeBounced           Type = "code.bounced"
	CodeComplained        Type = "code.complained"
	CodeVerified          Type = "code.verified"
	CodeAttemptsExhausted Type = "code.attempts_exhausted"
	CodeExpired           Type = "code.expired"
	RelayFailing          Type = "relay.failing"
	RelayRecovered        Type = "relay.recovered"
)

// Spec declares an event type: when it fires, who emits it, and the
// fields of Data it carries (their JSON names). docs/API.md's table of
// events is checked against it.
type Spec struct {
	Type Type
	// When says when the event fires.
	When string
	// By names the binary that emits it: "enqueuer" or "worker".
	By string
	// Data are the JSON names of the Data fields it carries; a field
	// without a value (a default purpose, no reply code) is left out.
	Data []string
}

// codeData are the fields every code event carries.
var codeData = []string{"email", "purpose", "task_id"}

func with(fields ...string) []string { return append(append([]string(nil), codeData...), fields...) }

// Types declares every event type, once.
var Types = []Spec{
	{CodeSent, "a relay accepted the code's mail", "worker", with("attempt", "relay", "sent_after_ms")},
	{CodeRetrying, "an attempt to mail the code failed in a way a retry may fix; the worker tries again", "worker",
		with("attempt", "failure", "reply", "enhanced", "relay")},
	{CodeUndeliverable, "the worker gave the send up without a mail: the recipient's server refused it for good, or the last retry failed", "worker",
		with("attempt", "failure", "reply", "enhanced", "relay")},
	{CodeBounced, "a delivery status notification said the accepted mail failed (the bounce intake)", "worker", with("dsn")},
	{CodeComplained, "the recipient reported the mail as spam (the bounce intake)", "worker", with()},
	{CodeVerified, "the code was verified, and so used up", "enqueuer", with()},
	{CodeAttemptsExhausted, "a wrong code used the last allowed attempt (VERIFY_MAX_ATTEMPTS): the code is deleted", "enqueuer", with()},
	{CodeExpired, "the code expired unused: neither verified nor exhausted (a worker's check at its expiry)", "worker", with("state")},
	{RelayFailing, "a worker's breaker of a relay opened: its sends wait, or go through the other relay", "worker",
		[]string{"relay", "worker", "failure", "reply", "enhanced"}},
	{RelayRecovered, "that breaker closed again: the relay took a mail", "worker", []string{"relay", "worker", "open_ms"}},
}

// Known reports whether t is one of Types.
func Known(t Type) bool {
	for _, s := range Types {
		if s.Type == t {
			return true
		}
	}
	return false
}

// Data is what an event says. It has no field for a code, by design.
type Data struct {
	// Email is the address the code was asked for, exactly as the caller
	// sent it.
	Email string `json:"email,omitempty"`
	// Purpose is the code's purpose; absent for the default one.
	Purpose string `json:"purpose,omitempty"`
	// TaskID names the send: the ID of the task that mails the code
	// (the one the send request queued), the same in every event of the
	// send.
	TaskID string `json:"task_id,omitempty"`
	// Attempt is the number of the send attempt, from 1.
	Attempt int `json:"attempt,omitempty"`
	// State is the delivery state of the code's mail (as the status API
	// says it) when the event fired.
	State string `json:"state,omitempty"`
	// Failure is the class of the SMTP failure (delivery.Class).
	Failure string `json:"failure,omitempty"`
	// Reply is the SMTP reply code of the failure, e.g. 451; never its
	// text.
	Reply int `json:"reply,omitempty"`
	// Enhanced is the enhanced status code of the reply, e.g. "5.1.1".
	Enhanced string `json:"enhanced,omitempty"`
	// DSN is the status code of the delivery status notification.
	DSN string `json:"dsn,omitempty"`
	// Relay names the relay ("primary", "fallback").
	Relay string `json:"relay,omitempty"`
	// Worker names the worker process (host:pid) whose breaker changed.
	Worker string `json:"worker,omitempty"`
	// SentAfterMS is the time from the send request to the relay's
	// acceptance, in milliseconds.
	SentAfterMS int64 `json:"sent_after_ms,omitempty"`
	// OpenMS is how long the breaker was open, in milliseconds.
	OpenMS int64 `json:"open_ms,omitempty"`
}

// Event is one fact to tell the endpoints.
type Event struct {
	Type Type
	// Fact names the fact the event reports, e.g. the send's task ID; the
	// webhook-id derives from it and Type (ID), so the same fact emitted
	// again has the same webhook-id. It is not sent. Empty (a send with no
	// task ID, as an older enqueuer queued it): Emit names the event by
	// a random fact of its own, so that it is not taken for another.
	Fact string
	// At is when the fact happened: the body's timestamp.
	At   time.Time
	Data Data
}

// ID is the event's webhook-id: "msg_" and 32 hex digits of the SHA-256 of
// its type and fact.
func (e Event) ID() string {
	sum := sha256.Sum256([]byte(string(e.Type) + "\x00" + e.Fact))
	return "msg_" + hex.EncodeToString(sum[:16])
}

// body is the JSON an endpoint receives: Standard Webhooks' payload.
type body struct {
	Type      Type   `json:"type"`
	Timestamp string `json:"timestamp"`
	Data      Data   `json:"data"`
}

// Body is the JSON body of e, the bytes that are signed and POSTed:
// {"type", "timestamp" (RFC 3339, UTC, milliseconds), "data"}.
func (e Event) Body() ([]byte, error) {
	return json.Marshal(body{Type: e.Type, Timestamp: e.At.UTC().Format("2006-01-02T15:04:05.000Z07:00"), Data: e.Data})
}
