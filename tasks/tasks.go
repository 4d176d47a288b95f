// Package tasks is the contract between the enqueuer and the worker: the
// send-code task type, its payload, its queue and retry policy, and the
// handler that turns a task into a mail.
//
// The payload never carries the code in the clear. Payloads are visible in
// the dashboard and in archived tasks, so the worker reads the live code
// from Redis when it sends; if the code is gone by then, there is nothing to
// send. With codes sealed at rest (codes.Seal), Redis holds only the code's
// MAC: the payload then carries the code encrypted (SealedCode), and the
// worker mails it only while the live MAC is still this code's.
package tasks

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/events"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/relay"
	"github.com/verifyq/verifyq/returnpath"
)

// TypeSendCode is the task type: mail the live code to an address.
const TypeSendCode = "code:send"

// Queue is the dedicated queue of send-code tasks, or the stem of its
// shards' names (see Queues).
const Queue = "mail"

// MaxQueueShards bounds QUEUE_SHARDS.
const MaxQueueShards = 64

// Queues returns the names of n queue shards: Queue itself for one,
// "mail-0" to "mail-<n-1>" for more. asynq keeps each queue's keys in one
// Redis Cluster slot ({mail-0}, ...), so shards spread the queue over the
// cluster's primaries.
func Queues(n int) []string {
	if n <= 1 {
		return []string{Queue}
	}
	out := make([]string, n)
	for i := range out {
		out[i] = Queue + "-" + strconv.Itoa(i)
	}
	return out
}

// QueueFor returns the shard of n that email's tasks go to: the same shard
// for every send to one address.
func QueueFor(email string, n int) string {
	if n <= 1 {
		return Queue
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(email))
	return Queue + "-" + strconv.FormatUint(uint64(h.Sum32())%uint64(n), 10)
}

