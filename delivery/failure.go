package delivery

import (
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/relay"
)

// Class is what a failed send means: whose fault it is and whether time
// can fix it. A status reports it as its last failure; it never holds the
// server's reply text, which can echo the address.
type Class string

// Classes of a failed send. Handling says what verifyq does with each.
const (
	// RecipientRefused: the recipient's mailbox does not exist or is
	// disabled, or its domain has no route (5.1.x, 5.2.1, 5.4.4 at RCPT).
	// Undeliverable; that exact address is suppressed.
	RecipientRefused Class = "recipient_refused"
	// MessageRefused: this message is refused for good (5.3.4 size, 5.6.x
	// content, any other 5xx for this mail that is not the relay's policy).
	// Undeliverable; nobody is suppressed.
	MessageRefused Class = "message_refused"
	// NeedsSMTPUTF8: the address has a non-ASCII local part and the relay
	// does not offer SMTPUTF8. Undeliverable; nobody is suppressed.
	NeedsSMTPUTF8 Class = "needs_smtputf8"
	// RelayRefused: verifyq's own configuration or the relay's policy
	// (AUTH refused, MAIL FROM refused, 5.7.x policy and quota replies, a
	// TLS failure, a required extension missing). Nobody is suppressed;
	// the sends wait for the relay and are retried within their codes'
	// lifetimes; it is logged as an error.
	RelayRefused Class = "relay_refused"
	// RecipientDeferred: this recipient, not now (4xx at RCPT:
	// greylisting, a busy or full mailbox; not the sender's 4.1.7 and
	// 4.1.8, which RCPT carries when the relay checks the sender there).
	// This send alone backs off by minutes; the relay is fine.
	RecipientDeferred Class = "recipient_deferred"
	// RelayDeferred: the relay, not now (421, 4.3.x, the sender's 4.1.7
	// or 4.1.8, a refused, dropped or timed-out connection). The breaker
	// counts it.
	RelayDeferred Class = "relay_deferred"
	// Throttled: too many connections or too fast (421 4.7.x, 4.7.x rate
	// replies outside RCPT). The relay client keeps to fewer connections
	// (a 421 at the greeting while others are open never fails a send);
	// otherwise it counts as the relay's temporary replies do, so that a
	// relay that asks every mail to slow down holds the sends.
	Throttled Class = "throttled"
	// Undecryptable: not the relay's, verifyq's own: the task's code is
	// sealed under a secret this worker does not hold (CODE_SECRET
	// rotated on the enqueuer before the worker, or a worker without
	// one). Undeliverable at once; nobody is suppressed; logged as an
	// error. The archived task is mailed when re-run on a worker that
	// holds the secret, while its code lives.
	Undecryptable Class = "undecryptable"
)

// Handling is what verifyq does after a failure of a class.
type Handling struct {
	// Undeliverable: the send is given up, its status says undeliverable.
	Undeliverable bool
	// Suppress: the exact address is suppressed.
	Suppress bool
	// RelayWide: the failure says something about the relay as a whole,
	// and the breaker counts it; HoldAtOnce opens it on the first one.
	RelayWide, HoldAtOnce bool
	// Retry is the backoff before the next attempt of this send:
	// RetryRelay (seconds, while the breaker holds sends back) or
	// RetryRecipient (minutes, as greylisting expects).
	Retry Retry
}

// Retry names a backoff schedule (tasks.RetryDelay).
type Retry string

// Backoff schedules.
const (
	RetryNone      Retry = ""
	RetryRelay     Retry = "relay"
	RetryRecipient Retry = "recipient"
)

// handling is each class's Handling, declared once.
var handling = map[Class]Handling{
	RecipientRefused:  {Undeliverable: true, Suppress: true},
	MessageRefused:    {Undeliverable: true},
	NeedsSMTPUTF8:     {Undeliverable: true},
	RelayRefused:      {RelayWide: true, HoldAtOnce: true, Retry: RetryRelay},
	RecipientDeferred: {Retry: RetryRecipient},
	RelayDeferred:     {RelayWide: true, Retry: RetryRelay},
	Throttled:         {RelayWide: true, Retry: RetryRelay},
	Undecryptable:     {Undeliverable: true},
}

