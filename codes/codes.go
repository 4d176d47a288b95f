// Package codes owns verification codes: how they are generated, how long
// they live, the limits on sending and guessing them, and the Redis scripts
// that create, read and consume them.
//
// The Redis layout is the one the old gateway reads directly: the key is
// KeyPrefix followed by the address exactly as the client sent it (no
// trimming, no case folding), the value is the plain code, and the key
// expires after TTL. Every operation that reads and writes is a single Lua
// script, so each is atomic and costs one round trip.
//
// Keys of verifyq's own: {code_<email>}:attempts (the wrong-code count) and
// {code_<email>}:status (the delivery status, see Status), whose hash tag
// keeps them on the code key's Redis Cluster slot and which are the only
// keys besides the code's that hold the address; for the limits
// verifyq:limit:cooldown:<mailbox id> and verifyq:limit:address:<mailbox id>
// (a hash of the mailbox identity of mail.Identity, see MailboxID),
// verifyq:limit:client:<ip>, verifyq:limit:domain:<domain>:<minute>,
// verifyq:limit:global:<minute> and verifyq:limit:verify:<ip>; and the
// suppression list, verifyq:suppress:<mailbox id>. The send and verify scripts use limit keys
// together with the code key, so they need a single Redis (or a primary with
// replicas), not Redis Cluster: a mailbox or client key cannot share the
// slot of a code key that keeps the address as sent.
package codes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/internal/field"
	"github.com/verifyq/verifyq/mail"
)

// Expected outcomes. Any other error from a Store is a Redis failure.
var (
	// ErrNotFound means the address has no live code: it was never
	// requested, it expired, or it was already used.
	ErrNotFound = errors.New("no live code for this address")
	// ErrMismatch means a live code exists and the given one is not it.
	ErrMismatch = errors.New("wrong code")
	// ErrAttemptsExhausted means the given code was wrong and it was the
	// last allowed attempt: the live code is deleted, and a new one must be
	// requested.
	ErrAttemptsExhausted = errors.New("wrong code; too many wrong attempts, the code is invalidated")
	// ErrRateLimited is matched by every *LimitError.
	ErrRateLimited = errors.New("rate limited")
)

// Names of the limits, as LimitError.Limit reports them.
const (
	LimitCooldown     = "cooldown"      // Limits.Cooldown
	LimitAddress      = "address"       // Limits.AddressPerHour
	LimitClient       = "client"        // Limits.ClientPerHour
	LimitDomain       = "domain"        // Limits.DomainPerMinute
	LimitGlobal       = "global"        // Limits.GlobalPerMinute
	LimitClientVerify = "client_verify" // Limits.ClientVerifiesPerHour
)

// LimitNames lists every limit name.
var LimitNames = []string{LimitCooldown, LimitAddress, LimitClient, LimitDomain, LimitGlobal, LimitClientVerify}

// LimitError says a send was refused by a limit and when to try again.
type LimitError struct {
	// Limit is one of LimitNames.
	Limit string
	// RetryAfter is how long until the limit lets a send through.
	RetryAfter time.Duration
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("rate limited (%s), retry after %s", e.Limit, e.RetryAfter)
}

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *LimitError) Is(target error) bool { return target == ErrRateLimited }

// Defaults of Config.
const (
	DefaultKeyPrefix = "code_"
	DefaultTTL       = 10 * time.Minute
	MinTTL           = time.Second
	DefaultLength    = 6
	MinLength        = 4
	MaxLength        = 10
)

// Defaults of Limits.
const (
	DefaultCooldown       = time.Minute
	DefaultAddressPerHour = 5
	DefaultClientPerHour  = 30
	DefaultMaxAttempts    = 5
	// DefaultClientVerifiesPerHour is generous for one user and tight for
	// one client guessing codes across many addresses.
	DefaultClientVerifiesPerHour = 60
)

// LimitWindow is the rolling window of the per-address and per-client caps.
const LimitWindow = time.Hour

// MinuteWindow is the fixed window of the per-domain and global caps: the
// current minute of the clock.
const MinuteWindow = time.Minute

