package codes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/mail"
)

// StatusLinger is how long a delivery status outlives its code, so that a
// gateway or support can still see "expired" or "undeliverable" after the
// code is gone.
const StatusLinger = 15 * time.Minute

// DefaultSuppressFor is how long an address whose mail server refused a
// mail for good (an SMTP 5xx) stays on the suppression list.
const DefaultSuppressFor = 24 * time.Hour

// States of a delivery, as Status reports them.
const (
	StateNone          = "none"          // no code was asked for lately
	StateQueued        = "queued"        // the send is queued for a worker
	StateSending       = "sending"       // a worker is sending it
	StateRetrying      = "retrying"      // an attempt failed; another follows
	StateSent          = "sent"          // the mail server accepted the mail
	StateUndeliverable = "undeliverable" // the mail server refused it for good
	StateExpired       = "expired"       // the code expired before it was used
)

// ErrSuppressed is matched by every *SuppressedError.
var ErrSuppressed = errors.New("the address is suppressed")

// SuppressedError says a send was refused because the mailbox's mail server
// refused an earlier mail for good.
type SuppressedError struct {
	// For is how long the suppression lasts.
	For time.Duration
}

func (e *SuppressedError) Error() string {
	return fmt.Sprintf("the address is suppressed for %s after a permanent delivery failure", e.For.Round(time.Second))
}

// Is makes errors.Is(err, ErrSuppressed) true.
func (e *SuppressedError) Is(target error) bool { return target == ErrSuppressed }

// Status is what became of the mail of an address's code. It never holds
// the code.
type Status struct {
	// State is one of the State constants.
	State string
	// Attempts is the number of send attempts so far.
	Attempts int
	// NextAttemptIn is when the next attempt is due, while retrying.
	NextAttemptIn time.Duration
	// LastFailure is the class of the last failed attempt (mail.Failure*),
	// while retrying or undeliverable.
	LastFailure string
	// Reply is the SMTP reply code of the last failure (e.g. 451, 550), or
	// 0; never the server's text.
	Reply int
	// SentAt is when the mail server accepted the mail.
	SentAt time.Time
	// ExpiresIn is the code's remaining lifetime; zero when it is gone.
	ExpiresIn time.Duration
}

// readStatus returns the status hash as a flat list and the code's PTTL.
//
// KEYS: code, status.
var readStatus = redis.NewScript(`
return {redis.call('HGETALL', KEYS[2]), redis.call('PTTL', KEYS[1])}
`)

// Status reads the delivery status of id's code in one round trip.
func (r *Reader) Status(ctx context.Context, id ID, now time.Time) (Status, error) {
	res, err := readStatus.Run(ctx, r.rdb, []string{r.Key(id), r.StatusKey(id)}).Slice()
	if err != nil {
		return Status{}, fmt.Errorf("read status: %w", err)
	}
	if len(res) != 2 {
		return Status{}, fmt.Errorf("read status: unexpected reply of %d values", len(res))
	}
	flat, _ := res[0].([]any)
	h := map[string]string{}
	for i := 0; i+1 < len(flat); i += 2 {
		k, _ := flat[i].(string)
		v, _ := flat[i+1].(string)
		h[k] = v
	}
	ms, _ := res[1].(int64)
	st := Status{State: h["state"], Reply: atoi(h["reply"]), Attempts: atoi(h["attempts"]), LastFailure: h["failure"]}
	if ms := atoi64(h["sent_at"]); ms > 0 {
		st.SentAt = time.UnixMilli(ms)
	}
	if next := atoi64(h["next_at"]); next > 0 && st.State == StateRetrying {
		st.NextAttemptIn = max(time.UnixMilli(next).Sub(now), 0)
	}
	switch {
	case ms > 0:
		st.ExpiresIn = time.Duration(ms) * time.Millisecond
	case ms == -1: // a key without expiry: alive
	default: // the code is gone
		if st.State != "" && st.State != StateUndeliverable {
			st.State = StateExpired
		}
	}
	if st.State == "" {
		st.State = StateNone
	}
	return st, nil
}

