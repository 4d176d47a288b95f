package limits

import (
	"context"
	"crypto/rand"
	_ "embed" // the scripts
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/script"
	"github.com/verifyq/verifyq/mail"
)

var (
	//go:embed mailbox.lua
	mailboxSrc string
	//go:embed unmailbox.lua
	unmailboxSrc string
	//go:embed window.lua
	windowSrc string
	//go:embed count.lua
	countSrc string
	//go:embed unwindow.lua
	unwindowSrc string
	//go:embed minutes.lua
	minutesSrc string
	//go:embed unminutes.lua
	unminutesSrc string
)

// suppressed is the refusal of a suppressed address, beside the limits'
// names.
const suppressed = "suppressed"

// A send is what the parts of one send request are made of.
type send struct {
	req     Request
	now     time.Time
	nonce   string // names the send in the windows
	mailbox string // delivery.MailboxID of the address's mailbox
	address string // delivery.AddressID of the exact address
}

// mailboxMember names the send in its mailbox's hour of sends: its purpose
// and its nonce, so that the hour holds each purpose's cooldown too
// (mailbox.lua). Purposes are names without a slash (codes.ValidatePurpose).
func (s *send) mailboxMember() string { return s.req.Purpose + "/" + s.nonce }

// A part is the share of a send that one Redis Cluster slot decides: a
// script that checks and, when it admits, records; the script that takes
// that record back; and the refusals it may reply: {'ok'}, or pairs
// {name, ms, name, ms...}, one for each of its limits that refuses (name
// one of Names or "suppressed", ms the Retry-After or the suppression's
// time left). A part that refuses records nothing.
type part struct {
	slot    string   // the hash tag of the part's slot, for the reader
	refuses []string // the refusals its check may reply
	// on reports whether the part has anything to check for s.
	on func(c *Config, s *send) bool
	// keys are the part's keys, all in its slot; its undo takes the same.
	keys     func(c *Config, s *send) []string
	check    *redis.Script
	args     func(c *Config, s *send) []any
	undo     *redis.Script
	undoArgs func(c *Config, s *send) []any
}

// parts are the parts of a send before the code's issue. A suppression
// takes precedence over every limit; among the limits that refuse, the
// one with the longest wait is the refusal, so that its Retry-After is
// when a send can pass (the first in this order on a tie). A new limit is
// an entry here (or a check more in the script of its slot).
var parts = []part{
	{
		slot:    "m:<mailbox>",
		refuses: []string{suppressed, Cooldown, Gap, Address},
		on:      func(*Config, *send) bool { return true },
		keys: func(_ *Config, s *send) []string {
			return []string{delivery.SuppressKey(s.mailbox, s.address), AddressKey(s.mailbox)}
		},
		check: redis.NewScript(countSrc + mailboxSrc),
		args: func(c *Config, s *send) []any {
			// Without the cap the hour of sends keeps only what the gap
			// and the cooldowns look back on.
			width := Window
			if c.AddressPerHour == 0 {
				width = max(c.Gap, c.Cooldown)
			}
			return []any{s.now.UnixMilli(), s.mailboxMember(), c.Cooldown.Milliseconds(), c.AddressPerHour, width.Milliseconds(),
				c.Gap.Milliseconds(), s.req.Purpose + "/"}
		},
		undo:     redis.NewScript(unmailboxSrc),
		undoArgs: func(_ *Config, s *send) []any { return []any{s.mailboxMember()} },
	},
	{
		slot:    "c:<client>",
		refuses: []string{Client},
		on:      func(c *Config, s *send) bool { return s.req.Client != "" && c.ClientPerHour > 0 },
		keys:    func(_ *Config, s *send) []string { return []string{ClientKey(s.req.Client)} },
		check:   window,
		args: func(c *Config, s *send) []any {
			return []any{s.now.UnixMilli(), s.nonce, c.ClientPerHour, Window.Milliseconds(), Client}
		},
		undo:     redis.NewScript(unwindowSrc),
		undoArgs: func(_ *Config, s *send) []any { return []any{s.nonce} },
	},
	{
		slot:    "rate",
		refuses: []string{Domain, Global},
		on:      func(c *Config, _ *send) bool { return c.DomainPerMinute > 0 || c.GlobalPerMinute > 0 },
		keys: func(_ *Config, s *send) []string {
			minute := s.now.Truncate(MinuteWindow)
			return []string{domainKey(mail.Domain(s.req.Email), minute), globalKey(minute)}
		},
		check: redis.NewScript(minutesSrc),
		args: func(c *Config, s *send) []any {
			left := max(s.now.Truncate(MinuteWindow).Add(MinuteWindow).Sub(s.now).Milliseconds(), 1)
			return []any{c.DomainPerMinute, c.GlobalPerMinute, left}
		},
		undo: redis.NewScript(unminutesSrc),
		undoArgs: func(c *Config, _ *send) []any {
			return []any{flag(c.DomainPerMinute > 0), flag(c.GlobalPerMinute > 0)}
		},
	},
}

