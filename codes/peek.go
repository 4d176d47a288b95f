package codes

import (
	"context"
	_ "embed" // the script
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Live is a live code as Peek finds it.
type Live struct {
	// Code is the code, or its MAC when codes are sealed (Seal). It must
	// never be logged or returned to a caller.
	Code string
	// ExpiresIn is the code's remaining lifetime; zero when NoExpiry.
	ExpiresIn time.Duration
	// NoExpiry is true when the key has no expiry: an older writer that
	// crashed between SET and EXPIRE left it so. The next send gives it the
	// configured lifetime; until then a reader cannot know how long the
	// code lives.
	NoExpiry bool
}

// LiveOf is the Live of value with ms milliseconds left, as PTTL reports
// them (-1: no expiry).
func LiveOf(value string, ms int64) Live {
	if ms == -1 {
		return Live{Code: value, NoExpiry: true}
	}
	return Live{Code: value, ExpiresIn: time.Duration(ms) * time.Millisecond}
}

//go:embed peek.lua
var peekSrc string
var peek = redis.NewScript(peekSrc)

// Peek returns the live code of id, or ErrNotFound. It changes nothing
// and costs one round trip.
func (s *Store) Peek(ctx context.Context, id ID) (Live, error) {
	res, err := peek.Run(ctx, s.rdb, []string{s.Key(id)}).Slice()
	if errors.Is(err, redis.Nil) {
		return Live{}, ErrNotFound
	}
	if err != nil {
		return Live{}, fmt.Errorf("read code: %w", err)
	}
	if len(res) != 2 {
		return Live{}, fmt.Errorf("read code: unexpected reply of %d values", len(res))
	}
	code, _ := res[0].(string)
	left, _ := res[1].(int64)
	if left < -1 { // -2, no key: cannot happen inside the script, kept for safety
		return Live{}, ErrNotFound
	}
	return LiveOf(code, left), nil
}
