// Package codes owns verification codes: how they are generated, how long
// they live, and the Redis scripts that create, read and consume them.
//
// The Redis layout is the one the old gateway reads directly: the key is
// KeyPrefix followed by the address exactly as the client sent it (no
// trimming, no case folding), the value is the plain code, and the key
// expires after TTL. Every operation that reads and writes is a single Lua
// script, so each is atomic and costs one round trip.
package codes

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Expected outcomes. Any other error from a Store is a Redis failure.
var (
	// ErrNotFound means the address has no live code: it was never
	// requested, it expired, or it was already used.
	ErrNotFound = errors.New("no live code for this address")
	// ErrMismatch means a live code exists and the given one is not it.
	ErrMismatch = errors.New("wrong code")
)

// Defaults of Config.
const (
	DefaultKeyPrefix = "code_"
	DefaultTTL       = 10 * time.Minute
	DefaultLength    = 6
	MinLength        = 4
	MaxLength        = 10
)

// Config says how codes look and how long they live.
type Config struct {
	// KeyPrefix is put before the address to make the Redis key.
	KeyPrefix string
	// TTL is the lifetime of a new code.
	TTL time.Duration
	// Length is the number of decimal digits of a new code.
	Length int
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.KeyPrefix == "" {
		errs = append(errs, errors.New("key prefix must not be empty"))
	}
	if c.TTL < time.Second {
		errs = append(errs, fmt.Errorf("ttl %s is shorter than 1s", c.TTL))
	}
	if c.Length < MinLength || c.Length > MaxLength {
		errs = append(errs, fmt.Errorf("length %d is outside %d..%d", c.Length, MinLength, MaxLength))
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
}

// Store keeps codes in Redis.
type Store struct {
	rdb  redis.Scripter
	cfg  Config
	rand io.Reader
}

// NewStore returns a Store that uses rdb. cfg is validated.
func NewStore(rdb redis.Scripter, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Store{rdb: rdb, cfg: cfg, rand: rand.Reader}, nil
}

// Key is the Redis key of the code for email, as the old gateway reads it.
func (s *Store) Key(email string) string { return s.cfg.KeyPrefix + email }

// getOrCreate returns the live code with its remaining lifetime in ms, or
// stores ARGV[1] with lifetime ARGV[2] ms. A live code is never extended; a
// key without expiry (left by an older writer that crashed between SET and
// EXPIRE) or with one longer than the configured lifetime is given the
// configured lifetime.
var getOrCreate = redis.NewScript(`
local code = redis.call('GET', KEYS[1])
local ttl = tonumber(ARGV[2])
if code then
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 or left > ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
    left = ttl
  end
  return {code, left, 0}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
return {ARGV[1], ttl, 1}
`)

// GetOrCreate returns the live code for email, or creates one, in one atomic
// step. A repeat within the lifetime returns the same code and its remaining
// lifetime and does not extend it.
func (s *Store) GetOrCreate(ctx context.Context, email string) (Issued, error) {
	fresh, err := Generate(s.rand, s.cfg.Length)
	if err != nil {
		return Issued{}, err
	}
	res, err := getOrCreate.Run(ctx, s.rdb, []string{s.Key(email)}, fresh, s.cfg.TTL.Milliseconds()).Slice()
	if err != nil {
		return Issued{}, fmt.Errorf("get or create code: %w", err)
	}
	if len(res) != 3 {
		return Issued{}, fmt.Errorf("get or create code: unexpected reply of %d values", len(res))
	}
	code, _ := res[0].(string)
	left, _ := res[1].(int64)
	created, _ := res[2].(int64)
	return Issued{Code: code, ExpiresIn: time.Duration(left) * time.Millisecond, Created: created == 1}, nil
}

// peek returns the code and its remaining lifetime in ms, or false.
var peek = redis.NewScript(`
local code = redis.call('GET', KEYS[1])
if not code then return false end
return {code, redis.call('PTTL', KEYS[1])}
`)

// Peek returns the live code for email and its remaining lifetime, or
// ErrNotFound. It changes nothing.
func (s *Store) Peek(ctx context.Context, email string) (string, time.Duration, error) {
	res, err := peek.Run(ctx, s.rdb, []string{s.Key(email)}).Slice()
	if errors.Is(err, redis.Nil) {
		return "", 0, ErrNotFound
	}
	if err != nil {
		return "", 0, fmt.Errorf("read code: %w", err)
	}
	code, _ := res[0].(string)
	left, _ := res[1].(int64)
	if left == -2 { // expired between GET and PTTL: cannot happen inside a script, kept for safety
		return "", 0, ErrNotFound
	}
	if left < 0 {
		left = s.cfg.TTL.Milliseconds()
	}
	return code, time.Duration(left) * time.Millisecond, nil
}

// verify compares ARGV[1] with the live code in constant time (every byte is
// looked at whatever the first difference) and deletes the code on a match,
// so a code is used once. Replies: 0 no code, 1 match (consumed), 2 mismatch.
var verify = redis.NewScript(`
local code = redis.call('GET', KEYS[1])
if not code then return 0 end
local given = ARGV[1]
local diff = 0
if #code ~= #given then diff = 1 end
for i = 1, #code do
  diff = bit.bor(diff, bit.bxor(string.byte(code, i), string.byte(given, i) or 0))
end
if diff ~= 0 then return 2 end
redis.call('DEL', KEYS[1])
return 1
`)

// Verify checks code against the live code for email. On a match the code is
// deleted in the same atomic step, so it verifies only once. It returns
// ErrNotFound when there is no live code and ErrMismatch when code is wrong.
func (s *Store) Verify(ctx context.Context, email, code string) error {
	n, err := verify.Run(ctx, s.rdb, []string{s.Key(email)}, code).Int64()
	if err != nil {
		return fmt.Errorf("verify code: %w", err)
	}
	switch n {
	case 0:
		return ErrNotFound
	case 1:
		return nil
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
