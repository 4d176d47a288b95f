package delivery

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/mail"
)

// DefaultSuppressFor is how long an address whose mail server refused a
// mail for good (an SMTP 5xx) stays on the suppression list.
const DefaultSuppressFor = 24 * time.Hour

// ErrSuppressed is matched by every *SuppressedError.
var ErrSuppressed = errors.New("the address is suppressed")

// SuppressedError says a send was refused because the mailbox's mail server
// refused an earlier mail for good.
type SuppressedError struct {
	// For is how long the suppression lasts.
	For time.Duration
}

func (e *SuppressedError) Error() string {
	return fmt.Sprintf("the address is suppressed for %s after a permanent delivery failure", e.For.Round(time.Second))
}

// Is makes errors.Is(err, ErrSuppressed) true.
func (e *SuppressedError) Is(target error) bool { return target == ErrSuppressed }

// MailboxID names a mailbox (mail.Identity.Mailbox) in keys of verifyq's
// own: a hash, so that no limit or suppression key holds an address.
func MailboxID(mailbox string) string {
	sum := sha256.Sum256([]byte(mailbox))
	return hex.EncodeToString(sum[:16])
}

// SuppressPrefix starts every suppression key.
const SuppressPrefix = "verifyq:suppress:"

// SuppressKey holds the suppression of a mailbox, in the mailbox's Redis
// Cluster slot (tag m:<mailbox id>), where the send limits check it.
func SuppressKey(mailboxID string) string { return SuppressPrefix + "{m:" + mailboxID + "}" }

// suppressID is the mailbox ID of a suppression key.
func suppressID(key string) string {
	id := key[len(SuppressPrefix):]
	if len(id) > 4 && id[:3] == "{m:" && id[len(id)-1] == '}' {
		return id[3 : len(id)-1]
	}
	return id
}

// Suppression is one entry of the suppression list. It holds the address
// only masked.
type Suppression struct {
	// ID names the mailbox (MailboxID).
	ID string `json:"id"`
	// Masked is the address as the logs show it (a***@example.com).
	Masked string `json:"address"`
	// Reply is the SMTP reply code that refused the mail.
	Reply int `json:"reply"`
	// Since is when the mail was refused.
	Since time.Time `json:"since"`
	// ExpiresIn is how long the entry lasts.
	ExpiresIn time.Duration `json:"-"`
}

// Suppressions is the suppression list: mailboxes whose mail server refused
// a mail for good are refused new sends for a while.
type Suppressions struct {
	rdb      redis.UniversalClient
	identity mail.Identity
}

// NewSuppressions returns the suppression list in rdb, keyed by identity's
// mailboxes.
func NewSuppressions(rdb redis.UniversalClient, identity mail.Identity) *Suppressions {
	return &Suppressions{rdb: rdb, identity: identity}
}

// Add suppresses email's mailbox for d after the mail server refused a mail
// with reply code reply.
func (s *Suppressions) Add(ctx context.Context, email string, reply int, d time.Duration, now time.Time) error {
	b, err := json.Marshal(Suppression{Masked: mail.MaskAddress(email), Reply: reply, Since: now.UTC()})
	if err != nil {
		return err
	}
	key := SuppressKey(MailboxID(s.identity.Mailbox(email)))
	if err := s.rdb.Set(ctx, key, b, d).Err(); err != nil {
		return fmt.Errorf("suppress address: %w", err)
	}
	return nil
}

// Lift removes email's mailbox from the list, and reports whether it was
// on it.
func (s *Suppressions) Lift(ctx context.Context, email string) (bool, error) {
	if err := mail.ValidateAddress(email); err != nil {
		return false, err
	}
	return s.LiftID(ctx, MailboxID(s.identity.Mailbox(email)))
}

// LiftID removes the mailbox with ID id (Suppression.ID) from the list, and
// reports whether it was on it.
func (s *Suppressions) LiftID(ctx context.Context, id string) (bool, error) {
	n, err := s.rdb.Del(ctx, SuppressKey(id)).Result()
	if err != nil {
		return false, fmt.Errorf("lift suppression: %w", err)
	}
	return n == 1, nil
}

// List returns the suppression list, at most limit entries. On Redis
// Cluster it scans every primary.
func (s *Suppressions) List(ctx context.Context, limit int) ([]Suppression, error) {
	var mu sync.Mutex
	var out []Suppression
	scan := func(ctx context.Context, node redis.Cmdable) error {
		iter := node.Scan(ctx, 0, SuppressPrefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			key := iter.Val()
			raw, err := node.Get(ctx, key).Bytes()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				return err
			}
			var e Suppression
			if json.Unmarshal(raw, &e) != nil {
				continue
			}
			e.ID = suppressID(key)
			e.ExpiresIn = node.PTTL(ctx, key).Val()
			mu.Lock()
			full := len(out) >= limit
			if !full {
				out = append(out, e)
			}
			mu.Unlock()
			if full {
				return nil
			}
		}
		return iter.Err()
	}
	var err error
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return scan(ctx, node) })
	} else {
		err = scan(ctx, s.rdb)
	}
	if err != nil {
		return nil, fmt.Errorf("list suppressions: %w", err)
	}
	return out, nil
}
