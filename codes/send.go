package codes

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/mail"
)

// The send step is one script per Redis Cluster slot, sent in one pipeline
// (one round trip): the mailbox's, the client's (when there is a client to
// limit), the rate slot's (when a minute cap is on) and the code's. Each
// decides and records atomically in its slot. Since they run side by side,
// a refusal by one is followed by an undo of what the others recorded (a
// second round trip, only for refused sends).

// sendMailbox checks the suppression, the cooldown and the hour cap of a
// mailbox and, when all pass, records the send.
//
// KEYS: suppression, cooldown, hour of sends. ARGV: now ms, nonce, cooldown
// ms, cap (0 off), window ms.
// Replies: {"ok"}, {"suppressed", ms left}, {"cooldown", ms left},
// {"limited", "address", retry ms}.
var sendMailbox = redis.NewScript(`
local now, nonce, cooldown = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local cap, window = tonumber(ARGV[4]), tonumber(ARGV[5])
local s = redis.call('PTTL', KEYS[1])
if s > 0 or s == -1 then return {'suppressed', s} end
if cooldown > 0 then
  local left = redis.call('PTTL', KEYS[2])
  if left > 0 then return {'cooldown', left} end
end
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
  if redis.call('ZCARD', KEYS[3]) >= cap then
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return {'limited', 'address', math.max(tonumber(oldest[2]) + window - now, 1)}
  end
end
if cooldown > 0 then redis.call('SET', KEYS[2], nonce, 'PX', cooldown) end
if cap > 0 then
  redis.call('ZADD', KEYS[3], now, nonce)
  redis.call('PEXPIRE', KEYS[3], window)
end
return {'ok'}
`)

// undoMailbox takes one send out of a mailbox's limits.
//
// KEYS: cooldown, hour of sends. ARGV: nonce.
var undoMailbox = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
`)

// window checks a rolling window (a client's sends or verifies) and, when
// it has room, records one more.
//
// KEYS: window. ARGV: now ms, nonce, cap, window ms, limit name.
// Replies: {"ok"}, {"limited", name, retry ms}.
var window = redis.NewScript(`
local now, cap, width = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - width)
if redis.call('ZCARD', KEYS[1]) >= cap then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {'limited', ARGV[5], math.max(tonumber(oldest[2]) + width - now, 1)}
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], width)
return {'ok'}
`)

// undoWindow takes one member out of a rolling window.
//
// KEYS: window. ARGV: nonce.
var undoWindow = redis.NewScript(`return redis.call('ZREM', KEYS[1], ARGV[1])`)

// minutes checks the per-domain and global minute caps and, when both have
// room, counts one more in each that is on.
//
// KEYS: domain minute, global minute. ARGV: domain cap, global cap (0 off),
// ms left in the minute.
// Replies: {"ok"}, {"limited", name, retry ms}.
var minutes = redis.NewScript(`
local caps, left = {tonumber(ARGV[1]), tonumber(ARGV[2])}, tonumber(ARGV[3])
local names = {'domain', 'global'}
for i = 1, 2 do
  if caps[i] > 0 and tonumber(redis.call('GET', KEYS[i]) or '0') >= caps[i] then
    return {'limited', names[i], left}
  end
end
for i = 1, 2 do
  if caps[i] > 0 then
    redis.call('INCR', KEYS[i])
    redis.call('PEXPIRE', KEYS[i], left + 1000)
  end
end
return {'ok'}
`)

// undoMinutes takes one send out of the minute counters it was counted in,
// when the minute is not over.
//
// KEYS: domain minute, global minute. ARGV: domain counted, global counted
// (1 or 0).
var undoMinutes = redis.NewScript(`
for i = 1, 2 do
  if ARGV[i] == '1' and redis.call('EXISTS', KEYS[i]) == 1 then redis.call('DECR', KEYS[i]) end
