package delivery

import (
	"cmp"
	"context"
	"crypto/sha256"
	_ "embed" // the script
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/internal/script"
	"github.com/verifyq/verifyq/mail"
)

// DefaultSuppressFor is how long an address whose mail server refused a
// mail for good (RecipientRefused), bounced it so, or whose recipient
// complained of it, stays on the suppression list.
const DefaultSuppressFor = 24 * time.Hour

// ErrSuppressed is matched by every *SuppressedError.
var ErrSuppressed = errors.New("the address is suppressed")

// SuppressedError says a send was refused because the address's mail
// server refused an earlier mail for good.
type SuppressedError struct {
	// For is how long the suppression lasts.
	For time.Duration
}

func (e *SuppressedError) Error() string {
	return fmt.Sprintf("the address is suppressed for %s after a permanent delivery failure or a complaint", e.For.Round(time.Second))
}

// Is makes errors.Is(err, ErrSuppressed) true.
func (e *SuppressedError) Is(target error) bool { return target == ErrSuppressed }

// hashID names s in keys of verifyq's own: a hash, so that no key holds an
// address.
func hashID(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

// MailboxID names a mailbox (mail.Identity.Mailbox) in keys of verifyq's
// own: a hash, so that no limit or suppression key holds an address.
func MailboxID(mailbox string) string { return hashID(mailbox) }

// AddressID names the exact address of email, a valid address
// (mail.Exact: the local part as sent, the domain folded), in the
// suppression keys: a hash, never the address.
func AddressID(email string) string { return hashID(mail.Exact(email)) }

// SuppressPrefix starts every suppression key.
const SuppressPrefix = "verifyq:suppress:"

// SuppressKey holds the suppression of one exact address (AddressID), in
// its mailbox's Redis Cluster slot (tag m:<mailbox id>), where the send
// limits check it in the same script as the mailbox's other limits. Other
// spellings of the mailbox have keys of their own.
func SuppressKey(mailboxID, addressID string) string {
	return SuppressPrefix + "{m:" + mailboxID + "}:" + addressID
}

// idLen is the length of a MailboxID or an AddressID.
const idLen = 32

// entryID names the entry of key in a listing (Suppression.ID):
// "<mailbox id>:<address id>"; ok is false for a key of another form (the
// mailbox-wide keys of earlier versions, which only expire).
func entryID(key string) (id string, ok bool) {
	rest, ok := strings.CutPrefix(key, SuppressPrefix+"{m:")
	if !ok {
		return "", false
	}
	mailbox, address, ok := strings.Cut(rest, "}:")
	if !ok || !isID(mailbox) || !isID(address) {
		return "", false
	}
	return mailbox + ":" + address, true
}

// keyOf is the key of the entry named id (Suppression.ID).
func keyOf(id string) (string, bool) {
	mailbox, address, ok := strings.Cut(id, ":")
	if !ok || !isID(mailbox) || !isID(address) {
		return "", false
	}
	return SuppressKey(mailbox, address), true
}

func isID(s string) bool {
	return len(s) == idLen && strings.Trim(s, "0123456789abcdef") == ""
}

// Reason is why an address is on the suppression list.
type Reason string

// The reasons, declared once: Reasons lists them.
const (
	// ReasonRecipientRefused: the recipient's mail server refused a mail
	// for good (RecipientRefused).
	ReasonRecipientRefused Reason = "recipient_refused"
	// ReasonBounced: the mail was accepted, then a delivery status
	// notification came back that says the recipient failed for good
	// (ClassOfReport is RecipientRefused); the entry keeps its status code.
	ReasonBounced Reason = "bounced"
	// ReasonComplaint: the recipient reported a mail as spam (a feedback
	// report).
	ReasonComplaint Reason = "complaint"
)

// Reasons are the reasons an entry may have.
var Reasons = []Reason{ReasonRecipientRefused, ReasonBounced, ReasonComplaint}

// ErrInvalidSuppression is matched by the errors of a bad entry, filter or
// ID given to Suppressions.
var ErrInvalidSuppression = errors.New("invalid suppression")

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidSuppression, fmt.Sprintf(format, a...))
}

