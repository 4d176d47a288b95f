package codes

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Reader reads live codes and changes nothing. It needs only the key
// prefix: it neither makes codes nor knows their configured lifetime, which
// is all the worker needs.
type Reader struct {
	rdb    redis.Scripter
	prefix string
}

// NewReader returns a Reader of the codes under keyPrefix in rdb. keyPrefix
// is checked with ValidateKeyPrefix.
func NewReader(rdb redis.Scripter, keyPrefix string) (*Reader, error) {
	if err := ValidateKeyPrefix(keyPrefix); err != nil {
		return nil, err
	}
	return &Reader{rdb: rdb, prefix: keyPrefix}, nil
}

// Key is the Redis key of id's code: for the default purpose the prefix and
// the address, as the old gateway reads it; for a named one the prefix, the
// purpose, ":" and the address.
func (r *Reader) Key(id ID) string {
	if id.Purpose == "" {
		return r.prefix + id.Email
	}
	return r.prefix + id.Purpose + ":" + id.Email
}

// Live is a live code as Peek finds it.
type Live struct {
	// Code is the code, or its MAC when codes are sealed (Seal). It must
	// never be logged or returned to a caller.
	Code string
	// ExpiresIn is the code's remaining lifetime; zero when NoExpiry.
	ExpiresIn time.Duration
	// NoExpiry is true when the key has no expiry: an older writer that
	// crashed between SET and EXPIRE left it so. The next send gives it the
	// configured lifetime; until then the reader cannot know how long the
	// code lives.
	NoExpiry bool
}

// peek returns the code and its remaining lifetime in ms (-1: no expiry),
// or false.
var peek = redis.NewScript(`
local code = redis.call('GET', KEYS[1])
if not code then return false end
return {code, redis.call('PTTL', KEYS[1])}
`)

// Peek returns the live code of id, or ErrNotFound. It changes nothing
// and costs one round trip.
func (r *Reader) Peek(ctx context.Context, id ID) (Live, error) {
	res, err := peek.Run(ctx, r.rdb, []string{r.Key(id)}).Slice()
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
	switch {
	case left == -1:
		return Live{Code: code, NoExpiry: true}, nil
	case left < 0: // -2, no key: cannot happen inside the script, kept for safety
		return Live{}, ErrNotFound
	}
	return Live{Code: code, ExpiresIn: time.Duration(left) * time.Millisecond}, nil
}
