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
// Keys of verifyq's own: {code_<email>}:attempts (the wrong-code count; its
// hash tag keeps it on the code key's Redis Cluster slot), and
// verifyq:limit:cooldown:<email>, verifyq:limit:address:<email> (both with
// the address in lower case) and verifyq:limit:client:<ip> for the send
// limits. The send script uses the limit keys together with the code key, so
// it needs a single Redis (or a primary with replicas), not Redis Cluster:
// a case-insensitive or per-client key cannot share the slot of a code key
// that keeps the address's case.
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

// Names of the send limits, as LimitError.Limit reports them.
const (
	LimitCooldown = "cooldown"
	LimitAddress  = "address"
	LimitClient   = "client"
)

// LimitError says a send was refused by a limit and when to try again.
type LimitError struct {
	// Limit is LimitCooldown, LimitAddress or LimitClient.
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
)

// LimitWindow is the rolling window of the per-address and per-client caps.
const LimitWindow = time.Hour

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
	// MaxAttempts is how many wrong codes invalidate the live code.
	MaxAttempts int
}

// DefaultLimits are the limits verifyq runs with unless configured.
func DefaultLimits() Limits {
	return Limits{
		Cooldown:       DefaultCooldown,
		AddressPerHour: DefaultAddressPerHour,
		ClientPerHour:  DefaultClientPerHour,
		MaxAttempts:    DefaultMaxAttempts,
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
}

// Validate reports every problem with c at once. Each is a *field.Error
// named after the field (Limits' fields by their own names), so a binary
// can report it under its environment variable.
func (c Config) Validate() error {
	return errors.Join(ValidateKeyPrefix(c.KeyPrefix), ValidateTTL(c.TTL), ValidateLength(c.Length), c.Limits.Validate())
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
		{"MaxAttempts", l.MaxAttempts < 0},
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

// attemptsKey counts wrong codes for the live code. Its hash tag is the code
// key, so a script that uses both runs on one Redis Cluster slot.
func (s *Store) attemptsKey(email string) string { return "{" + s.Key(email) + "}:attempts" }

// Limit keys. The address is folded to lower case so that case variants of
// one mailbox share its limits; the code key keeps the address as sent.
func (s *Store) cooldownKey(email string) string {
	return "verifyq:limit:cooldown:" + strings.ToLower(email)
}

func (s *Store) addressKey(email string) string {
	return "verifyq:limit:address:" + strings.ToLower(email)
}

func clientKey(client string) string { return "verifyq:limit:client:" + client }

// getOrCreate decides the send limits and gets or creates the code in one
// atomic step.
//
// KEYS: code, attempts, cooldown, address window, client window (optional).
// ARGV: new code, ttl ms, cooldown ms, address cap, client cap, window ms,
// now ms, a unique member for the windows.
//
// A refused send changes nothing and returns {"limited", name, retry ms}. An
// admitted one records itself in the cooldown and both windows, then returns
// the live code with its remaining lifetime in ms, or stores ARGV[1]. A live
// code is never extended; a key without expiry (left by an older writer that
// crashed between SET and EXPIRE) or with one longer than the configured
// lifetime is given the configured lifetime. A new code starts with no wrong
// attempts; a resent one keeps its count.
var getOrCreate = redis.NewScript(`
local ttl, cooldown = tonumber(ARGV[2]), tonumber(ARGV[3])
local caps = {tonumber(ARGV[4]), tonumber(ARGV[5])}
local window, now = tonumber(ARGV[6]), tonumber(ARGV[7])

if cooldown > 0 then
  local left = redis.call('PTTL', KEYS[3])
  if left > 0 then return {'limited', 'cooldown', left} end
end
local names = {'address', 'client'}
for i = 1, 2 do
  local key = KEYS[3 + i]
  if key and caps[i] > 0 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    if redis.call('ZCARD', key) >= caps[i] then
      local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      return {'limited', names[i], math.max(tonumber(oldest[2]) + window - now, 1)}
    end
  end
end
if cooldown > 0 then redis.call('SET', KEYS[3], '1', 'PX', cooldown) end
for i = 1, 2 do
  local key = KEYS[3 + i]
  if key and caps[i] > 0 then
    redis.call('ZADD', key, now, ARGV[8])
    redis.call('PEXPIRE', key, window)
  end
end

local code = redis.call('GET', KEYS[1])
if code then
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 or left > ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
    left = ttl
  end
  return {code, left, 0}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('DEL', KEYS[2])
return {ARGV[1], ttl, 1}
`)

// GetOrCreate returns the live code for email, or creates one, in one atomic
// step that first applies the send limits; client identifies the end user's
// client for the per-client cap and may be empty (no per-client cap). A
// refused send returns a *LimitError and changes nothing. A repeat within the
// lifetime returns the same code and its remaining lifetime and does not
// extend it.
func (s *Store) GetOrCreate(ctx context.Context, email, client string) (Issued, error) {
	fresh, err := Generate(s.rand, s.cfg.Length)
	if err != nil {
		return Issued{}, err
	}
	var nonce [12]byte
	if _, err := io.ReadFull(s.rand, nonce[:]); err != nil {
		return Issued{}, fmt.Errorf("get or create code: %w", err)
	}
	l := s.cfg.Limits
	keys := []string{s.Key(email), s.attemptsKey(email), s.cooldownKey(email), s.addressKey(email)}
	if client != "" {
		keys = append(keys, clientKey(client))
	}
	res, err := getOrCreate.Run(ctx, s.rdb, keys,
		fresh, s.cfg.TTL.Milliseconds(), l.Cooldown.Milliseconds(), l.AddressPerHour, l.ClientPerHour,
		LimitWindow.Milliseconds(), s.Now().UnixMilli(), hex.EncodeToString(nonce[:])).Slice()
	if err != nil {
		return Issued{}, fmt.Errorf("get or create code: %w", err)
	}
	if len(res) != 3 {
		return Issued{}, fmt.Errorf("get or create code: unexpected reply of %d values", len(res))
	}
	if res[0] == "limited" {
		name, _ := res[1].(string)
		ms, _ := res[2].(int64)
		return Issued{}, &LimitError{Limit: name, RetryAfter: time.Duration(ms) * time.Millisecond}
	}
	code, _ := res[0].(string)
	left, _ := res[1].(int64)
	created, _ := res[2].(int64)
	return Issued{
		Code:        code,
		ExpiresIn:   time.Duration(left) * time.Millisecond,
		Created:     created == 1,
		ResendAfter: l.Cooldown,
	}, nil
}

// verify compares ARGV[1] with the live code in constant time (every byte is
// looked at whatever the first difference) and deletes the code on a match,
// so a code is used once. A wrong code counts an attempt; the ARGV[2]th
// (when above 0) deletes the code. Replies: 0 no code, 1 match (consumed),
// 2 mismatch, 3 mismatch that used up the attempts.
var verify = redis.NewScript(`
local code = redis.call('GET', KEYS[1])
if not code then return 0 end
local given = ARGV[1]
local diff = 0
if #code ~= #given then diff = 1 end
for i = 1, #code do
  diff = bit.bor(diff, bit.bxor(string.byte(code, i), string.byte(given, i) or 0))
end
if diff == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
local n = redis.call('INCR', KEYS[2])
local max = tonumber(ARGV[2])
if max > 0 and n >= max then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 3
end
local left = redis.call('PTTL', KEYS[1])
if left > 0 then redis.call('PEXPIRE', KEYS[2], left) end
return 2
`)

// Verify checks code against the live code for email. On a match the code is
// deleted in the same atomic step, so it verifies only once. It returns
// ErrNotFound when there is no live code, ErrMismatch when code is wrong,
// and ErrAttemptsExhausted when it is wrong for the MaxAttempts-th time,
// which deletes the live code.
func (s *Store) Verify(ctx context.Context, email, code string) error {
	n, err := verify.Run(ctx, s.rdb, []string{s.Key(email), s.attemptsKey(email)}, code, s.cfg.Limits.MaxAttempts).Int64()
	if err != nil {
		return fmt.Errorf("verify code: %w", err)
	}
	switch n {
	case 0:
		return ErrNotFound
	case 1:
		return nil
	case 3:
		return ErrAttemptsExhausted
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