// ParseReason returns the Reason named s, or an error naming the reasons.
func ParseReason(s string) (Reason, error) {
	if r := Reason(s); slices.Contains(Reasons, r) {
		return r, nil
	}
	names := make([]string, len(Reasons))
	for i, r := range Reasons {
		names[i] = string(r)
	}
	return "", invalid("unknown reason %q: want one of %s", s, strings.Join(names, ", "))
}

// MaxDiagnostic bounds an entry's diagnostic, in bytes.
const MaxDiagnostic = 160

// enhancedCodeRE matches an RFC 3463 enhanced status code at the start of
// a reply text.
var enhancedCodeRE = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}(?: |$)`)

// addressDelims end an address inside a reply text.
const addressDelims = "<>()[],;:\"'`"

// Diagnostic returns text, an SMTP reply text, fit to keep: on one line,
// valid UTF-8 without control characters, without its enhanced status
// code, every word with an "@" in it masked (mail.MaskAddress; "***" when
// it is no valid address), and at most MaxDiagnostic bytes long.
func Diagnostic(text string) string {
	text = strings.ToValidUTF8(text, "?")
	if m := enhancedCodeRE.FindString(text); m != "" {
		text = text[len(m):]
	}
	text = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return ' '
		}
		return r
	}, text)
	var b strings.Builder
	for i, word := range strings.Fields(text) {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(maskWord(word))
	}
	out := b.String()
	if len(out) > MaxDiagnostic {
		cut := MaxDiagnostic
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = out[:cut]
	}
	return out
}

// maskWord masks the address in word, if it holds an "@": the run of
// characters around the "@" up to the delimiters of an address.
func maskWord(word string) string {
	at := strings.IndexByte(word, '@')
	if at < 0 {
		return word
	}
	start := strings.LastIndexAny(word[:at], addressDelims) + 1
	end := len(word)
	if i := strings.IndexAny(word[at:], addressDelims); i >= 0 {
		end = at + i
	}
	masked := mail.MaskAddress(strings.TrimRight(word[start:end], "."))
	return word[:start] + masked + maskWord(word[end:])
}

// Entry is what Add puts on the list.
type Entry struct {
	// Email is the address exactly as the mail was sent to it (valid).
	Email string
	// Reason is why (one of Reasons).
	Reason Reason
	// Reply is the SMTP reply code that refused the mail (0: none).
	Reply int
	// Enhanced is the reply's RFC 3463 status code, e.g. "5.1.1" ("":
	// none).
	Enhanced string
	// Diagnostic is the reply text; Add keeps it as Diagnostic has it.
	Diagnostic string
	// Added is when the mail was refused.
	Added time.Time
	// For is how long the entry lasts (> 0).
	For time.Duration
}

// Suppression is one entry of the suppression list. It holds the address
// only masked.
type Suppression struct {
	// ID names the entry ("<mailbox id>:<address id>"), for LiftID.
	ID string `json:"id"`
	// Masked is the address as the logs show it (a***@example.com).
	Masked string `json:"address"`
	// Reason is why the address is on the list.
	Reason Reason `json:"reason"`
	// Reply is the SMTP reply code that refused the mail (0: none).
	Reply int `json:"reply"`
	// Enhanced is the reply's enhanced status code, e.g. "5.1.1".
	Enhanced string `json:"enhanced_code,omitempty"`
	// Diagnostic is the reply text, masked and bounded (Diagnostic).
	Diagnostic string `json:"diagnostic,omitempty"`
	// Added is when the mail was refused.
	Added time.Time `json:"added_at"`
	// Expires is when the entry ends.
	Expires time.Time `json:"expires_at"`
	// ExpiresIn is how long the entry has left, as Redis has it.
	ExpiresIn time.Duration `json:"-"`
}

// Filter picks entries of the list: every field set must match.
type Filter struct {
	// Reason, when set, is the entries' reason.
	Reason Reason
	// AddedAfter and AddedBefore, when set, bound the time an entry was
	// added: at or after AddedAfter and before AddedBefore.
	AddedAfter, AddedBefore time.Time
}