end
return 1
`)

// getOrCreate gets the live code or creates one, and marks the status
// queued by this send (remembering the state before, for undo).
//
// KEYS: code, attempts, status. ARGV: new value, ttl ms, nonce, now ms,
// status linger ms, replace (1 or 0).
// Reply: {value, ms left, created (1 or 0), value replaced (empty if none)}.
// A live code is never extended; a key without expiry (left by an older
// writer that crashed between SET and EXPIRE) or with one longer than the
// configured lifetime is given the configured lifetime. With replace (sealed
// codes, whose plain code nobody can read back to mail again) a live code's
// value becomes the new one, keeping its remaining lifetime and attempts. A
// new code starts with no wrong attempts and a fresh status; a resent one
// keeps both.
var getOrCreate = redis.NewScript(`
local ttl, now, linger = tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
local code = redis.call('GET', KEYS[1])
local left, created, replaced = ttl, 0, ''
if code then
  left = redis.call('PTTL', KEYS[1])
  if left < 0 or left > ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
    left = ttl
  end
  if ARGV[6] == '1' then
    replaced = code
    code = ARGV[1]
    redis.call('SET', KEYS[1], code, 'KEEPTTL')
  end
else
  code, created = ARGV[1], 1
  redis.call('SET', KEYS[1], code, 'PX', ttl)
  redis.call('DEL', KEYS[2], KEYS[3])
end
local prev = redis.call('HGET', KEYS[3], 'state') or ''
local prevNonce = redis.call('HGET', KEYS[3], 'nonce') or ''
redis.call('HSET', KEYS[3], 'state', 'queued', 'nonce', ARGV[3], 'queued_at', now, 'prev_state', prev, 'prev_nonce', prevNonce)
redis.call('HDEL', KEYS[3], 'next_at', 'failure', 'reply')
redis.call('PEXPIRE', KEYS[3], left + linger)
return {code, left, created, replaced}
`)

// undoCode takes back what getOrCreate did for this send, if no later send
// took the status over: a code it created goes (with its status), a reused
// code's status returns to the state and the send it had before, and a
// value it replaced comes back if the code still holds this send's.
//
// KEYS: code, attempts, status. ARGV: nonce, created (1 or 0), this send's
// value, the value replaced (empty if none).
var undoCode = redis.NewScript(`
if redis.call('HGET', KEYS[3], 'nonce') ~= ARGV[1] then return 0 end
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return 1
end
if ARGV[4] ~= '' and redis.call('GET', KEYS[1]) == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[4], 'KEEPTTL')
end
for _, f in ipairs({'state', 'nonce'}) do
  local prev = redis.call('HGET', KEYS[3], 'prev_' .. f) or ''
  if prev == '' then redis.call('HDEL', KEYS[3], f) else redis.call('HSET', KEYS[3], f, prev) end