// NewTaskID returns a new random task ID: 32 hex digits (128 bits from
// crypto/rand). The enqueuer picks a send's task ID before its admission,
// so that the code's status names the task from the start (codes.Send)
// and a task made again for the send (package reconcile) can take the
// same ID.
func NewTaskID() string {
	var b [16]byte
	_, _ = crand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// MaxRetry bounds the retries of one send. With RetryDelay this spans about
// ten minutes, the default code lifetime; the deadline stops it earlier.
const MaxRetry = 12

// SendCodePayload is the task payload. It has no plain code on purpose.
type SendCodePayload struct {
	Email string `json:"email"`
	// Purpose is what the code is for (codes.ID): it picks the code's key
	// and the mail's templates. Empty, or absent in an older payload, is
	// the default purpose.
	Purpose string `json:"purpose,omitempty"`
	Locale  string `json:"locale"`
	// SealedCode is the code encrypted under CODE_SECRET (codes.Seal), for
	// codes sealed at rest; empty for plain ones, which the worker reads
	// from Redis.
	SealedCode  string    `json:"sealed_code,omitempty"`
	RequestedAt time.Time `json:"requested_at"`
	// ExpiresAt is when the code expires; the task's deadline.
	ExpiresAt time.Time `json:"expires_at"`
}

// NewSendCodeTask returns a task for p on Queue, with MaxRetry retries and a
// deadline at the code's expiry: a mail that cannot arrive in time is
// pointless. Options (asynq.Queue for a shard) come after these.
func NewSendCodeTask(p SendCodePayload, opts ...asynq.Option) (*asynq.Task, error) {
	return newSendCodeTask(p, nil, opts...)
}

// newSendCodeTask is NewSendCodeTask with headers (nil: none).
func newSendCodeTask(p SendCodePayload, headers map[string]string, opts ...asynq.Option) (*asynq.Task, error) {
	if p.Email == "" || p.ExpiresAt.IsZero() {
		return nil, errors.New("send-code task needs an email and an expiry")
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return asynq.NewTaskWithHeaders(TypeSendCode, b, headers, append([]asynq.Option{
		asynq.Queue(Queue),
		asynq.MaxRetry(MaxRetry),
		asynq.Deadline(p.ExpiresAt),
	}, opts...)...), nil
}

// ParseSendCodePayload decodes the payload of a send-code task.
func ParseSendCodePayload(t *asynq.Task) (SendCodePayload, error) {
	var p SendCodePayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return p, fmt.Errorf("decode %s payload: %w", TypeSendCode, err)
	}
	if p.Email == "" {
		return p, fmt.Errorf("decode %s payload: no email", TypeSendCode)
	}
	if err := codes.ValidatePurpose(p.Purpose); err != nil {
		return p, fmt.Errorf("decode %s payload: purpose: %w", TypeSendCode, err)
	}
	return p, nil
}

// Deliveries reads the code to mail and records what became of each
// attempt in the address's delivery status (delivery.Records).
type Deliveries interface {
	Begin(ctx context.Context, id codes.ID, task delivery.Task, ttl time.Duration) (delivery.Attempt, error)
	Sent(ctx context.Context, id codes.ID, taskID string, a delivery.Acceptance) error
	Retrying(ctx context.Context, id codes.ID, taskID string, failure error) error
	Failed(ctx context.Context, id codes.ID, taskID string, failure error) error
}

// Suppressor puts an address whose mail server refused a mail for good on
// the suppression list (delivery.Suppressions).
type Suppressor interface {
	Add(ctx context.Context, e delivery.Entry) error
}

// Mailer hands one composed mail to the SMTP relay (relay.Client).
type Mailer interface {
	Send(ctx context.Context, env relay.Envelope, msg io.WriterTo) error
}

// Events queues the send's events and schedules the check of its code's
// expiry (events.Emitter).
type Events interface {
	Emit(ctx context.Context, ev events.Event) error
	ScheduleExpiry(ctx context.Context, id codes.ID, task string, at time.Time) error
}

var (
	_ Events     = (*events.Emitter)(nil)
	_ Deliveries = (*delivery.Records)(nil)
	_ Suppressor = (*delivery.Suppressions)(nil)
	_ Mailer     = (*relay.Client)(nil)
	_ Mailer     = (*Relays)(nil)
)

// MarkTimeout bounds the background retries of recording a sent mail when
// Redis did not take it at once: long enough to outlast a Redis restart,
// and more than asynq needs to run the task again (its lease and its
// recoverer), so the re-run finds the record and sends nothing.
const MarkTimeout = 3 * time.Minute

// HandlerConfig is what a SendCodeHandler needs. Deliveries, Author,
// Mailer, TTL and Logger are required.
type HandlerConfig struct {
	// Deliveries reads the code to mail and records each attempt.
	Deliveries Deliveries
	// Author writes the mail (mail.NewAuthor).
	Author mail.Author
	// ReturnPath, when set, is the envelope sender (MAIL_RETURN_PATH):
	// with secrets, a VERP address that names each send (Path.For); nil
	// is the Author's From address (EnvelopeFrom).
	ReturnPath *returnpath.Path
	// Mailer sends the mail: the worker's Relays (with the same Relays as
	// the gate of Hold), or one relay's client, which a Breaker may watch
	// (Breaker.Watch).
	Mailer Mailer
	// TTL is the configured lifetime of a code (CODE_TTL, checked with
	// codes.ValidateTTL): the mail of a code whose key has no expiry
	// states it, as the next send gives the key that lifetime.
	TTL time.Duration
	// PurposeTTL is the lifetime of each purpose's codes that has its own
	// (PURPOSES=name:lifetime); any other purpose's is TTL.
	PurposeTTL map[string]time.Duration
	// Seal opens sealed codes (CODE_SECRET set); without it a task with a
	// sealed code fails for good.
	Seal *codes.Seal
	// Suppressor, when set, suppresses an address for SuppressFor after
	// its mail server refused a mail for good.
	Suppressor  Suppressor
	SuppressFor time.Duration
	// Events, when set (WEBHOOK_URLS), is told each mail sent, each
	// attempt that failed and each send given up, and schedules the
	// check of each code's expiry; nil (events off) costs nothing.
	Events Events
	// Logger logs each task's lines (Logging adds the task's fields).
	Logger *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// SendCodeHandler processes TypeSendCode tasks: it parses the payload,
// begins the attempt, sends the mail and records how it went. What cuts
// across every task (holding sends back while SMTP is down, metrics, the
// task's log fields) is asynq middleware around it: Hold, Observe and
// Logging. asynq itself recovers a panic in a handler, logs its stack and
// retries the task.
type SendCodeHandler struct {
	cfg   HandlerConfig
	from  string         // the envelope sender without ReturnPath: the Author's From address
	marks sync.WaitGroup // background writes of sent records
}

// NewSendCodeHandler returns the handler of cfg.
func NewSendCodeHandler(cfg HandlerConfig) (*SendCodeHandler, error) {
	if cfg.Deliveries == nil || cfg.Mailer == nil || cfg.Logger == nil {
		return nil, errors.New("tasks: a send-code handler needs deliveries, a mailer and a logger")
	}
	from := cfg.Author.EnvelopeFrom()
	if from == "" {
		return nil, errors.New("tasks: a send-code handler needs an Author made by mail.NewAuthor, not the zero one")
	}
	if err := codes.ValidateTTL(cfg.TTL); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &SendCodeHandler{cfg: cfg, from: from}, nil
}

// ProcessTask sends the live code. Returning an error means "retry"; errors
// that retrying cannot fix (a bad payload, an undeliverable class) wrap
// asynq.SkipRetry so the task is archived at once. A code that is gone
// (expired or already used) ends the task without a mail, and so does a
// task that sent its mail before (at most one mail per task). It tells how
// the attempt ended through the SendResult that Observe put in ctx.
func (h *SendCodeHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	ctx, res := withResult(ctx)
	p, err := ParseSendCodePayload(t)
	if err != nil {
		res.Outcome = OutcomeFailed
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	locale, err := mail.ParseLocale(p.Locale)
	if err != nil {
		locale = mail.DefaultLocale
	}
	log := loggerOf(ctx, h.cfg.Logger).With("email", mail.MaskAddress(p.Email), "locale", string(locale))
	if p.Purpose != "" {
		log = log.With("purpose", p.Purpose)
	}
	taskID, _ := asynq.GetTaskID(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	id := codes.ID{Purpose: p.Purpose, Email: p.Email}
	ttl := h.cfg.TTL
	if d := h.cfg.PurposeTTL[p.Purpose]; d > 0 {
		ttl = d
	}

	at, err := h.cfg.Deliveries.Begin(ctx, id, delivery.Task{ID: taskID, Queue: queue}, ttl)
	if err != nil {
		return fmt.Errorf("read code: %w", err)
	}
	switch {
	case at.AlreadySent:
		log.InfoContext(ctx, "task sent its mail before, not mailing again")
		res.Outcome = OutcomeDuplicate
		// Its event again, under the same webhook-id: the run that sent
		// may have ended before it queued it.
		h.emit(ctx, events.CodeSent, taskID, events.Data{Email: id.Email, Purpose: id.Purpose, TaskID: taskID, Attempt: attempt(ctx)})
		return nil
	case at.Superseded:
		log.InfoContext(ctx, "the reconciler queued another task in this one's place, which mails the code; not mailing")
		res.Outcome = OutcomeDuplicate
		return nil
	case at.Done || (!at.Live.NoExpiry && at.Live.ExpiresIn <= 0):
		log.InfoContext(ctx, "code gone before send, nothing to mail")
		res.Outcome = OutcomeExpired
		return nil
	}
	code, err := h.codeOf(p, id, at.Live.Code)
	if err != nil {
		// Only a sealed code that no secret of this worker opens: the
		// configuration's fault, said loudly, recorded as undecryptable.
		log.ErrorContext(ctx, "the task's code is sealed under a CODE_SECRET this worker does not hold: "+
			"give the worker the new secret first (CODE_SECRET=new,old), then the enqueuer; "+
			"re-run the archived tasks once it holds it", "class", string(delivery.ClassOf(err)), "err", err)
		return h.failed(ctx, log, id, taskID, err, res)
	}
	if code == "" {
		log.InfoContext(ctx, "code replaced by a later send, nothing to mail")
		res.Outcome = OutcomeExpired
		return nil
	}
	left := at.Live.ExpiresIn
	if at.Live.NoExpiry {
		log.WarnContext(ctx, "code key has no expiry, mailing the configured lifetime", "code_ttl", ttl.String())
		left = ttl
	}

	msg, err := h.cfg.Author.Compose(mail.Message{To: p.Email, Purpose: p.Purpose, Locale: locale, Code: code, ExpiresIn: left})
	if err != nil {
		return h.failed(ctx, log, id, taskID, err, res)
	}
	start := h.cfg.Now()
	err = h.cfg.Mailer.Send(ctx, relay.Envelope{From: h.returnPath(taskID, p, start), To: p.Email}, msg)
	accepted := h.cfg.Now()
	// The code's expiry check is queued after each attempt, but after the
	// record of a mail sent: a round trip before it would widen the window
	// in which a killed worker leaves a mail sent and unrecorded.
	scheduleExpiry := func() {
		if h.cfg.Events == nil || at.Live.NoExpiry {
			return
		}
		if serr := h.cfg.Events.ScheduleExpiry(ctx, id, taskID, start.Add(left)); serr != nil {
			log.WarnContext(ctx, "could not schedule the code's expiry check: no code.expired for it", "err", serr)
		}
	}
	res.SMTP = accepted.Sub(start)
	res.SMTPErr = err != nil
	if err != nil {
		scheduleExpiry()
		return h.failed(ctx, log, id, taskID, err, res)
	}
	res.Outcome = OutcomeSent
	if !p.RequestedAt.IsZero() {
		res.SinceRequest = accepted.Sub(p.RequestedAt)
	}
	h.markSent(ctx, log, id, taskID, delivery.Acceptance{At: accepted, Relay: res.Relay, SinceRequest: res.SinceRequest})
	scheduleExpiry()
	h.emit(ctx, events.CodeSent, taskID, events.Data{Email: id.Email, Purpose: id.Purpose, TaskID: taskID, Attempt: attempt(ctx),
		Relay: res.Relay, SentAfterMS: res.SinceRequest.Milliseconds()})
	log.InfoContext(ctx, "code mailed",
		"relay", res.Relay,
		"smtp_ms", res.SMTP.Milliseconds(),
		"since_request_ms", res.SinceRequest.Milliseconds())
	return nil
}

// returnPath is the envelope sender of task taskID's mail of p sent at
// at: computed here, no round trip.
func (h *SendCodeHandler) returnPath(taskID string, p SendCodePayload, at time.Time) string {
	if h.cfg.ReturnPath == nil {
		return h.from
	}
	return h.cfg.ReturnPath.For(returnpath.Send{Task: taskID, Purpose: p.Purpose, Email: p.Email}, at)
}

// errNoSeal: a sealed code came, and the worker has no secret to open it.
var errNoSeal = fmt.Errorf("%w: this worker has no CODE_SECRET", codes.ErrSealed)

// codeOf returns the code to mail for the live value live: live itself for a
// plain task; for a sealed one the code the payload carries, opened, when
// live is still its MAC, else "" (a later send replaced it).
func (h *SendCodeHandler) codeOf(p SendCodePayload, id codes.ID, live string) (string, error) {
	if p.SealedCode == "" {
		if h.cfg.Seal != nil && len(live) > codes.MaxLength {
			return "", nil // a sealed value: never mail a MAC
		}
		return live, nil
	}
	if h.cfg.Seal == nil {
		return "", errNoSeal
	}
	code, err := h.cfg.Seal.Decrypt(id, p.SealedCode)
	if err != nil {
		return "", err
	}
	if !h.cfg.Seal.Matches(id, code, live) {
		return "", nil
	}
	return code, nil
}

// failed records a failed send in the status (and, for a permanent one, on
// the suppression list) and returns the task's error. The records are best
// effort: the error stands whatever happens to them.
func (h *SendCodeHandler) failed(ctx context.Context, log *slog.Logger, id codes.ID, taskID string, err error, res *SendResult) error {
	class := delivery.ClassOf(err)
	how := class.Handling()
	res.Failure = class
	if res.Relay != "" {
		log = log.With("relay", res.Relay)
	}
	logRelayRefused(ctx, log, err)
	if how.Undeliverable {
		res.Outcome = OutcomeFailed
		if rerr := h.cfg.Deliveries.Failed(ctx, id, taskID, err); rerr != nil {
			log.WarnContext(ctx, "could not record the failure in the status", "err", rerr)
		}
		if how.Suppress && h.cfg.Suppressor != nil && h.cfg.SuppressFor > 0 {
			entry := delivery.Entry{Email: id.Email, Reason: delivery.ReasonRecipientRefused, Added: h.cfg.Now(), For: h.cfg.SuppressFor}
			if e := relay.ReplyError(err); e != nil {
				entry.Reply, entry.Enhanced, entry.Diagnostic = e.Code, e.Enhanced, e.Text
			}
			if serr := h.cfg.Suppressor.Add(ctx, entry); serr != nil {
				log.WarnContext(ctx, "could not suppress the address", "err", serr)
			} else {
				log.InfoContext(ctx, "address suppressed", "reply", delivery.ReplyCode(err), "for", h.cfg.SuppressFor.String())
			}
		}
		h.emitFailure(ctx, events.CodeUndeliverable, taskID, id, err, res.Relay)
		return fmt.Errorf("send mail: %s: %w: %w", class, err, asynq.SkipRetry)
	}
	var rerr error
	if isLastAttempt(ctx, err) {
		rerr = h.cfg.Deliveries.Failed(ctx, id, taskID, err)
		h.emitFailure(ctx, events.CodeUndeliverable, taskID, id, err, res.Relay)
	} else {
		rerr = h.cfg.Deliveries.Retrying(ctx, id, taskID, err)
		h.emitFailure(ctx, events.CodeRetrying, taskID+"/"+strconv.Itoa(attempt(ctx)), id, err, res.Relay)
	}
	if rerr != nil {
		log.WarnContext(ctx, "could not record the failure in the status", "err", rerr)
	}
	// The class leads the error that asynq keeps as the task's last error,
	// which the dashboard shows: "send mail: relay_refused: smtp auth: ...".
	return fmt.Errorf("send mail: %s: %w", class, err)
}

// emit queues the event typ of fact with data, when events are on; the
// emitter logs what it could not queue.
func (h *SendCodeHandler) emit(ctx context.Context, typ events.Type, fact string, data events.Data) {
	if h.cfg.Events == nil {
		return
	}
	_ = h.cfg.Events.Emit(ctx, events.Event{Type: typ, Fact: fact, At: h.cfg.Now(), Data: data})
}

// emitFailure emits typ (code.retrying, code.undeliverable) about err, a
// failed attempt of task's send of id's code through relayName.
func (h *SendCodeHandler) emitFailure(ctx context.Context, typ events.Type, fact string, id codes.ID, err error, relayName string) {
	if h.cfg.Events == nil {
		return
	}
	d := events.Data{Email: id.Email, Purpose: id.Purpose, Attempt: attempt(ctx), Failure: string(delivery.ClassOf(err)), Relay: relayName}
	d.TaskID, _ = asynq.GetTaskID(ctx)
	if e := relay.ReplyError(err); e != nil {
		d.Reply, d.Enhanced = e.Code, e.Enhanced
	}
	h.emit(ctx, typ, fact, d)
}

// attempt is the number of the task's attempt, from 1.
func attempt(ctx context.Context) int {
	n, _ := asynq.GetRetryCount(ctx)
	return n + 1
}

// logRelayRefused logs err, a failed send, as an error when the relay
// refuses verifyq's mail as such (delivery.RelayRefused): verifyq's
// configuration or the relay's policy, nobody's fault but the operator's,
// and every send to that relay fails alike until it is fixed; also when
// another relay then took the mail.
func logRelayRefused(ctx context.Context, log *slog.Logger, err error) {
	if delivery.ClassOf(err) != delivery.RelayRefused {
		return
	}
	log.ErrorContext(ctx, "the SMTP relay refuses verifyq's mail: check its URL (SMTP_URL, SMTP_FALLBACK_URL), MAIL_FROM and the relay's account; sends wait for it or go through the other relay",
		relayFields(err)...)
}

// relayFields are the log fields of a failed send: its class, the stage,
// the reply and its text, masked (relay.Error.Diagnostic).
func relayFields(err error) []any {
	fields := []any{"class", string(delivery.ClassOf(err)), "err", err}
	var e *relay.Error
	if errors.As(err, &e) {
		fields = append(fields, "stage", string(e.Stage))
		if e.Replied() {
			fields = append(fields, "reply", e.Code, "enhanced", e.Enhanced, "diagnostic", delivery.Diagnostic(e.Text))
		}
	}
	return fields
}

func (h *SendCodeHandler) markSent(ctx context.Context, log *slog.Logger, id codes.ID, taskID string, a delivery.Acceptance) {
	if err := h.cfg.Deliveries.Sent(ctx, id, taskID, a); err == nil {
		return
	}
	h.marks.Add(1)
	go func() {
		defer h.marks.Done()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), MarkTimeout)
		defer cancel()
		wait := 100 * time.Millisecond
		for {
			err := h.cfg.Deliveries.Sent(ctx, id, taskID, a)
			if err == nil {
				log.InfoContext(ctx, "sent mail recorded after Redis came back")
				return
			}
			select {
			case <-ctx.Done():
				log.ErrorContext(ctx, "could not record a sent mail: a re-run of the task may mail again", "err", err)
				return
			case <-time.After(wait):
				wait = min(2*wait, 2*time.Second)
			}
		}
	}()
}

// Wait waits until the background records of sent mails are written or
// have given up (MarkTimeout), or ctx ends. The worker calls it on shutdown
// before it closes Redis.
func (h *SendCodeHandler) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		h.marks.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// isLastAttempt reports whether asynq will archive the task after this
// failed attempt instead of retrying it.
func isLastAttempt(ctx context.Context, err error) bool {
	if errors.Is(err, asynq.SkipRetry) {
		return true
	}
	retried, ok1 := asynq.GetRetryCount(ctx)
	maxRetry, ok2 := asynq.GetMaxRetry(ctx)
	return ok1 && ok2 && retried >= maxRetry
}

// Retry delays: exponential from RetryBase, capped at RetryCap, each delay
// half fixed and half random (0.5 to 1 s first). asynq's default (15 s and
// up) is far too slow for codes that live ten minutes.
const (
	RetryBase = time.Second
	RetryCap  = time.Minute
)

// Retry delays of a send whose recipient's server said "not now"
// (delivery.RecipientDeferred): greylisting takes the same mail only after
// one to five minutes.
const (
	RecipientRetryBase = time.Minute
	RecipientRetryCap  = 5 * time.Minute
)

// RetryDelay is the asynq.RetryDelayFunc of the worker. It never schedules a
// retry past the task's deadline (the code's expiry). The delivery status
// reads the time it picks back from asynq (delivery.Records.Status). A task
// the breaker let go at shutdown (ErrSMTPUnavailable) comes back as after a
// first failure.
func RetryDelay(n int, err error, t *asynq.Task) time.Duration {
	if errors.Is(err, ErrSMTPUnavailable) {
		n = 0
	}
	return retryDelay(n, err, t, time.Now(), rand.Float64)
}

func retryDelay(n int, err error, t *asynq.Task, now time.Time, random func() float64) time.Duration {
	base, ceiling := RetryBase, RetryCap
	if delivery.ClassOf(err).Handling().Retry == delivery.RetryRecipient {
		base, ceiling = RecipientRetryBase, RecipientRetryCap
	}
	d := ceiling
	if n < 10 {
		d = min(base<<n, ceiling)
	}
	// Half fixed, half random: spreads retries of an outage without ever
	// retrying at once.
	d = d/2 + time.Duration(random()*float64(d/2))
	if p, err := ParseSendCodePayload(t); err == nil && !p.ExpiresAt.IsZero() {
		if left := p.ExpiresAt.Sub(now); left < d {
			d = max(left, 0)
		}
	}
	return d
}

// ErrorHandler logs every failed attempt: a warning while retries remain, an
// error when the task is archived (retries exhausted or a permanent failure).
//
// It also tells obs (which may be nil) about a task archived because its
// deadline, the code's expiry, passed: asynq fails such a task without
// calling the handler, so only the error handler sees it.
func ErrorHandler(logger *slog.Logger, obs Observer) asynq.ErrorHandlerFunc {
	if obs == nil {
		obs = nopObserver{}
	}
	return func(ctx context.Context, t *asynq.Task, err error) {
		// The lines carry the request's trace ID (tracing.LogHandler).
		ctx = traceOf(ctx, t)
		retried, _ := asynq.GetRetryCount(ctx)
		maxRetry, _ := asynq.GetMaxRetry(ctx)
		attrs := []any{"type", t.Type(), "retried", retried, "max_retry", maxRetry, "err", err}
		if p, perr := ParseSendCodePayload(t); perr == nil {
			attrs = append(attrs, "email", mail.MaskAddress(p.Email))
		}
		if !IsFailure(err) {
			logger.InfoContext(ctx, "send held back while SMTP is unusable, task put back without counting a retry", attrs...)
			return
		}
		if retried >= maxRetry || errors.Is(err, asynq.SkipRetry) {
			// asynq reports a passed deadline as the bare context error;
			// the handler wraps every error it returns.
			if err == context.DeadlineExceeded { //nolint:errorlint // identity on purpose, see above
				obs.TaskExpired()
			}
			logger.ErrorContext(ctx, "send failed for good, task archived", attrs...)
			return
		}
		logger.WarnContext(ctx, "send failed, will retry", attrs...)
	}
}