// Classes lists every Class, for metrics that pre-create their series.
var Classes = []Class{RecipientRefused, MessageRefused, NeedsSMTPUTF8, RelayRefused, RecipientDeferred, RelayDeferred, Throttled, Undecryptable}

// Handling returns what verifyq does after a failure of class c.
func (c Class) Handling() Handling { return handling[c] }

// rule classifies the replies that match it: at one of stages (any when
// empty), with a reply code matching code ("421", or "4xx" or "5xx" for a
// class of codes) and an enhanced code starting with enhanced ("5.1.",
// "5.3.4"; "" matches any, "-" only a reply without one).
type rule struct {
	stages   []relay.Stage
	code     string
	enhanced string
	class    Class
}

// Stages that come before any transaction: a refusal there is the relay's.
var (
	session = []relay.Stage{relay.StageGreeting, relay.StageHello, relay.StageTLS, relay.StageAuth}
	rcpt    = []relay.Stage{relay.StageRcpt}
	auth    = []relay.Stage{relay.StageAuth}
)

// replyRules classify the server's replies, first match wins (RFC 5321
// reply codes, RFC 3463 enhanced codes). A reply no rule matches is
// MessageRefused (5xx) or RelayDeferred (4xx).
var replyRules = []rule{
	// The relay closes the session.
	{code: "421", enhanced: "4.7.", class: Throttled},                                          // too many connections, too fast
	{stages: []relay.Stage{relay.StageGreeting}, code: "421", enhanced: "-", class: Throttled}, // a busy relay's greeting
	{code: "421", class: RelayDeferred},
	// Temporary.
	{stages: auth, code: "4xx", class: RelayDeferred}, // 454 4.7.0 temporary authentication failure
	{code: "4xx", enhanced: "4.3.", class: RelayDeferred},
	{stages: rcpt, code: "4xx", enhanced: "4.1.7", class: RelayDeferred}, // the sender's address, not now
	{stages: rcpt, code: "4xx", enhanced: "4.1.8", class: RelayDeferred}, // the sender's domain not found (Postfix: 450)
	{stages: rcpt, code: "4xx", class: RecipientDeferred},                // greylisting (450 4.2.0, 451 4.7.1), mailbox busy or full
	{code: "4xx", enhanced: "4.7.", class: Throttled},                    // rate replies at MAIL or DATA
	// Permanent: the relay's policy or verifyq's configuration.
	{stages: session, code: "5xx", class: RelayRefused},                        // AUTH 530/534/535/538, no service
	{stages: []relay.Stage{relay.StageMail}, code: "5xx", class: RelayRefused}, // sender refused, quota
	{code: "5xx", enhanced: "5.7.", class: RelayRefused},                       // policy, authentication, quota
	{code: "5xx", enhanced: "5.4.5", class: RelayRefused},                      // sending quota
	{stages: rcpt, code: "5xx", enhanced: "5.1.7", class: RelayRefused},        // the sender's address, bad
	{stages: rcpt, code: "5xx", enhanced: "5.1.8", class: RelayRefused},        // the sender's domain, bad
	// Permanent: the recipient.
	{stages: rcpt, code: "5xx", enhanced: "5.1.", class: RecipientRefused},  // no such user, bad mailbox or domain
	{stages: rcpt, code: "5xx", enhanced: "5.4.4", class: RecipientRefused}, // no route to the domain: it does not exist
	{stages: rcpt, code: "5xx", enhanced: "5.2.1", class: RecipientRefused}, // mailbox disabled
	{stages: rcpt, code: "5xx", enhanced: "5.2.2", class: RecipientDeferred},
	{stages: rcpt, code: "550", enhanced: "-", class: RecipientRefused}, // mailbox unavailable, said without an enhanced code
	{stages: rcpt, code: "551", enhanced: "-", class: RecipientRefused},
	{stages: rcpt, code: "553", enhanced: "-", class: RecipientRefused},
	// Permanent: this message.
	{code: "5xx", enhanced: "5.3.4", class: MessageRefused},
	{code: "552", class: MessageRefused},
	{code: "5xx", enhanced: "5.6.7", class: NeedsSMTPUTF8},
	{code: "5xx", enhanced: "5.6.", class: MessageRefused},
}