end
redis.call('HDEL', KEYS[3], 'prev_state', 'prev_nonce')
return 1
`)

// scriptCall is one script with its keys and arguments.
type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
}

// undoCall is what takes back one admitted part of a send.
type undoCall = scriptCall

// runAll runs calls in one pipeline and returns their replies. A call whose
// script Redis does not know (after a restart, on a new cluster node) is
// run again, alone with the others that failed so, once its script is
// loaded on every node; the calls that did run are not run twice.
func runAll(ctx context.Context, rdb redis.UniversalClient, calls []scriptCall) ([]*redis.Cmd, error) {
	cmds := make([]*redis.Cmd, len(calls))
	todo := make([]int, len(calls))
	for i := range todo {
		todo[i] = i
	}
	for attempt := 0; ; attempt++ {
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, i := range todo {
				cmds[i] = calls[i].script.EvalSha(ctx, p, calls[i].keys, calls[i].args...)
			}
			return nil
		})
		if err == nil || attempt > 0 || !redis.HasErrorPrefix(err, "NOSCRIPT") {
			return cmds, err
		}
		var again []int
		for _, i := range todo {
			if redis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") {
				again = append(again, i)
				if lerr := calls[i].script.Load(ctx, rdb).Err(); lerr != nil {
					return nil, lerr
				}
			}
		}
		todo = again
	}
}

// Request asks for the code of one address.
type Request struct {
	// Email is the address exactly as the client sent it (validated): the
	// code key's.
	Email string
	// Purpose is what the code is for (see ID); empty is the default
	// purpose. One not configured fails with ErrInvalidPurpose.
	Purpose string
	// Client identifies the end user's client for the per-client cap;
	// empty means none.
	Client string
	// Coalesce asks, inside the cooldown, for the live code's Issued with
	// Coalesced set instead of a refusal, when there is a live code.
	Coalesce bool
}

// GetOrCreate returns the live code for req.Email, or creates one, after
// the suppression list and the send limits admitted the send; one round
// trip. A suppressed mailbox returns a *SuppressedError, a refused send a
// *LimitError; either leaves the limits and the code as they were (a second
// round trip undoes what the parts that admitted it recorded). A repeat
// within the lifetime returns the same code and its remaining lifetime and
// does not extend it; with sealed codes (Config.Seal) it returns a new code
// that replaces the live one for the rest of its lifetime, since the live
// one cannot be read back. An admitted send marks the delivery status
// queued.
func (s *Store) GetOrCreate(ctx context.Context, req Request) (Issued, error) {
	if err := s.cfg.checkPurpose(req.Purpose); err != nil {
		return Issued{}, err
	}
	fresh, err := Generate(s.rand, s.cfg.Length)
	if err != nil {
		return Issued{}, err
	}
	nonce, err := s.nonce()
	if err != nil {
		return Issued{}, fmt.Errorf("get or create code: %w", err)
	}
	l := s.cfg.Limits
	now := s.Now()
	mailbox := MailboxID(s.cfg.Identity.Mailbox(req.Email))
	id := ID{Purpose: req.Purpose, Email: req.Email}
	codeKeys := []string{s.Key(id), s.AttemptsKey(id), s.StatusKey(id)}
	mailboxKeys := []string{SuppressKey(mailbox), CooldownKey(mailbox, req.Purpose), AddressKey(mailbox)}

	// The parts of the send, the code's last, each with its undo.
	calls := []scriptCall{{sendMailbox, mailboxKeys,
		[]any{now.UnixMilli(), nonce, l.Cooldown.Milliseconds(), l.AddressPerHour, LimitWindow.Milliseconds()}}}
	undos := []scriptCall{{undoMailbox, mailboxKeys[1:], []any{nonce}}}
	if req.Client != "" && l.ClientPerHour > 0 {
		keys := []string{ClientKey(req.Client)}
		calls = append(calls, scriptCall{window, keys, []any{now.UnixMilli(), nonce, l.ClientPerHour, LimitWindow.Milliseconds(), LimitClient}})
		undos = append(undos, scriptCall{undoWindow, keys, []any{nonce}})
	}
	if l.DomainPerMinute > 0 || l.GlobalPerMinute > 0 {
		minute := now.Truncate(MinuteWindow)
		left := max(minute.Add(MinuteWindow).Sub(now).Milliseconds(), 1)
		keys := []string{domainKey(mail.Domain(req.Email), minute), globalKey(minute)}
		calls = append(calls, scriptCall{minutes, keys, []any{l.DomainPerMinute, l.GlobalPerMinute, left}})
		undos = append(undos, scriptCall{undoMinutes, keys, []any{flag(l.DomainPerMinute > 0), flag(l.GlobalPerMinute > 0)}})
	}
	value, sealed := fresh, ""
	if s.cfg.Seal != nil {
		value = s.cfg.Seal.MAC(id, fresh)
		if sealed, err = s.cfg.Seal.Encrypt(s.rand, id, fresh); err != nil {
			return Issued{}, err
		}
	}
	calls = append(calls, scriptCall{getOrCreate, codeKeys,
		[]any{value, s.cfg.TTLOf(req.Purpose).Milliseconds(), nonce, now.UnixMilli(), StatusLinger.Milliseconds(), flag(s.cfg.Seal != nil)}})

	cmds, err := runAll(ctx, s.rdb, calls)
	if err != nil {
		return Issued{}, fmt.Errorf("get or create code: %w", err)
	}
	replies := make([][]any, len(cmds))
	for i, c := range cmds {
		if replies[i], err = c.Slice(); err != nil || len(replies[i]) == 0 {
			return Issued{}, fmt.Errorf("get or create code: reply %d: %w", i, errors.Join(err, errEmptyReply))
		}
	}
	code := replies[len(replies)-1]
	if len(code) != 4 {
		return Issued{}, fmt.Errorf("get or create code: unexpected reply of %d values", len(code))
	}
	codeStr, _ := code[0].(string)
	left, _ := code[1].(int64)
	created, _ := code[2].(int64)
	replaced, _ := code[3].(string)
	if s.cfg.Seal != nil {
		codeStr = fresh // the live value is its MAC
	}
	issued := Issued{
		Code:        codeStr,
		Sealed:      sealed,
		ExpiresIn:   time.Duration(left) * time.Millisecond,
		Created:     created == 1,
		ResendAfter: l.Cooldown,
		admitted: append(undos[:len(undos):len(undos)],
			scriptCall{undoCode, codeKeys, []any{nonce, flag(created == 1), value, replaced}}),
	}

	// The first part that refused decides; the parts that admitted are undone.
	var refusal error
	var admitted []scriptCall
	for i, r := range replies[:len(replies)-1] {
		if r[0] == "ok" {
			admitted = append(admitted, undos[i])
			continue
		}
		if refusal == nil {
			refusal = refusalOf(r, issued, req.Coalesce)
		}
	}
	if refusal == nil {
		return issued, nil
	}
	admitted = append(admitted, issued.admitted[len(issued.admitted)-1])
	if _, err := runAll(ctx, s.rdb, admitted); err != nil {
		refusal = errors.Join(refusal, fmt.Errorf("undo a refused send: %w", err))
	}
	var coalesced *coalescedError
	if errors.As(refusal, &coalesced) {
		return coalesced.issued, nil
	}
	return Issued{}, refusal
}

var errEmptyReply = errors.New("empty reply")

// coalescedError carries a coalesced send's answer through the refusal
// path: nothing is recorded, and the live code is the answer.
type coalescedError struct{ issued Issued }

func (e *coalescedError) Error() string { return "coalesced" }

// refusalOf turns a part's refusal into the send's error.
func refusalOf(r []any, issued Issued, coalesce bool) error {
	ms := func(i int) time.Duration {
		if i < len(r) {
			v, _ := r[i].(int64)
			return time.Duration(v) * time.Millisecond
		}
		return 0
	}
	switch r[0] {
	case "suppressed":
		return &SuppressedError{For: ms(1)}
	case "cooldown":
		if coalesce && !issued.Created {
			return &coalescedError{issued: Issued{ExpiresIn: issued.ExpiresIn, ResendAfter: ms(1), Coalesced: true}}
		}
		return &LimitError{Limit: LimitCooldown, RetryAfter: ms(1)}
	default:
		name, _ := r[1].(string)
		return &LimitError{Limit: name, RetryAfter: ms(2)}
	}
}

// Undo takes back what the send that returned issued recorded in the
// limits and the status, each part atomically in its slot, in one round
// trip, so that a retry of a request that failed after GetOrCreate (its
// task could not be queued) is admitted as if the failed attempt had never
// been. A code the send created goes too, unless a later send reused it;
// the retry then makes a new one. Undo of a coalesced or zero Issued does
// nothing.
func (s *Store) Undo(ctx context.Context, issued Issued) error {
	if len(issued.admitted) == 0 {
		return nil
	}
	if _, err := runAll(ctx, s.rdb, issued.admitted); err != nil {
		return fmt.Errorf("undo send: %w", err)
	}
	return nil
}
