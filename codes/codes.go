// Package codes owns verification codes: how they are generated, how long
// they live, the limits on sending and guessing them, and the Redis scripts
// that create, read and consume them.
//
// The Redis layout is the one the old gateway reads directly: the key is
// KeyPrefix followed by the address exactly as the client sent it (no
// trimming, no case folding), the value is the plain code, and the key
// expires after TTL. A named purpose's code has a key of its own (see ID).
// With Config.Seal the value is the code's HMAC instead (see Seal). Every operation that reads and writes is made of Lua
// scripts, each atomic in its slot.
//
// Keys of verifyq's own, each named after the Redis Cluster slot it lives
// in (see keys.go): beside the code, {code_<email>}:attempts (the wrong-code
// count) and {code_<email>}:status (the delivery status, see Status), the
// only keys besides the code's that hold the address; per mailbox (named by
// a hash, MailboxID) its cooldown, hour of sends and suppression; per client
// its hours of sends and verifies; and the minute counters per domain and
// of all sends. Each script touches one slot, so verifyq runs on one Redis,
// on Sentinel and on Redis Cluster alike; the send step is a pipeline of one
// script per slot (see GetOrCreate).
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
	// Purposes are the purposes besides the default one (see ID), each
	// with its own lifetime; zero means TTL. A request for any other
	// purpose fails with ErrInvalidPurpose. Nil means DefaultPurposes,
	// each with TTL; an empty map, the default purpose alone.
	Purposes map[string]time.Duration
	// Seal, when set, keeps codes sealed at rest (CODE_STORAGE=sealed):
	// the code key holds the code's MAC, not the code, so a gateway that
	// reads it cannot work; nil keeps the plain code (see Seal).
	Seal *Seal
}

// Validate reports every problem with c at once. Each is a *field.Error
// named after the field (Limits' fields by their own names), so a binary
// can report it under its environment variable.
func (c Config) Validate() error {
	return errors.Join(ValidateKeyPrefix(c.KeyPrefix), ValidateTTL(c.TTL), ValidateLength(c.Length), c.Limits.Validate(),
		c.Identity.Validate(), ValidatePurposes(c.Purposes))
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
	// Sealed is Code encrypted for the task that mails it (Seal.Encrypt),
	// when codes are sealed; empty otherwise.
	Sealed string
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

	// admitted is what the request recorded, for Undo.
	admitted []undoCall
}

// Store keeps codes in Redis: it creates, reads (its Reader's Peek) and
// consumes them.
type Store struct {
	*Reader
	rdb  redis.UniversalClient
	cfg  Config
	rand io.Reader
	// Now is the clock of the rolling windows; tests replace it.
	Now func() time.Time
}

// NewStore returns a Store that uses rdb. cfg is validated with
// Config.Validate.
func NewStore(rdb redis.UniversalClient, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Purposes == nil {
		cfg.Purposes = make(map[string]time.Duration, len(DefaultPurposes))
		for _, p := range DefaultPurposes {
			cfg.Purposes[p] = 0
		}
	}
	return &Store{Reader: &Reader{rdb: rdb, prefix: cfg.KeyPrefix}, rdb: rdb, cfg: cfg, rand: rand.Reader, Now: time.Now}, nil
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

// verify compares each candidate (the code, or its MAC under each secret
// when sealed) with the live value in constant time (every byte is looked
// at whatever the first difference) and deletes the code, its attempts and
// its status on a match, so a code is used once. A wrong code counts an
// attempt; the ARGV[1]th (when above 0) deletes the code.
//
// KEYS: code, attempts, status (all in the code's slot). ARGV: max
// attempts, then the candidates. Replies: 0 no code, 1 match (consumed), 2
// mismatch, 3 mismatch that used up the attempts.
var verify = redis.NewScript(`
local code = redis.call('GET', KEYS[1])
if not code then return 0 end
local match = false
for j = 2, #ARGV do
  local given = ARGV[j]
  local diff = 0
  if #code ~= #given then diff = 1 end
  for i = 1, #code do
    diff = bit.bor(diff, bit.bxor(string.byte(code, i), string.byte(given, i) or 0))
  end
  if diff == 0 then match = true end
end
if match then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return 1
end
local n = redis.call('INCR', KEYS[2])
local max = tonumber(ARGV[1])
if max > 0 and n >= max then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 3
end
local left = redis.call('PTTL', KEYS[1])
if left > 0 then redis.call('PEXPIRE', KEYS[2], left) end
return 2
`)

// Verify checks code against the live code of id, for the end user's
// client (empty: none, no per-client cap): one round trip, two when the
// client's verify cap applies. On a match the code is deleted
// in the same atomic step, so it verifies only once. It returns ErrNotFound
// when there is no live code, ErrMismatch when code is wrong,
// ErrAttemptsExhausted when it is wrong for the MaxAttempts-th time, which
// deletes the live code, and a *LimitError (LimitClientVerify) when the
// client has used up its verifies; every verify request counts against it.
// A purpose that is not configured fails with ErrInvalidPurpose.
func (s *Store) Verify(ctx context.Context, id ID, code, client string) error {
	if err := s.cfg.checkPurpose(id.Purpose); err != nil {
		return err
	}
	l := s.cfg.Limits
	if client != "" && l.ClientVerifiesPerHour > 0 {
		// The client's window lives in the client's slot: a round trip of
		// its own, before the code's script, which must not run for a
		// client over its cap.
		nonce, err := s.nonce()
		if err != nil {
			return fmt.Errorf("verify code: %w", err)
		}
		res, err := window.Run(ctx, s.rdb, []string{ClientVerifyKey(client)},
			s.Now().UnixMilli(), nonce, l.ClientVerifiesPerHour, LimitWindow.Milliseconds(), LimitClientVerify).Slice()
		if err != nil {
			return fmt.Errorf("verify code: %w", err)
		}
		if len(res) == 3 && res[0] == "limited" {
			ms, _ := res[2].(int64)
			return &LimitError{Limit: LimitClientVerify, RetryAfter: time.Duration(ms) * time.Millisecond}
		}
	}
	args := []any{l.MaxAttempts, code}
	if s.cfg.Seal != nil {
		args = args[:1]
		for _, mac := range s.cfg.Seal.MACs(id, code) {
			args = append(args, mac)
		}
	}
	n, err := verify.Run(ctx, s.rdb, []string{s.Key(id), s.AttemptsKey(id), s.StatusKey(id)}, args...).Int64()
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

// Status reads the delivery status of id's code (Reader.Status); a
// purpose that is not configured fails with ErrInvalidPurpose.
func (s *Store) Status(ctx context.Context, id ID, now time.Time) (Status, error) {
	if err := s.cfg.checkPurpose(id.Purpose); err != nil {
		return Status{}, err
	}
	return s.Reader.Status(ctx, id, now)
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
