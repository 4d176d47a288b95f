package codes

import (
	"context"
	_ "embed" // the scripts
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/internal/script"
)

// StatusLinger is how long a delivery status outlives its code, so that a
// gateway or support can still see "expired" or "undeliverable" after the
// code is gone.
const StatusLinger = 15 * time.Minute

var (
	//go:embed issue.lua
	issueSrc string
	//go:embed unissue.lua
	unissueSrc string

	issueScript   = redis.NewScript(issueSrc)
	unissueScript = redis.NewScript(unissueSrc)
)

// Issued is the outcome of issuing a code.
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
}

// Issue is one get-or-create of a code, made ready to run as a script call
// (Call) in a pipeline of other slots' calls; Result reads its reply.
type Issue struct {
	id     ID
	keys   []string
	fresh  string // the new code
	value  string // what Redis keeps of it: the code or its MAC
	sealed string
	nonce  string
	call   script.Call
}

// Issue prepares the get-or-create of id's code at now: a new code is
// generated, used only if id has no live code. A purpose that is not
// configured fails with ErrInvalidPurpose.
func (s *Store) Issue(id ID, now time.Time) (*Issue, error) {
	if err := s.Check(id); err != nil {
		return nil, err
	}
	fresh, err := Generate(s.rand, s.cfg.Length)
	if err != nil {
		return nil, err
	}
	var b [12]byte
	if _, err := io.ReadFull(s.rand, b[:]); err != nil {
		return nil, fmt.Errorf("issue code: %w", err)
	}
	is := &Issue{id: id, fresh: fresh, value: fresh, nonce: hex.EncodeToString(b[:]),
		keys: []string{s.Key(id), s.AttemptsKey(id), s.StatusKey(id)}}
	replace := "0"
	if s.cfg.Seal != nil {
		is.value = s.cfg.Seal.MAC(id, fresh)
		if is.sealed, err = s.cfg.Seal.Encrypt(s.rand, id, fresh); err != nil {
			return nil, err
		}
		replace = "1"
	}
	is.call = script.Call{Script: issueScript, Keys: is.keys, Args: []any{is.value, s.cfg.TTLOf(id.Purpose).Milliseconds(),
		is.nonce, now.UnixMilli(), StatusLinger.Milliseconds(), replace}}
	return is, nil
}

// Call is the script call of the issue, all of its keys in the code's
// slot.
func (is *Issue) Call() script.Call { return is.call }

// Result reads the issue's reply and returns what was issued and the
// script call that takes it back (see Store.GetOrCreate).
func (is *Issue) Result(reply []any) (Issued, script.Call, error) {
	if len(reply) != 6 {
		return Issued{}, script.Call{}, fmt.Errorf("issue code: unexpected reply of %d values", len(reply))
	}
	str := func(i int) string { v, _ := reply[i].(string); return v }
	left, _ := reply[1].(int64)
	created, _ := reply[2].(int64)
	issued := Issued{Code: str(0), Sealed: is.sealed, ExpiresIn: time.Duration(left) * time.Millisecond, Created: created == 1}
	if is.sealed != "" {
		issued.Code = is.fresh // the live value is its MAC
	}
	undo := script.Call{Script: unissueScript, Keys: is.keys,
		Args: []any{is.nonce, created, is.value, str(3), str(4), str(5)}}
	return issued, undo, nil
}

// GetOrCreate returns the live code of id, or creates one, in one round
// trip, and marks its delivery status queued. A repeat within the lifetime
// returns the same code and its remaining lifetime and does not extend it;
// with sealed codes (Config.Seal) it returns a new code that replaces the
// live one for the rest of its lifetime, since the live one cannot be read
// back. It checks no limit: a send goes through package limits, which runs
// the same script after its own.
func (s *Store) GetOrCreate(ctx context.Context, id ID) (Issued, error) {
	is, err := s.Issue(id, time.Now())
	if err != nil {
		return Issued{}, err
	}
	reply, err := is.call.Script.Run(ctx, s.rdb, is.call.Keys, is.call.Args...).Slice()
	if err != nil {
		return Issued{}, fmt.Errorf("get or create code: %w", err)
	}
	issued, _, err := is.Result(reply)
	return issued, err
}