// delivery scripts run on the status key only, and keep its expiry.

// begin starts a send attempt of task ARGV[1]: nothing to do when the task
// already sent its mail (a re-run after Redis lost the acknowledgement) or
// the code is gone (then the status says expired); else the status says
// sending and the code comes back with its remaining lifetime in ms (-1: no
// expiry).
//
// KEYS: code, status. ARGV: task id, now ms, status lifetime when the key has
// none (the code's ttl plus the linger) ms.
var begin = redis.NewScript(`
if ARGV[1] ~= '' and redis.call('HEXISTS', KEYS[2], 'sent:' .. ARGV[1]) == 1 then return {'sent'} end
local code = redis.call('GET', KEYS[1])
if not code then
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'state', 'expired') end
  return {'gone'}
end
local left = redis.call('PTTL', KEYS[1])
local fresh = redis.call('EXISTS', KEYS[2]) == 0
redis.call('HSET', KEYS[2], 'state', 'sending')
redis.call('HINCRBY', KEYS[2], 'attempts', 1)
redis.call('HDEL', KEYS[2], 'next_at')
if fresh then redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3])) end
return {'live', code, left}
`)

// finish records how an attempt ended, on an existing status: ARGV is
// field, value pairs; an empty value deletes the field.
//
// KEYS: status.
var finish = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i]) else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
`)

// Attempt is the start of one send attempt.
type Attempt struct {
	// Live is the code to mail, unless Done.
	Live Live
	// Done is true when there is nothing to mail: the task already sent
	// its mail (AlreadySent) or the code is gone.
	Done bool
	// AlreadySent is true when this task's mail was accepted before.
	AlreadySent bool
}

// Begin starts attempt of task taskID (asynq's task ID; empty: no dedup) to
// mail id's code, in one round trip: it finds whether the task already
// sent its mail, reads the code, and marks the status sending. ttl is the
// configured lifetime, for a status key that has none yet.
func (r *Reader) Begin(ctx context.Context, id ID, taskID string, ttl time.Duration) (Attempt, error) {
	res, err := begin.Run(ctx, r.rdb, []string{r.Key(id), r.StatusKey(id)},
		taskID, time.Now().UnixMilli(), (ttl + StatusLinger).Milliseconds()).Slice()
	if err != nil {
		return Attempt{}, fmt.Errorf("begin send: %w", err)
	}
	switch {
	case len(res) == 1 && res[0] == "sent":
		return Attempt{Done: true, AlreadySent: true}, nil
	case len(res) == 1:
		return Attempt{Done: true}, nil
	case len(res) != 3:
		return Attempt{}, fmt.Errorf("begin send: unexpected reply of %d values", len(res))
	}
	code, _ := res[1].(string)
	left, _ := res[2].(int64)
	if left == -1 {
		return Attempt{Live: Live{Code: code, NoExpiry: true}}, nil
	}
	return Attempt{Live: Live{Code: code, ExpiresIn: time.Duration(left) * time.Millisecond}}, nil
}

// Sent records that the mail server accepted task taskID's mail at at: the
// status says sent, and a re-run of the task will not mail again.
func (r *Reader) Sent(ctx context.Context, id ID, taskID string, at time.Time) error {
	args := []any{"state", StateSent, "sent_at", at.UnixMilli(), "next_at", "", "failure", "", "reply", ""}
	if taskID != "" {
		args = append(args, "sent:"+taskID, "1")
	}
	return r.finish(ctx, id, args...)
}

// Retrying records a failed attempt that will be retried after next.
func (r *Reader) Retrying(ctx context.Context, id ID, failure error, next time.Time) error {
	return r.finish(ctx, id, "state", StateRetrying, "next_at", next.UnixMilli(),
		"failure", mail.FailureOf(failure), "reply", replyField(failure))
}

// Failed records a failed attempt after which the task is given up: the
// status says undeliverable for a permanent failure, else keeps its state.
func (r *Reader) Failed(ctx context.Context, id ID, failure error) error {
	class := mail.FailureOf(failure)
	if class != mail.FailurePermanent {
		return r.finish(ctx, id, "next_at", "", "failure", class, "reply", replyField(failure))
	}
	return r.finish(ctx, id, "state", StateUndeliverable, "next_at", "", "failure", class, "reply", replyField(failure))
}

func (r *Reader) finish(ctx context.Context, id ID, args ...any) error {
	if err := finish.Run(ctx, r.rdb, []string{r.StatusKey(id)}, args...).Err(); err != nil {
		return fmt.Errorf("record delivery status: %w", err)
	}
	return nil
}

func replyField(err error) string {
	if c := mail.ReplyCode(err); c > 0 {
		return strconv.Itoa(c)
	}
	return ""
}

// Suppression is one entry of the suppression list. It holds the address
// only masked.
type Suppression struct {
	// ID names the mailbox (MailboxID).
	ID string `json:"id"`
	// Masked is the address as the logs show it (a***@example.com).
	Masked string `json:"address"`
	// Reply is the SMTP reply code that refused the mail.
	Reply int `json:"reply"`
	// Since is when the mail was refused.
	Since time.Time `json:"since"`
	// ExpiresIn is how long the entry lasts.
	ExpiresIn time.Duration `json:"-"`
}

// Suppressions is the suppression list: mailboxes whose mail server refused
// a mail for good are refused new sends for a while.
type Suppressions struct {
	rdb      redis.UniversalClient
	identity mail.Identity
}

// NewSuppressions returns the suppression list in rdb, keyed by identity's
// mailboxes.
func NewSuppressions(rdb redis.UniversalClient, identity mail.Identity) *Suppressions {
	return &Suppressions{rdb: rdb, identity: identity}
}

// Add suppresses email's mailbox for d after the mail server refused a mail
// with reply code reply.
func (s *Suppressions) Add(ctx context.Context, email string, reply int, d time.Duration, now time.Time) error {
	b, err := json.Marshal(Suppression{Masked: mail.MaskAddress(email), Reply: reply, Since: now.UTC()})
	if err != nil {
		return err
	}
	key := SuppressKey(MailboxID(s.identity.Mailbox(email)))
	if err := s.rdb.Set(ctx, key, b, d).Err(); err != nil {
		return fmt.Errorf("suppress address: %w", err)
	}
	return nil
}

// Lift removes email's mailbox from the list, and reports whether it was
// on it.
func (s *Suppressions) Lift(ctx context.Context, email string) (bool, error) {
	if err := mail.ValidateAddress(email); err != nil {
		return false, err
	}
	return s.LiftID(ctx, MailboxID(s.identity.Mailbox(email)))
}

// LiftID removes the mailbox with ID id (Suppression.ID) from the list, and
// reports whether it was on it.
func (s *Suppressions) LiftID(ctx context.Context, id string) (bool, error) {
	n, err := s.rdb.Del(ctx, SuppressKey(id)).Result()
	if err != nil {
		return false, fmt.Errorf("lift suppression: %w", err)
	}
	return n == 1, nil
}

// List returns the suppression list, at most limit entries. On Redis
// Cluster it scans every primary.
func (s *Suppressions) List(ctx context.Context, limit int) ([]Suppression, error) {
	var mu sync.Mutex
	var out []Suppression
	scan := func(ctx context.Context, node redis.Cmdable) error {
		iter := node.Scan(ctx, 0, SuppressPrefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			key := iter.Val()
			raw, err := node.Get(ctx, key).Bytes()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				return err
			}
			var e Suppression
			if json.Unmarshal(raw, &e) != nil {
				continue
			}
			e.ID = suppressID(key)
			e.ExpiresIn = node.PTTL(ctx, key).Val()
			mu.Lock()
			full := len(out) >= limit
			if !full {
				out = append(out, e)
			}
			mu.Unlock()
			if full {
				return nil
			}
		}
		return iter.Err()
	}
	var err error
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return scan(ctx, node) })
	} else {
		err = scan(ctx, s.rdb)
	}
	if err != nil {
		return nil, fmt.Errorf("list suppressions: %w", err)
	}
	return out, nil
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func atoi64(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