// window is the rolling window of a client's sends or verifies.
var window = redis.NewScript(countSrc + windowSrc)

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Limiter admits sends and verifies under the limits, and issues the code
// of an admitted send.
type Limiter struct {
	rdb   redis.UniversalClient
	cfg   Config
	codes *codes.Store
	rand  io.Reader
	// Now is the clock of the windows; tests replace it.
	Now func() time.Time
}

// New returns a Limiter on rdb that issues codes from store. cfg is
// validated with Config.Validate.
func New(rdb redis.UniversalClient, cfg Config, store *codes.Store) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Limiter{rdb: rdb, cfg: cfg, codes: store, rand: rand.Reader, Now: time.Now}, nil
}

// nonce returns a unique member for the windows.
func (l *Limiter) nonce() (string, error) {
	var b [12]byte
	if _, err := io.ReadFull(l.rand, b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// Request asks for the code of one address.
type Request struct {
	// Email is the address exactly as the client sent it (validated): the
	// code key's.
	Email string
	// Purpose is what the code is for (codes.ID); empty is the default
	// purpose. One not configured fails with codes.ErrInvalidPurpose.
	Purpose string
	// Client identifies the end user's client for the per-client cap;
	// empty means none.
	Client string
	// Coalesce asks, inside the cooldown, for an Admission with Coalesced
	// set instead of a refusal, when there is a live code.
	Coalesce bool
	// Send names the task that will mail the code, for its status
	// (codes.Send). With a task, the send also enters the index of open
	// sends (delivery.OpenSend) in the same pipeline, until its code is
	// surely gone.
	Send codes.Send
	// At is the request's time, which the status records as queued and
	// the send's task carries, so that the reconciler queues a lost task
	// again with the time the task had; zero is the Limiter's clock (Now).
	At time.Time
}

// Admission is an admitted send: the code it issued, and what it recorded
// in the limits and the code's status, which Undo takes back.
type Admission struct {
	codes.Issued
	// ResendAfter is the cooldown before the next send to this address.
	ResendAfter time.Duration
	// Coalesced is true when the request asked to coalesce and came inside
	// the cooldown while the code lives: nothing was recorded, the code
	// already mailed is the answer (Code is empty), and ResendAfter is
	// what is left of the cooldown.
	Coalesced bool

	// Keys are a key of each slot where the send's record lives: the
	// code's and its shard of the index of open sends (none for a
	// coalesced or refused send). Together with its task, they are what
	// must outlive a failover for the send to be mailed.
	Keys []string

	rdb  redis.UniversalClient
	undo []script.Call
}

// Undo takes back what the send recorded in the limits and the status,
// each part atomically in its slot, in one round trip, so that a retry of
// a request that failed after Admit (its task could not be queued) is
// admitted as if the failed attempt had never been. A code the send
// created goes too, unless a later send reused it; the retry then makes a
// new one. Undo of a coalesced or zero Admission does nothing.
func (a Admission) Undo(ctx context.Context) error {
	if len(a.undo) == 0 {
		return nil
	}
	if _, err := script.Run(ctx, a.rdb, a.undo...); err != nil {
		return fmt.Errorf("undo send: %w", err)
	}
	return nil
}

// Admit checks the suppression list and the send limits for req and issues
// its code (codes.Store.Issue), in one round trip (two for a live code,
// below): one script per slot,
// the parts that are on and the issue last, in one pipeline, with the
// send's entry in the index of open sends after them (a plain ZADD), which
// a refusal and Undo take out again. A suppressed
// address (that exact address: delivery.SuppressKey) returns a
// *delivery.SuppressedError, a refused send an *Error; either leaves the
// limits and the code as they were (a second round trip undoes what the
// parts that admitted it recorded). A pipeline that failed in part fails
// the send, and what its calls that did run recorded is taken back too.
// An admitted send marks the delivery status queued.
//
// The issue in that pipeline only looks at a live code (Issue.Tentative):
// a send that the limits refuse never replaces a sealed code or renames
// the status of a send that a worker may be mailing, even for the moment
// before its undo. An admitted send to a live code issues it in a second
// round trip (three with the enqueue, where a new code takes two).
func (l *Limiter) Admit(ctx context.Context, req Request) (Admission, error) {
	now := req.At
	if now.IsZero() {
		now = l.Now()
	}
	id := codes.ID{Purpose: req.Purpose, Email: req.Email}
	issue, err := l.codes.Issue(id, now, req.Send)
	if err != nil {
		return Admission{}, err
	}
	nonce, err := l.nonce()
	if err != nil {
		return Admission{}, fmt.Errorf("admit send: %w", err)
	}
	s := &send{req: req, now: now, nonce: nonce,
		mailbox: delivery.MailboxID(l.cfg.Identity.Mailbox(req.Email)), address: delivery.AddressID(req.Email)}
	var on []*part
	var calls, undos []script.Call
	for i := range parts {
		p := &parts[i]
		if !p.on(&l.cfg, s) {
			continue
		}
		keys := p.keys(&l.cfg, s)
		on = append(on, p)
		calls = append(calls, script.Call{Script: p.check, Keys: keys, Args: p.args(&l.cfg, s)})
		undos = append(undos, script.Call{Script: p.undo, Keys: keys, Args: p.undoArgs(&l.cfg, s)})
	}
	// The issue holds a live code until the parts have admitted the send
	// (Issue.Tentative); the index entry goes with the issue.
	tentative := issue.Tentative()
	calls = append(calls, tentative)
	keys := []string{tentative.Keys[0]}
	var add script.Call
	var unopen []script.Call
	if req.Send.Task != "" {
		open := delivery.OpenSend{Task: req.Send.Task, ID: id}
		add = open.Add(now.Add(l.codes.TTLOf(req.Purpose)))
		calls = append(calls, add)
		keys = append(keys, open.Key())
		unopen = append(unopen, open.Remove())
	}

	cmds, err := script.Run(ctx, l.rdb, calls...)
	// What the calls that ran recorded, to take back on a refusal or a
	// failure: each part that admitted, the issue, the send's entry in the
	// index. A call that failed recorded nothing (a Redis Cluster node
	// failing over while the others answered); one whose reply was lost
	// cannot be told from it, and stays.
	var admitted []script.Call
	for i := range on {
		if r, rerr := cmds[i].Slice(); rerr == nil && len(r) == 1 && r[0] == "ok" {
			admitted = append(admitted, undos[i])
		}
	}
	var issued codes.Issued
	r, ierr := cmds[len(on)].Slice()
	if ierr == nil {
		var unissue script.Call
		if issued, unissue, ierr = issue.Result(r); ierr == nil && !issued.Held {
			admitted = append(admitted, unissue)
		}
	}
	if len(unopen) > 0 && cmds[len(on)+1].Err() == nil {
		admitted = append(admitted, unopen...)
	}
	if err == nil {
		err = ierr
	}
	if err != nil {
		err = fmt.Errorf("admit send: %w", err)
		if len(admitted) > 0 {
			if _, uerr := script.Run(ctx, l.rdb, admitted...); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undo a failed send: %w", uerr))
			}
		}
		return Admission{}, err
	}
	replies, err := script.Replies(cmds[:len(on)])
	if err != nil {
		return Admission{}, fmt.Errorf("admit send: %w", err)
	}

	// A suppression decides, else the limit with the longest wait; the
	// parts that admitted are taken back, the issue too.
	var refusal *refused
	cooldown := false
	for i, r := range replies {
		if len(r) == 1 && r[0] == "ok" {
			continue
		}
		if len(r) == 0 || len(r)%2 != 0 {
			return Admission{}, fmt.Errorf("admit send: part %s replied %v", on[i].slot, r)
		}
		for j := 0; j < len(r); j += 2 {
			name, _ := r[j].(string)
			ms, ok := r[j+1].(int64)
			if !slices.Contains(on[i].refuses, name) || !ok {
				return Admission{}, fmt.Errorf("admit send: part %s replied %v", on[i].slot, r)
			}
			cooldown = cooldown || name == Cooldown
			if refusal.yields(name, ms) {
				refusal = &refused{name: name, wait: time.Duration(ms) * time.Millisecond}
			}
		}
	}
	if refusal == nil {
		if issued.Held {
			reissue := []script.Call{issue.Call()}
			if len(unopen) > 0 {
				reissue = append(reissue, add)
			}
			if issued, admitted, err = l.reissue(ctx, issue, reissue, admitted); err != nil {
				return Admission{}, err
			}
		}
		return Admission{Issued: issued, ResendAfter: l.cfg.Cooldown, Keys: keys, rdb: l.rdb, undo: admitted}, nil
	}
	var uerr error
	if len(admitted) > 0 {
		_, uerr = script.Run(ctx, l.rdb, admitted...)
	}
	if cooldown && refusal.name != suppressed && req.Coalesce && !issued.Created {
		// The code is on its way: what the other parts recorded is taken
		// back, and the live code's lifetime is the answer.
		return Admission{Issued: codes.Issued{ExpiresIn: issued.ExpiresIn}, ResendAfter: refusal.wait, Coalesced: true}, nil
	}
	var err2 error = &Error{Limit: refusal.name, RetryAfter: refusal.wait}
	if refusal.name == suppressed {
		err2 = &delivery.SuppressedError{For: refusal.wait}
	}
	if uerr != nil {
		err2 = errors.Join(err2, fmt.Errorf("undo a refused send: %w", uerr))
	}
	return Admission{}, err2
}

// reissue issues the live code that an admitted send held (the calls:
// issue's Call, and the send's entry in the index again, which a
// reconciler's run between the two round trips may have taken out as a
// send the status did not name yet) and returns what it issued with the
// undo calls of the send. On failure what the send recorded is taken back.
func (l *Limiter) reissue(ctx context.Context, issue *codes.Issue, calls []script.Call,
	admitted []script.Call) (codes.Issued, []script.Call, error) {
	cmds, err := script.Run(ctx, l.rdb, calls...)
	var issued codes.Issued
	r, ierr := cmds[0].Slice()
	if ierr == nil {
		var unissue script.Call
		if issued, unissue, ierr = issue.Result(r); ierr == nil {
			admitted = append(admitted, unissue)
		}
	}
	if err == nil {
		err = ierr
	}
	if err == nil {
		return issued, admitted, nil
	}
	err = fmt.Errorf("admit send: %w", err)
	if len(admitted) > 0 {
		if _, uerr := script.Run(ctx, l.rdb, admitted...); uerr != nil {
			err = errors.Join(err, fmt.Errorf("undo a failed send: %w", uerr))
		}
	}
	return codes.Issued{}, nil, err
}

// refused is the refusal of a send so far: a limit's name (or
// "suppressed") and its wait.
type refused struct {
	name string
	wait time.Duration
}

// yields reports whether r (nil: none yet) gives way to the refusal name
// that waits ms: a suppression over any limit, else the longer wait.
func (r *refused) yields(name string, ms int64) bool {
	switch {
	case r == nil:
		return true
	case r.name == suppressed:
		return false
	case name == suppressed:
		return true
	}
	return time.Duration(ms)*time.Millisecond > r.wait
}

// AdmitVerify counts a verify request of client (empty: none, no cap)
// against ClientVerifiesPerHour, in one round trip; an *Error
// (ClientVerify) when the client has used up its verifies. Every verify
// request counts, right or wrong.
func (l *Limiter) AdmitVerify(ctx context.Context, client string) error {
	if client == "" || l.cfg.ClientVerifiesPerHour <= 0 {
		return nil
	}
	nonce, err := l.nonce()
	if err != nil {
		return fmt.Errorf("admit verify: %w", err)
	}
	res, err := window.Run(ctx, l.rdb, []string{ClientVerifyKey(client)},
		l.Now().UnixMilli(), nonce, l.cfg.ClientVerifiesPerHour, Window.Milliseconds(), ClientVerify).Slice()
	if err != nil {
		return fmt.Errorf("admit verify: %w", err)
	}
	if len(res) == 2 && res[0] == ClientVerify {
		ms, _ := res[1].(int64)
		return &Error{Limit: ClientVerify, RetryAfter: time.Duration(ms) * time.Millisecond}
	}
	return nil
}