func (r rule) matches(e *relay.Error) bool {
	if len(r.stages) > 0 && !slices.Contains(r.stages, e.Stage) {
		return false
	}
	code := strconv.Itoa(e.Code)
	switch {
	case strings.HasSuffix(r.code, "xx"):
		if code[:1] != r.code[:1] {
			return false
		}
	case r.code != code:
		return false
	}
	switch r.enhanced {
	case "":
		return true
	case "-":
		return e.Enhanced == ""
	}
	if strings.HasSuffix(r.enhanced, ".") {
		return strings.HasPrefix(e.Enhanced, r.enhanced)
	}
	return e.Enhanced == r.enhanced
}

// ClassOf classifies err, a failed send: a server's reply by replyRules;
// a message no server can take (an invalid address or message) as
// MessageRefused; the relay's missing SMTPUTF8 as NeedsSMTPUTF8; a TLS
// failure or a missing STARTTLS or AUTH as RelayRefused; a sealed code no
// secret of the worker opens (codes.ErrSealed) as Undecryptable; anything
// else (a refused, dropped or timed-out connection) as RelayDeferred.
func ClassOf(err error) Class {
	if e := relay.ReplyError(err); e != nil {
		for _, r := range replyRules {
			if r.matches(e) {
				return r.class
			}
		}
		if e.Code >= 500 {
			return MessageRefused
		}
		return RelayDeferred
	}
	switch {
	case errors.Is(err, codes.ErrSealed):
		return Undecryptable
	case errors.Is(err, mail.ErrInvalidAddress), errors.Is(err, mail.ErrInvalidMessage), errors.Is(err, mail.ErrUnknownLocale):
		return MessageRefused
	case errors.Is(err, relay.ErrNeedsSMTPUTF8):
		return NeedsSMTPUTF8
	case errors.Is(err, relay.ErrNoStartTLS), errors.Is(err, relay.ErrNoAuthMechanism), errors.Is(err, relay.ErrInsecureAuth):
		return RelayRefused
	case relay.StageOf(err) == relay.StageTLS && !relay.IsTimeout(err):
		return RelayRefused // a certificate or handshake failure: configuration
	}
	return RelayDeferred
}

// ClassOfReport classifies a delivery status notification's verdict on
// one recipient (RFC 3464): status is its Status ("5.1.1"), reply the
// reply code its Diagnostic-Code quotes (0: none; then 500 or 400 by the
// status's class). A DSN speaks of one recipient wherever the next hop
// refused the mail, so it reads as a reply at RCPT, by the same rules as
// ClassOf: 5.1.x (bar the sender's 5.1.7 and 5.1.8), 5.2.1 and 5.4.4 are
// the recipient's (RecipientRefused, which suppresses); 5.7.x policy,
// 5.6.x content, 5.3.4 size and 5.2.2 a full mailbox are not.
// A status that is no enhanced status code is MessageRefused.
func ClassOfReport(status string, reply int) Class {
	if !enhancedCodeRE.MatchString(status) {
		return MessageRefused
	}
	if class := int(status[0] - '0'); reply/100 != class {
		reply = class * 100
	}
	return ClassOf(&relay.Error{Stage: relay.StageRcpt, Code: reply, Enhanced: status})
}

// ReplyCode returns the SMTP reply code of err (e.g. 550), or 0 when err is
// not a reply.
func ReplyCode(err error) int {
	if e := relay.ReplyError(err); e != nil {
		return e.Code
	}
	return 0
}