func (f Filter) match(e *Suppression) bool {
	return (f.Reason == "" || e.Reason == f.Reason) &&
		(f.AddedAfter.IsZero() || !e.Added.Before(f.AddedAfter)) &&
		(f.AddedBefore.IsZero() || e.Added.Before(f.AddedBefore))
}

func (f Filter) validate() error {
	if f.Reason != "" {
		if _, err := ParseReason(string(f.Reason)); err != nil {
			return err
		}
	}
	if !f.AddedAfter.IsZero() && !f.AddedBefore.IsZero() && !f.AddedAfter.Before(f.AddedBefore) {
		return invalid("the window's start is not before its end")
	}
	return nil
}

// Suppressions is the suppression list: an address whose mail server
// refused a mail for good is refused new sends for a while. An entry holds
// one exact address (AddressID): other spellings of its mailbox are not
// affected.
type Suppressions struct {
	rdb      redis.UniversalClient
	identity mail.Identity
}

// NewSuppressions returns the suppression list in rdb; identity names the
// mailbox whose Redis Cluster slot holds an address's entry.
func NewSuppressions(rdb redis.UniversalClient, identity mail.Identity) *Suppressions {
	return &Suppressions{rdb: rdb, identity: identity}
}

// key is the suppression key of email, a valid address.
func (s *Suppressions) key(email string) string {
	return SuppressKey(MailboxID(s.identity.Mailbox(email)), AddressID(email))
}

// Add puts e.Email on the list for e.For, replacing an entry it had.
func (s *Suppressions) Add(ctx context.Context, e Entry) error {
	switch {
	case mail.ValidateAddress(e.Email) != nil:
		return invalid("not a valid address")
	case !slices.Contains(Reasons, e.Reason):
		return invalid("unknown reason %q", e.Reason)
	case e.Reply != 0 && (e.Reply < 200 || e.Reply > 599):
		return invalid("reply code %d is no SMTP reply code", e.Reply)
	case e.Enhanced != "" && !enhancedCodeRE.MatchString(e.Enhanced):
		return invalid("%q is no enhanced status code", e.Enhanced)
	case e.For <= 0:
		return invalid("the entry must last a while, not %s", e.For)
	}
	b, err := json.Marshal(Suppression{
		Masked:     mail.MaskAddress(e.Email),
		Reason:     e.Reason,
		Reply:      e.Reply,
		Enhanced:   e.Enhanced,
		Diagnostic: Diagnostic(e.Diagnostic),
		Added:      e.Added.UTC(),
		Expires:    e.Added.Add(e.For).UTC(),
	})
	if err != nil {
		return err
	}
	if err := s.rdb.Set(ctx, s.key(e.Email), b, e.For).Err(); err != nil {
		return fmt.Errorf("suppress address: %w", err)
	}
	return nil
}

// Lift removes email, that exact address, from the list, and reports
// whether it was on it. Other spellings of its mailbox stay as they are.
func (s *Suppressions) Lift(ctx context.Context, email string) (bool, error) {
	if err := mail.ValidateAddress(email); err != nil {
		return false, err
	}
	return s.del(ctx, s.key(email))
}

// LiftID removes the entry named id (Suppression.ID) from the list, and
// reports whether it was on it.
func (s *Suppressions) LiftID(ctx context.Context, id string) (bool, error) {
	key, ok := keyOf(id)
	if !ok {
		return false, invalid("an entry's ID is <mailbox id>:<address id>, each %d hex digits", idLen)
	}
	return s.del(ctx, key)
}

func (s *Suppressions) del(ctx context.Context, key string) (bool, error) {
	n, err := s.rdb.Del(ctx, key).Result()
	if err != nil {
		return false, fmt.Errorf("lift suppression: %w", err)
	}
	return n == 1, nil
}

// ScanBatch is how many keys one step of a scan reads (SCAN COUNT), and
// at most how many entries one round trip reads or lifts.
const ScanBatch = 100

// scanned is an entry a scan read, with its key and its stored value.
type scanned struct {
	Suppression
	key string
	raw string
}

