// Package codes owns the verification code itself: its ID and purpose, the
// keys of its Redis Cluster slot, how it is generated, issued (got or
// created), verified (wrong attempts counted, used once), peeked at, and
// sealed at rest.
//
// The Redis layout is the one the old gateway reads directly: the key is
// KeyPrefix followed by the address exactly as the client sent it (no
// trimming, no case folding), the value is the plain code, and the key
// expires after TTL. A named purpose's code has a key of its own (see ID).
// With Config.Seal the value is the code's HMAC instead (see Seal). Every
// operation that reads and writes is one Lua script (a .lua file of this
// package), atomic in the code's slot.
//
// Beside the code, in its slot (see Keys): {code_<email>}:attempts (the
// wrong-code count) and {code_<email>}:status (the delivery status, which
// package delivery reads and records; issuing marks it queued, verifying
// deletes it). These are the only keys that hold the address. The send
// limits (package limits) run the issue script as the last part of their
// pipeline, one script per slot.
package codes

import (
	"context"
	"crypto/rand"
	_ "embed" // the scripts
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
)

// Defaults of Config.
const (
	DefaultKeyPrefix   = "code_"
	DefaultTTL         = 10 * time.Minute
	MinTTL             = time.Second
	DefaultLength      = 6
	MinLength          = 4
	MaxLength          = 10
	DefaultMaxAttempts = 5
)

// Config says how codes look and how long they live.
type Config struct {
	// KeyPrefix is put before the address to make the Redis key.
	KeyPrefix string
	// TTL is the lifetime of a new code.
	TTL time.Duration
	// Length is the number of decimal digits of a new code.
	Length int
	// MaxAttempts is how many wrong codes invalidate the live code; 0
	// turns the cap off.
	MaxAttempts int
	// Purposes are the purposes besides the default one (see ID), each
	// with its own lifetime; zero means TTL. A request for any other
	// purpose fails with ErrInvalidPurpose. Nil means DefaultPurposes,
	// each with TTL; an empty map, the default purpose alone.
	Purposes map[string]time.Duration
	// Seal, when set, keeps codes sealed at rest (CODE_SECRET set):
	// the code key holds the code's MAC, not the code, so a gateway that
	// reads it cannot work; nil keeps the plain code (see Seal).
	Seal *Seal
}

// Validate reports every problem with c at once. Each is a *field.Error
// named after the field, so a binary can report it under its environment
// variable.
func (c Config) Validate() error {
	return errors.Join(ValidateKeyPrefix(c.KeyPrefix), ValidateTTL(c.TTL), ValidateLength(c.Length),
		ValidateMaxAttempts(c.MaxAttempts), ValidatePurposes(c.Purposes))
}

// ValidateMaxAttempts checks Config.MaxAttempts (field "MaxAttempts"): not
// negative.
func ValidateMaxAttempts(n int) error {
	if n < 0 {
		return field.Errorf("MaxAttempts", "must not be negative (0 turns the limit off)")
	}
	return nil
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

// Store keeps codes in Redis: it issues, peeks at and verifies them.
type Store struct {
	Keys
	rdb  redis.UniversalClient
	cfg  Config
	rand io.Reader
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
	return &Store{Keys: Keys{prefix: cfg.KeyPrefix}, rdb: rdb, cfg: cfg, rand: rand.Reader}, nil
}

// Check returns an error wrapping ErrInvalidPurpose unless id's purpose is
// the default one or configured.
func (s *Store) Check(id ID) error {
	if id.Purpose == "" {
		return nil
	}
	if _, ok := s.cfg.Purposes[id.Purpose]; !ok {
		return fmt.Errorf("%w: %q", ErrInvalidPurpose, cut(id.Purpose))
	}
	return nil
}

// verify compares the candidates with the live value in constant time and
// consumes the code on a match; see verify.lua.
//
//go:embed verify.lua
var verifySrc string
var verify = redis.NewScript(verifySrc)

// Verify checks code against the live code of id, in one round trip. On a
// match the code is deleted in the same atomic step, so it verifies only
// once. It returns ErrNotFound when there is no live code, ErrMismatch when
// code is wrong, ErrAttemptsExhausted when it is wrong for the
// MaxAttempts-th time, which deletes the live code. A purpose that is not
// configured fails with ErrInvalidPurpose. The per-client verify cap is
// package limits'.
func (s *Store) Verify(ctx context.Context, id ID, code string) error {
	_, err := s.verify(ctx, id, code, false)
	return err
}

// VerifyTask is Verify that also names the send whose code it verified or
// exhausted: the task the code's status named ("" when none, and for any
// other outcome), for the events that report it. The same round trip.
func (s *Store) VerifyTask(ctx context.Context, id ID, code string) (string, error) {
	return s.verify(ctx, id, code, true)
}

// ExhaustedField is the field of the status (StatusKey) that the verify
// script sets when a wrong code used up the attempts and deleted the code.
const ExhaustedField = "exhausted"

func (s *Store) verify(ctx context.Context, id ID, code string, named bool) (string, error) {
	if err := s.Check(id); err != nil {
		return "", err
	}
	args := []any{s.cfg.MaxAttempts, code}
	if s.cfg.Seal != nil {
		args = args[:1]
		for _, mac := range s.cfg.Seal.MACs(id, code) {
			args = append(args, mac)
		}
	}
	keys := []string{s.Key(id), s.AttemptsKey(id), s.StatusKey(id)}
	if named {
		keys = append(keys, keys[2])
	}
	res, err := verify.Run(ctx, s.rdb, keys, args...).Result()
	if err != nil {
		return "", fmt.Errorf("verify code: %w", err)
	}
	n, _ := res.(int64)
	task := ""
	if pair, ok := res.([]any); ok && len(pair) == 2 {
		n, _ = pair[0].(int64)
		task, _ = pair[1].(string)
	}
	switch n {
	case 0:
		return "", ErrNotFound
	case 1:
		return task, nil
	case 3:
		return task, ErrAttemptsExhausted
	default:
		return "", ErrMismatch
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