// Limits bound how often codes are mailed and guessed. A zero field turns
// its limit off.
type Limits struct {
	// Cooldown is the least time between two sends to one address.
	Cooldown time.Duration
	// AddressPerHour caps sends to one address per rolling hour. The
	// address is compared case-insensitively, so case variants share it.
	AddressPerHour int
	// ClientPerHour caps sends asked for by one end-user client (an IP
	// address, IPv6 grouped by /64) per rolling hour.
	ClientPerHour int
	// DomainPerMinute caps sends to one recipient domain (as an A-label)
	// per minute of the clock: a floor under a flood aimed at one provider.
	DomainPerMinute int
	// GlobalPerMinute caps all sends per minute of the clock: a floor under
	// the whole service.
	GlobalPerMinute int
	// MaxAttempts is how many wrong codes invalidate the live code.
	MaxAttempts int
	// ClientVerifiesPerHour caps verify requests from one end-user client
	// per rolling hour, so that one client cannot spread guesses over many
	// addresses.
	ClientVerifiesPerHour int
}

// DefaultLimits are the limits verifyq runs with unless configured.
func DefaultLimits() Limits {
	return Limits{
		Cooldown:       DefaultCooldown,
		AddressPerHour: DefaultAddressPerHour,
		ClientPerHour:  DefaultClientPerHour,
		MaxAttempts:    DefaultMaxAttempts,

		ClientVerifiesPerHour: DefaultClientVerifiesPerHour,
	}
}

// Config says how codes look and how long they live.
type Config struct {
	// KeyPrefix is put before the address to make the Redis key.
	KeyPrefix string
	// TTL is the lifetime of a new code.
	TTL time.Duration
	// Length is the number of decimal digits of a new code.
	Length int
	// Limits are the send and verify limits.
	Limits Limits
	// Identity says which addresses are one mailbox for the limits.
	Identity mail.Identity
}

// Validate reports every problem with c at once. Each is a *field.Error
// named after the field (Limits' fields by their own names), so a binary
// can report it under its environment variable.
func (c Config) Validate() error {
	return errors.Join(ValidateKeyPrefix(c.KeyPrefix), ValidateTTL(c.TTL), ValidateLength(c.Length), c.Limits.Validate(), c.Identity.Validate())
}

// ValidateKeyPrefix checks Config.KeyPrefix (field "KeyPrefix").
func ValidateKeyPrefix(prefix string) error {
	if prefix == "" {
		return field.Errorf("KeyPrefix", "must not be empty")
	}
	return nil
}

// ValidateTTL checks Config.TTL (field "TTL"): at least MinTTL.
func ValidateTTL(ttl time.Duration) error {
	if ttl < MinTTL {
		return field.Errorf("TTL", "%s is shorter than %s", ttl, MinTTL)
	}
	return nil
}

// ValidateLength checks Config.Length (field "Length"): MinLength to
// MaxLength digits.
func ValidateLength(n int) error {
	if n < MinLength || n > MaxLength {
		return field.Errorf("Length", "%d is outside %d..%d", n, MinLength, MaxLength)
	}
	return nil
}

// Validate reports every negative limit, each a *field.Error named after
// its field.
func (l Limits) Validate() error {
	var errs []error
	for _, f := range []struct {
		name     string
		negative bool
	}{
		{"Cooldown", l.Cooldown < 0},
		{"AddressPerHour", l.AddressPerHour < 0},
		{"ClientPerHour", l.ClientPerHour < 0},
		{"DomainPerMinute", l.DomainPerMinute < 0},
		{"GlobalPerMinute", l.GlobalPerMinute < 0},
		{"MaxAttempts", l.MaxAttempts < 0},
		{"ClientVerifiesPerHour", l.ClientVerifiesPerHour < 0},
	} {
		if f.negative {
			errs = append(errs, field.Errorf(f.name, "must not be negative (0 turns the limit off)"))
		}
	}
	return errors.Join(errs...)
}

// Issued is the outcome of Store.GetOrCreate.
type Issued struct {
	// Code is the live code. It must never be returned to the caller of the
	// service, logged or put in a task payload.
	Code string
	// ExpiresIn is the remaining lifetime of the code.
	ExpiresIn time.Duration
	// Created is true when this call made the code, false when an existing
	// one was reused.
	Created bool
	// ResendAfter is the cooldown before the next send to this address.
	ResendAfter time.Duration
	// Coalesced is true when the request asked to coalesce and came inside
	// the cooldown while the code lives: nothing was recorded, and the
	// code already mailed is the answer. ResendAfter is what is left of
	// the cooldown.
	Coalesced bool

	// admitted is what the request recorded in the limits, for Undo.
	admitted admission
}

// admission is what one admitted send recorded in the limits.
type admission struct {
	keys   []string // cooldown, address, client, domain, global
	status string
	nonce  string
	// minutes says whether the domain and global counters were counted.
	minutes [2]bool
}

// Store keeps codes in Redis: it creates, reads (its Reader's Peek) and
// consumes them.
type Store struct {
	*Reader
	rdb  redis.Scripter
	cfg  Config
	rand io.Reader
	// Now is the clock of the rolling windows; tests replace it.
	Now func() time.Time
}

