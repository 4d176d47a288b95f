package codes

import (
	"context"
	_ "embed" // the scripts
	"encoding/hex"
	"fmt"
	"io"
	"slices"
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
	// Held is true when a tentative issue (Issue.Tentative) found a live
	// code and wrote nothing: only ExpiresIn is set, and the send issues
	// again (Issue.Call) once it is admitted.
	Held bool
}

// Send names the send that issues a code, for the code's delivery status:
// the task that will mail the code, and what a task needs that the code's
// slot would not hold otherwise, so that a send whose task was lost can be
// queued again from its status alone (package reconcile).
type Send struct {
	// Task is the ID of the task that will mail the code; it names the
	// send in the status, and taking the send back checks it. Empty: a
	// send without a task (GetOrCreate), named by a random nonce, as
	// older versions named every send.
	Task string
	// Queue is the task's queue.
	Queue string
	// Locale is the mail's language; empty is the default.
	Locale string
}

// Issue is one get-or-create of a code, made ready to run as a script call
// (Call) in a pipeline of other slots' calls; Result reads its reply.
type Issue struct {
	id     ID
	keys   []string
	fresh  string // the new code
	value  string // what Redis keeps of it: the code or its MAC
	sealed string
	owner  [2]string // the status field that names the send, and its value
	args   []any     // the script's arguments but the last (hold)
}

// Issue prepares the get-or-create of id's code at now for send: a new
// code is generated, used only if id has no live code. A purpose that is
// not configured fails with ErrInvalidPurpose.
func (s *Store) Issue(id ID, now time.Time, send Send) (*Issue, error) {
	if err := s.Check(id); err != nil {
		return nil, err
	}
	fresh, err := Generate(s.rand, s.cfg.Length)
	if err != nil {
		return nil, err
	}
	owner := [2]string{"task", send.Task}
	if send.Task == "" {
		var b [12]byte
		if _, err := io.ReadFull(s.rand, b[:]); err != nil {
			return nil, fmt.Errorf("issue code: %w", err)
		}
		owner = [2]string{"nonce", hex.EncodeToString(b[:])}
	}
	is := &Issue{id: id, fresh: fresh, value: fresh, owner: owner,
		keys: []string{s.Key(id), s.AttemptsKey(id), s.StatusKey(id)}}
	replace := "0"
	if s.cfg.Seal != nil {
		is.value = s.cfg.Seal.MAC(id, fresh)
		if is.sealed, err = s.cfg.Seal.Encrypt(s.rand, id, fresh); err != nil {
			return nil, err
		}
		replace = "1"
	}
	// Room for the last argument: Tentative, which every send runs,
	// appends it in place; Call, which runs less often, to a copy.
	is.args = make([]any, 0, 11)
	is.args = append(is.args, is.value, s.cfg.TTLOf(id.Purpose).Milliseconds(),
		owner[0], owner[1], now.UnixMilli(), StatusLinger.Milliseconds(), replace, send.Queue, send.Locale, is.sealed)
	return is, nil
}

// callWith is the script call of the issue with args.
func (is *Issue) callWith(args []any) script.Call {
	return script.Call{Script: issueScript, Keys: is.keys, Args: args}
}

// TTLOf is the lifetime of a new code of purpose (Config.TTLOf): no live
// code of it lives longer.
func (s *Store) TTLOf(purpose string) time.Duration { return s.cfg.TTLOf(purpose) }

// Call is the script call of the issue, all of its keys in the code's
// slot.
func (is *Issue) Call() script.Call { return is.callWith(append(slices.Clip(is.args), "0")) }

// Tentative is Call for a send whose limits are still to be decided: it
// makes a new code as Call does, but only looks at a live one (Issued.Held),
// writing nothing that a refusal would have to take back while another
// send mails or verifies that code.
func (is *Issue) Tentative() script.Call { return is.callWith(append(is.args, "1")) }

// Result reads the issue's reply and returns what was issued and the
// script call that takes it back (see Store.GetOrCreate); a held live code
// has nothing to take back (the call is zero).
func (is *Issue) Result(reply []any) (Issued, script.Call, error) {
	if len(reply) != 15 {
		return Issued{}, script.Call{}, fmt.Errorf("issue code: unexpected reply of %d values", len(reply))
	}
	str := func(i int) string { v, _ := reply[i].(string); return v }
	left, _ := reply[1].(int64)
	created, _ := reply[2].(int64)
	if created == -1 {
		return Issued{ExpiresIn: time.Duration(left) * time.Millisecond, Held: true}, script.Call{}, nil
	}
	issued := Issued{Code: str(0), Sealed: is.sealed, ExpiresIn: time.Duration(left) * time.Millisecond, Created: created == 1}
	if is.sealed != "" {
		issued.Code = is.fresh // the live value is its MAC
	}
	undo := script.Call{Script: unissueScript, Keys: is.keys,
		Args: []any{is.owner[0], is.owner[1], created, is.value}}
	for i := 3; i < len(reply); i++ {
		undo.Args = append(undo.Args, str(i))
	}
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
	is, err := s.Issue(id, time.Now(), Send{})
	if err != nil {
		return Issued{}, err
	}
	call := is.Call()
	reply, err := call.Script.Run(ctx, s.rdb, call.Keys, call.Args...).Slice()
	if err != nil {
		return Issued{}, fmt.Errorf("get or create code: %w", err)
	}
	issued, _, err := is.Result(reply)
	return issued, err
}
