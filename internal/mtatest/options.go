package mtatest

import (
	"errors"
	"fmt"
	"strings"
)

// DefaultDomain is the virtual domain whose mailboxes receive mail when
// Options.Domain is empty.
const DefaultDomain = "example.test"

// DefaultMailboxes are the mailboxes (local parts) of the domain when
// Options.Mailboxes is empty.
var DefaultMailboxes = []string{"alice", "bob"}

// Bounds on the options, so a mistaken test fails at Start with a clear
// error instead of a Postfix that misbehaves.
const (
	maxEntries        = 1000             // mailboxes, users, map entries, extra lines
	maxConnections    = 1000             // MaxConnections
	maxMessageSize    = 1 << 30          // MessageSizeLimit
	minMessageSize    = 1024             // MessageSizeLimit
	maxPasswordLength = 256              // a SASL password
	forbiddenInValues = "\r\n\t #,:\x00" // in names that go into maps and main.cf
)

// Options chooses the behaviour of one Postfix instance. The zero value is
// a server that accepts mail for DefaultMailboxes of DefaultDomain, from
// anyone, with STARTTLS offered and no AUTH.
type Options struct {
	// Domain is the virtual domain delivered into Maildirs (DefaultDomain).
	Domain string
	// Mailboxes are the local parts of Domain that exist
	// (DefaultMailboxes). Any other recipient of Domain is refused at
	// RCPT with 550 5.1.1; there is no plus addressing, so alice+x is
	// unknown.
	Mailboxes []string

	// Users are SASL accounts, login name to password, kept in a Cyrus
	// sasldb and offered as PLAIN and LOGIN. A login name is an address
	// (alice@example.test, whose realm is its domain) or a bare name (whose
	// realm is Domain). A wrong password gets 535 5.7.8. Users turns AUTH
	// on; it is offered only under TLS unless PlaintextAuth.
	Users map[string]string
	// PlaintextAuth offers AUTH on the submission port before STARTTLS too.
	PlaintextAuth bool
	// AuthRequired refuses MAIL FROM of a client that has not
	// authenticated: 554 5.7.1 ... Access denied.
	AuthRequired bool
	// SenderOwners maps a sender address to the SASL login name that owns
	// it, and turns on reject_sender_login_mismatch: MAIL FROM of an
	// address that the login does not own gets 553 5.7.1 ... not owned by
	// user.
	SenderOwners map[string]string
	// OverQuota are SASL login names or sender addresses refused at MAIL
	// FROM with 550 5.4.5 Daily user sending quota exceeded.
	OverQuota []string
	// Greylisted are recipient addresses answered at RCPT with 450 4.2.0;
	// Postfix.SetGreylisted changes the list while the server runs.
	Greylisted []string
	// MaxConnections, when > 0, caps the simultaneous connections of one
	// client (loopback included): the one past the cap gets 421 4.7.0
	// ... too many connections.
	MaxConnections int
	// MessageSizeLimit, when > 0, is message_size_limit in bytes: a larger
	// message gets 552 5.3.4 (Postfix's default is 10240000).
	MessageSizeLimit int64
	// NoSMTPUTF8 turns SMTPUTF8 off (smtputf8_enable = no), so EHLO does
	// not offer it.
	NoSMTPUTF8 bool

	// Transports routes mail for other domains: domain to a Postfix
	// transport such as "smtp:[127.0.0.1]:2525" (relay to a local port,
	// say an smtptest server). Each domain is also a relay domain, so mail
	// for it is accepted from anyone; when the next hop refuses it, Postfix
	// bounces it to the sender (a DSN into the sender's Maildir when the
	// sender is a mailbox of Domain). An "error:" transport makes smtpd
	// refuse the recipient at RCPT instead.
	Transports map[string]string
	// Extra lines are appended to main.cf, for anything the options above
	// do not cover; a later line wins over an earlier one in Postfix.
	Extra []string
}

func (o Options) withDefaults() Options {
	if o.Domain == "" {
		o.Domain = DefaultDomain
	}
	if len(o.Mailboxes) == 0 {
		o.Mailboxes = DefaultMailboxes
	}
	return o
}

// validate reports every problem of the options at once.
func (o Options) validate() error {
	var errs []error
	word := func(what, s string) {
		if s == "" || len(s) > 254 || strings.ContainsAny(s, forbiddenInValues) {
			errs = append(errs, fmt.Errorf("mtatest: %s %q: want 1 to 254 characters without spaces, tabs, line breaks, '#', ',' or ':'", what, s))
		}
	}
	count := func(what string, n int) {
		if n > maxEntries {
			errs = append(errs, fmt.Errorf("mtatest: %d %s: at most %d", n, what, maxEntries))
		}
	}
	word("domain", o.Domain)
	if strings.Contains(o.Domain, "@") {
		errs = append(errs, fmt.Errorf("mtatest: domain %q has an @", o.Domain))
	}
	count("mailboxes", len(o.Mailboxes))
	for _, m := range o.Mailboxes {
		word("mailbox", m)
		if strings.ContainsAny(m, "@/") || m == "." || m == ".." {
			errs = append(errs, fmt.Errorf("mtatest: mailbox %q: want a local part without @ or /", m))
		}
	}
	count("users", len(o.Users))
	for u, p := range o.Users {
		word("SASL user", u)
		if p == "" || len(p) > maxPasswordLength || strings.ContainsAny(p, "\r\n\x00") {
			errs = append(errs, fmt.Errorf("mtatest: the password of SASL user %q: want 1 to %d characters, no line breaks", u, maxPasswordLength))
		}
	}
	if (o.AuthRequired || o.PlaintextAuth || len(o.SenderOwners) > 0) && len(o.Users) == 0 {
		errs = append(errs, errors.New("mtatest: AuthRequired, PlaintextAuth and SenderOwners need Users"))
	}
	count("sender owners", len(o.SenderOwners))
	for a, u := range o.SenderOwners {
		word("sender address", a)
		word("owner of "+a, u)
	}
	count("over-quota entries", len(o.OverQuota))
	for _, s := range o.OverQuota {
		word("over-quota entry", s)
	}
	count("greylisted recipients", len(o.Greylisted))
	for _, r := range o.Greylisted {
		word("greylisted recipient", r)
	}
	if o.MaxConnections < 0 || o.MaxConnections > maxConnections {
		errs = append(errs, fmt.Errorf("mtatest: MaxConnections %d: want 0 (no cap) to %d", o.MaxConnections, maxConnections))
	}
	if o.MessageSizeLimit != 0 && (o.MessageSizeLimit < minMessageSize || o.MessageSizeLimit > maxMessageSize) {
		errs = append(errs, fmt.Errorf("mtatest: MessageSizeLimit %d: want 0 (Postfix's default) or %d to %d bytes", o.MessageSizeLimit, minMessageSize, maxMessageSize))
	}
	count("transports", len(o.Transports))
	for d, tr := range o.Transports {
		word("transport domain", d)
		if d == o.Domain {
			errs = append(errs, fmt.Errorf("mtatest: transport domain %q is the mailbox domain", d))
		}
		if tr == "" || len(tr) > 254 || strings.ContainsAny(tr, "\r\n\x00") {
			errs = append(errs, fmt.Errorf("mtatest: transport of %q: want 1 to 254 characters on one line", d))
		}
	}
	count("extra main.cf lines", len(o.Extra))
	for _, l := range o.Extra {
		if strings.ContainsAny(l, "\r\n\x00") {
			errs = append(errs, fmt.Errorf("mtatest: extra main.cf line %q: want one line", l))
		}
	}
	return errors.Join(errs...)
}