// NewStore returns a Store that uses rdb. cfg is validated with
// Config.Validate.
func NewStore(rdb redis.Scripter, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Store{Reader: &Reader{rdb: rdb, prefix: cfg.KeyPrefix}, rdb: rdb, cfg: cfg, rand: rand.Reader, Now: time.Now}, nil
}

// getOrCreate decides the send limits and gets or creates the code in one
// atomic step.
//
// KEYS: code, attempts, status, then the admission's: cooldown, address
// window, client window, domain minute, global minute, suppression.
// ARGV: new code, ttl ms, cooldown ms, now ms, a unique member for the
// limits (the nonce), coalesce (1 or 0), address cap, client cap, hour
// window ms, domain cap, global cap, ms left in the current minute, status
// linger ms. A cap of 0 is off.
//
// A suppressed mailbox returns {"suppressed", ms left, 0}. Inside the
// cooldown, a coalescing request whose code lives returns {"coalesced",
// code ms left, cooldown ms left}; any other refused send returns
// {"limited", name, retry ms}. None of them changes anything. An admitted
// send records itself (the cooldown holds the nonce, the hour windows the
// nonce as a member, the minute counters one more), marks the status
// queued, then returns the live code with its remaining lifetime in ms, or
// stores ARGV[1]. A live code is never extended; a key without expiry (left
// by an older writer that crashed between SET and EXPIRE) or with one longer
// than the configured lifetime is given the configured lifetime. A new code
// starts with no wrong attempts and a fresh status; a resent one keeps both.
var getOrCreate = redis.NewScript(`
local ttl, cooldown, now = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local nonce, coalesce = ARGV[5], ARGV[6] == '1'
local hours = {{5, tonumber(ARGV[7]), 'address'}, {6, tonumber(ARGV[8]), 'client'}}
local window = tonumber(ARGV[9])
local minutes = {{7, tonumber(ARGV[10]), 'domain'}, {8, tonumber(ARGV[11]), 'global'}}
local minuteLeft, linger = tonumber(ARGV[12]), tonumber(ARGV[13])

local suppressed = redis.call('PTTL', KEYS[9])
if suppressed > 0 or suppressed == -1 then return {'suppressed', suppressed, 0} end
if cooldown > 0 then
  local left = redis.call('PTTL', KEYS[4])
  if left > 0 then
    if coalesce then
      local live = redis.call('PTTL', KEYS[1])
      if live == -1 then live = ttl end
      if live > 0 then return {'coalesced', live, left} end
    end
    return {'limited', 'cooldown', left}
  end
end
for _, h in ipairs(hours) do
  if h[2] > 0 then
    local key = KEYS[h[1]]
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    if redis.call('ZCARD', key) >= h[2] then
      local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      return {'limited', h[3], math.max(tonumber(oldest[2]) + window - now, 1)}
    end
  end
end
for _, m in ipairs(minutes) do
  if m[2] > 0 and tonumber(redis.call('GET', KEYS[m[1]]) or '0') >= m[2] then
    return {'limited', m[3], minuteLeft}
  end
end

if cooldown > 0 then redis.call('SET', KEYS[4], nonce, 'PX', cooldown) end
for _, h in ipairs(hours) do
  if h[2] > 0 then
    redis.call('ZADD', KEYS[h[1]], now, nonce)
    redis.call('PEXPIRE', KEYS[h[1]], window)
  end
end
for _, m in ipairs(minutes) do
  if m[2] > 0 then
    redis.call('INCR', KEYS[m[1]])
    redis.call('PEXPIRE', KEYS[m[1]], minuteLeft + 1000)
  end
end

local code = redis.call('GET', KEYS[1])
local left, created = ttl, 0
if code then
  left = redis.call('PTTL', KEYS[1])
  if left < 0 or left > ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
    left = ttl
  end
else
  code, created = ARGV[1], 1
  redis.call('SET', KEYS[1], code, 'PX', ttl)
  redis.call('DEL', KEYS[2], KEYS[3])
end
redis.call('HSET', KEYS[3], 'state', 'queued', 'nonce', nonce, 'queued_at', now)
redis.call('HDEL', KEYS[3], 'next_at', 'failure', 'reply')
redis.call('PEXPIRE', KEYS[3], left + linger)
return {code, left, created}
`)