// scan reads the entries of the list that match f, a batch at a time, on
// every primary of a Redis Cluster (in parallel, so each fits its own
// mutex), and hands each batch's matches to fn; fn returning false stops
// the scan of that node.
func (s *Suppressions) scan(ctx context.Context, f Filter, fn func([]scanned) (more bool, err error)) error {
	one := func(ctx context.Context, node redis.UniversalClient) error {
		var cursor uint64
		for {
			keys, next, err := node.Scan(ctx, cursor, SuppressPrefix+"*", ScanBatch).Result()
			if err != nil {
				return err
			}
			batch, err := read(ctx, node, keys, f)
			if err != nil {
				return err
			}
			if len(batch) > 0 {
				if more, err := fn(batch); err != nil || !more {
					return err
				}
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return one(ctx, node) })
	}
	return one(ctx, s.rdb)
}

// read reads the entries of keys on node, in one round trip, and returns
// those that match f. Keys of another form and entries gone since are
// left out.
func read(ctx context.Context, node redis.UniversalClient, keys []string, f Filter) ([]scanned, error) {
	type cmds struct {
		key, id string
		get     *redis.StringCmd
		ttl     *redis.DurationCmd
	}
	var todo []cmds
	_, err := node.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, key := range keys {
			if id, ok := entryID(key); ok {
				todo = append(todo, cmds{key: key, id: id, get: p.Get(ctx, key), ttl: p.PTTL(ctx, key)})
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	var out []scanned
	for _, c := range todo {
		raw, err := c.get.Result()
		if err != nil {
			continue // gone since the scan
		}
		e := scanned{key: c.key, raw: raw}
		if json.Unmarshal([]byte(raw), &e.Suppression) != nil || !f.match(&e.Suppression) {
			continue
		}
		e.ID = c.id
		e.ExpiresIn = c.ttl.Val()
		out = append(out, e)
	}
	return out, nil
}

// List returns the entries that match f, at most limit, oldest first, and
// whether more matched. On Redis Cluster it scans every primary.
func (s *Suppressions) List(ctx context.Context, f Filter, limit int) (_ []Suppression, more bool, _ error) {
	if err := f.validate(); err != nil {
		return nil, false, err
	}
	var mu sync.Mutex
	var out []Suppression
	err := s.scan(ctx, f, func(batch []scanned) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range batch {
			if len(out) == limit {
				more = true
				return false, nil
			}
			out = append(out, e.Suppression)
		}
		return true, nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("list suppressions: %w", err)
	}
	slices.SortFunc(out, func(a, b Suppression) int { return cmp.Or(a.Added.Compare(b.Added), strings.Compare(a.ID, b.ID)) })
	return out, more, nil
}

//go:embed lift.lua
var liftSrc string

var lift = redis.NewScript(liftSrc)

// LiftAdded lifts every entry that matches f, whose window must have both
// ends (AddedAfter, AddedBefore), and returns how many it lifted: to undo
// an incident that put real users on the list. It works a batch of
// ScanBatch entries at a time (on every primary of a Redis Cluster), and
// lifts an entry only if it is still the one it read: an address
// suppressed again since stays.
func (s *Suppressions) LiftAdded(ctx context.Context, f Filter) (int, error) {
	if f.AddedAfter.IsZero() || f.AddedBefore.IsZero() {
		return 0, invalid("lifting by the time added needs both ends of the window")
	}
	if err := f.validate(); err != nil {
		return 0, err
	}
	var n atomic.Int64
	err := s.scan(ctx, f, func(batch []scanned) (bool, error) {
		calls := make([]script.Call, len(batch))
		for i, e := range batch {
			calls[i] = script.Call{Script: lift, Keys: []string{e.key}, Args: []any{e.raw}}
		}
		cmds, err := script.Run(ctx, s.rdb, calls...)
		if err != nil {
			return false, err
		}
		for _, c := range cmds {
			if v, _ := c.Int64(); v == 1 {
				n.Add(1)
			}
		}
		return true, nil
	})
	if err != nil {
		return int(n.Load()), fmt.Errorf("lift suppressions: %w", err)
	}
	return int(n.Load()), nil
}
