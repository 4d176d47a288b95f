// Package limits admits sends and verifies: the resend cooldown, the gap
// between two mails to one mailbox, the caps per mailbox, client, domain
// and minute, and the suppression list's refusal, checked in one pipeline
// with the code's issue, and an Admission that can take a send back.
//
// Each limit lives in the Redis Cluster slot of what it counts (see keys.go),
// and the send step is one script per slot: the parts (send.go), declared
// as data, and the code's issue (codes.Issue) last. Adding a limit is one
// part entry (or one more check in the script of its slot) plus its tests.
package limits

import (
	"errors"
	"fmt"
	"time"

	"github.com/verifyq/verifyq/internal/field"
	"github.com/verifyq/verifyq/mail"
)

// ErrRateLimited is matched by every *Error.
var ErrRateLimited = errors.New("rate limited")

// Names of the limits, as Error.Limit reports them.
const (
	Cooldown     = "cooldown"      // Config.Cooldown
	Gap          = "gap"           // Config.Gap
	Address      = "address"       // Config.AddressPerHour
	Client       = "client"        // Config.ClientPerHour
	Domain       = "domain"        // Config.DomainPerMinute
	Global       = "global"        // Config.GlobalPerMinute
	ClientVerify = "client_verify" // Config.ClientVerifiesPerHour
)

// Names lists every limit name.
var Names = []string{Cooldown, Gap, Address, Client, Domain, Global, ClientVerify}

// Error says a send or a verify was refused by a limit and when to try
// again.
type Error struct {
	// Limit is one of Names.
	Limit string
	// RetryAfter is how long until the limit lets a request through.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	return fmt.Sprintf("rate limited (%s), retry after %s", e.Limit, e.RetryAfter)
}

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *Error) Is(target error) bool { return target == ErrRateLimited }

// Defaults of Config.
const (
	DefaultCooldown = time.Minute
	// DefaultGap lets one mail through to a mailbox at a time, whatever
	// the purposes asked for.
	DefaultGap            = 10 * time.Second
	DefaultAddressPerHour = 5
	DefaultClientPerHour  = 30
	// DefaultClientVerifiesPerHour is generous for one user and tight for
	// one client guessing codes across many addresses.
	DefaultClientVerifiesPerHour = 60
)

// Window is the rolling window of the per-address and per-client caps.
const Window = time.Hour

// MinuteWindow is the fixed window of the per-domain and global caps: the
// current minute of the clock.
const MinuteWindow = time.Minute

// Config bounds how often codes are mailed and guessed. A zero limit is
// off.
type Config struct {
	// Cooldown is the least time between two sends of one purpose to one
	// mailbox; at most Window.
	Cooldown time.Duration
	// Gap is the least time between two sends to one mailbox, whatever
	// their purposes; at most Window.
	Gap time.Duration
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
	// ClientVerifiesPerHour caps verify requests from one end-user client
	// per rolling hour, so that one client cannot spread guesses over many
	// addresses.
	ClientVerifiesPerHour int
	// Identity says which addresses are one mailbox for the limits (and
	// whose slot holds an address's suppression).
	Identity mail.Identity
}

// Default is the limits verifyq runs with unless configured.
func Default() Config {
	return Config{
		Cooldown:              DefaultCooldown,
		Gap:                   DefaultGap,
		AddressPerHour:        DefaultAddressPerHour,
		ClientPerHour:         DefaultClientPerHour,
		ClientVerifiesPerHour: DefaultClientVerifiesPerHour,
	}
}

// Validate reports every negative limit, a Gap or Cooldown longer than Window,
// each a *field.Error named after its field, and the Identity's problems.
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct {
		name     string
		negative bool
	}{
		{"Cooldown", c.Cooldown < 0},
		{"Gap", c.Gap < 0},
		{"AddressPerHour", c.AddressPerHour < 0},
		{"ClientPerHour", c.ClientPerHour < 0},
		{"DomainPerMinute", c.DomainPerMinute < 0},
		{"GlobalPerMinute", c.GlobalPerMinute < 0},
		{"ClientVerifiesPerHour", c.ClientVerifiesPerHour < 0},
	} {
		if f.negative {
			errs = append(errs, field.Errorf(f.name, "must not be negative (0 turns the limit off)"))
		}
	}
	if c.Gap > Window {
		errs = append(errs, field.Errorf("Gap", "must be at most %s", Window))
	}
	if c.Cooldown > Window {
		errs = append(errs, field.Errorf("Cooldown", "must be at most %s", Window))
	}
	return errors.Join(append(errs, c.Identity.Validate())...)
}