// Request asks for the code of one address.
type Request struct {
	// Email is the address exactly as the client sent it (validated): the
	// code key's.
	Email string
	// Client identifies the end user's client for the per-client cap;
	// empty means none.
	Client string
	// Coalesce asks, inside the cooldown, for the live code's Issued with
	// Coalesced set instead of a refusal, when there is a live code.
	Coalesce bool
}

// GetOrCreate returns the live code for req.Email, or creates one, in one
// atomic step that first applies the suppression list and the send limits.
// A suppressed mailbox returns a *SuppressedError, a refused send a
// *LimitError; neither changes anything. A repeat within the lifetime
// returns the same code and its remaining lifetime and does not extend it.
// An admitted send marks the delivery status queued.
func (s *Store) GetOrCreate(ctx context.Context, req Request) (Issued, error) {
	fresh, err := Generate(s.rand, s.cfg.Length)
	if err != nil {
		return Issued{}, err
	}
	nonce, err := s.nonce()
	if err != nil {
		return Issued{}, fmt.Errorf("get or create code: %w", err)
	}
	l := s.cfg.Limits
	clientCap := l.ClientPerHour
	if req.Client == "" {
		clientCap = 0
	}
	now := s.Now()
	minute := now.Truncate(MinuteWindow)
	minuteLeft := minute.Add(MinuteWindow).Sub(now)
	id := MailboxID(s.cfg.Identity.Mailbox(req.Email))
	adm := admission{
		keys: []string{CooldownKey(id), AddressKey(id), clientKey(req.Client),
			domainKey(mail.Domain(req.Email), minute), globalKey(minute)},
		status:  s.StatusKey(req.Email),
		nonce:   nonce,
		minutes: [2]bool{l.DomainPerMinute > 0, l.GlobalPerMinute > 0},
	}
	keys := append([]string{s.Key(req.Email), s.AttemptsKey(req.Email), adm.status}, adm.keys...)
	keys = append(keys, SuppressKey(id))
	res, err := getOrCreate.Run(ctx, s.rdb, keys,
		fresh, s.cfg.TTL.Milliseconds(), l.Cooldown.Milliseconds(), now.UnixMilli(), nonce, flag(req.Coalesce),
		l.AddressPerHour, clientCap, LimitWindow.Milliseconds(),
		l.DomainPerMinute, l.GlobalPerMinute, max(minuteLeft.Milliseconds(), 1), StatusLinger.Milliseconds()).Slice()
	if err != nil {
		return Issued{}, fmt.Errorf("get or create code: %w", err)
	}
	if len(res) != 3 {
		return Issued{}, fmt.Errorf("get or create code: unexpected reply of %d values", len(res))
	}
	switch res[0] {
	case "suppressed":
		ms, _ := res[1].(int64)
		return Issued{}, &SuppressedError{For: time.Duration(ms) * time.Millisecond}
	case "limited":
		name, _ := res[1].(string)
		ms, _ := res[2].(int64)
		return Issued{}, &LimitError{Limit: name, RetryAfter: time.Duration(ms) * time.Millisecond}
	case "coalesced":
		left, _ := res[1].(int64)
		cool, _ := res[2].(int64)
		return Issued{
			ExpiresIn:   time.Duration(left) * time.Millisecond,
			ResendAfter: time.Duration(cool) * time.Millisecond,
			Coalesced:   true,
		}, nil
	}
	code, _ := res[0].(string)
	left, _ := res[1].(int64)
	created, _ := res[2].(int64)
	return Issued{
		Code:        code,
		ExpiresIn:   time.Duration(left) * time.Millisecond,
		Created:     created == 1,
		ResendAfter: l.Cooldown,
		admitted:    adm,
	}, nil
}

// undo takes one admitted send out of the limits: the cooldown if it is
// still this send's, its members of the hour windows, and one from each
// minute counter it counted, if that minute is not over; and the queued
// state it set, if no later send set it since.
//
// KEYS: status, cooldown, address, client, domain, global. ARGV: nonce,
// domain counted (1 or 0), global counted.
var undo = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'nonce') == ARGV[1] then redis.call('HDEL', KEYS[1], 'state', 'nonce', 'queued_at') end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
for i = 5, 6 do
  if ARGV[i - 3] == '1' and redis.call('EXISTS', KEYS[i]) == 1 then redis.call('DECR', KEYS[i]) end
end
return 1
`)

// Undo takes back what the send that returned issued recorded in the
// limits and the status, in one atomic step, so that a retry of a request
// that failed after GetOrCreate (its task could not be queued) is admitted
// as if the failed attempt had never been. The code itself stays: the retry
// mails it. Undo of a coalesced or zero Issued does nothing.
func (s *Store) Undo(ctx context.Context, issued Issued) error {
	a := issued.admitted
	if a.nonce == "" {
		return nil
	}
	keys := append([]string{a.status}, a.keys...)
	if err := undo.Run(ctx, s.rdb, keys, a.nonce, flag(a.minutes[0]), flag(a.minutes[1])).Err(); err != nil {
		return fmt.Errorf("undo send limits: %w", err)
	}
	return nil
}

// nonce returns a unique member for the limit windows.
func (s *Store) nonce() (string, error) {
	var b [12]byte
	if _, err := io.ReadFull(s.rand, b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// verify applies the per-client verify cap, then compares ARGV[1] with the
// live code in constant time (every byte is looked at whatever the first
// difference) and deletes the code on a match, so a code is used once. A
// wrong code counts an attempt; the ARGV[2]th (when above 0) deletes the
// code.
//
// KEYS: code, attempts, client's verify window, status (deleted with the
// code on a match). ARGV: code, max attempts,
// client cap (0: off), window ms, now ms, nonce.
// Replies: {0} no code, {1} match (consumed), {2} mismatch, {3} mismatch
// that used up the attempts, {4, retry ms} refused by the client cap.
var verify = redis.NewScript(`
local cap = tonumber(ARGV[3])
if cap > 0 then
  local window, now = tonumber(ARGV[4]), tonumber(ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
  if redis.call('ZCARD', KEYS[3]) >= cap then
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return {4, math.max(tonumber(oldest[2]) + window - now, 1)}
  end
  redis.call('ZADD', KEYS[3], now, ARGV[6])
  redis.call('PEXPIRE', KEYS[3], window)
end
local code = redis.call('GET', KEYS[1])
if not code then return {0} end
local given = ARGV[1]
local diff = 0
if #code ~= #given then diff = 1 end
for i = 1, #code do
  diff = bit.bor(diff, bit.bxor(string.byte(code, i), string.byte(given, i) or 0))
end
if diff == 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
  return {1}
end
local n = redis.call('INCR', KEYS[2])
local max = tonumber(ARGV[2])
if max > 0 and n >= max then
  redis.call('DEL', KEYS[1], KEYS[2])
  return {3}
end
local left = redis.call('PTTL', KEYS[1])
if left > 0 then redis.call('PEXPIRE', KEYS[2], left) end
return {2}
`)

// Verify checks code against the live code for email, for the end user's
// client (empty: none, no per-client cap). On a match the code is deleted
// in the same atomic step, so it verifies only once. It returns ErrNotFound
// when there is no live code, ErrMismatch when code is wrong,
// ErrAttemptsExhausted when it is wrong for the MaxAttempts-th time, which
// deletes the live code, and a *LimitError (LimitClientVerify) when the
// client has used up its verifies; every verify request counts against it.
func (s *Store) Verify(ctx context.Context, email, code, client string) error {
	l := s.cfg.Limits
	clientCap := l.ClientVerifiesPerHour
	if client == "" {
		clientCap = 0
	}
	nonce, err := s.nonce()
	if err != nil {
		return fmt.Errorf("verify code: %w", err)
	}
	res, err := verify.Run(ctx, s.rdb, []string{s.Key(email), s.AttemptsKey(email), verifyKey(client), s.StatusKey(email)},
		code, l.MaxAttempts, clientCap, LimitWindow.Milliseconds(), s.Now().UnixMilli(), nonce).Int64Slice()
	if err != nil {
		return fmt.Errorf("verify code: %w", err)
	}
	if len(res) == 0 {
		return errors.New("verify code: empty reply")
	}
	switch res[0] {
	case 0:
		return ErrNotFound
	case 1:
		return nil
	case 3:
		return ErrAttemptsExhausted
	case 4:
		var ms int64
		if len(res) > 1 {
			ms = res[1]
		}
		return &LimitError{Limit: LimitClientVerify, RetryAfter: time.Duration(ms) * time.Millisecond}
	default:
		return ErrMismatch
	}
}

// Generate returns a code of length decimal digits read from r (crypto/rand
// in production). Each digit is uniform: bytes of 250 and above are rejected
// rather than reduced modulo 10, which would favour the low digits.
func Generate(r io.Reader, length int) (string, error) {
	var b strings.Builder
	b.Grow(length)
	buf := make([]byte, length+8)
	for b.Len() < length {
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", fmt.Errorf("generate code: %w", err)
		}
		for _, c := range buf {
			if c >= 250 {
				continue
			}
			b.WriteByte('0' + c%10)
			if b.Len() == length {
				break
			}
		}
	}
	return b.String(), nil
}
