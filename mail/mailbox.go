package mail

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"

	"github.com/verifyq/verifyq/internal/field"
)

// DefaultTagSeparators separate a mailbox from its tag in a local part:
// "user+tag@example.com" is user@example.com's mailbox.
const DefaultTagSeparators = "+"

// idnaProfile converts domains to A-labels the way a resolver looks them up
// (UTS #46 with the IDNA2008 rules browsers and mail servers use), and
// refuses a domain whose mapping leaves an empty label or a label or name
// longer than DNS allows.
var idnaProfile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.Transitional(false), idna.VerifyDNSLength(true))

// DefaultMailboxRules are the rules providers document for their
// mailboxes, in ParseMailboxRules' syntax: Gmail ignores dots in the
// local part ("j.doe" and "jdoe" are one mailbox; Google's help "Dots
// don't matter in Gmail addresses",
// https://support.google.com/mail/answer/7436150), and googlemail.com is
// gmail.com under its older name, the same accounts.
const DefaultMailboxRules = "gmail.com:dots,googlemail.com=gmail.com"

// maxMailboxRules bounds the entries of a MailboxRules.
const maxMailboxRules = 256

// MailboxRule is what a provider documents about the mailboxes of one
// domain.
type MailboxRule struct {
	// Alias, when set, is the domain whose mailboxes these are: the
	// address is that domain's, under that domain's rule.
	Alias string
	// Dots says that dots in the local part are not part of the mailbox.
	Dots bool
}

// MailboxRules are the providers' rules by domain (a lower-case A-label).
type MailboxRules map[string]MailboxRule

// ParseMailboxRules parses comma-separated entries, each "domain:dots"
// (dots in the domain's local parts are ignored) or "alias=domain" (the
// alias's addresses are domain's mailboxes, under domain's rule), e.g.
// DefaultMailboxRules. Domains are folded as Domain folds them; empty
// entries are skipped. At most 256 entries; a domain listed twice, an
// alias of an alias, an unknown rule or a name that is no domain is an
// error naming the entry.
func ParseMailboxRules(s string) (MailboxRules, error) {
	out := MailboxRules{}
	var errs []error
	n := 0
	for _, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		if n++; n > maxMailboxRules {
			return nil, fmt.Errorf("more than %d entries", maxMailboxRules)
		}
		var name string
		var rule MailboxRule
		alias, target, isAlias := strings.Cut(entry, "=")
		if isAlias {
			name, rule.Alias = alias, target
		} else if domain, what, ok := strings.Cut(entry, ":"); ok && what == "dots" {
			name, rule.Dots = domain, true
		} else {
			errs = append(errs, fmt.Errorf("%q is neither domain:dots nor alias=domain", entry))
			continue
		}
		d, err := ruleDomain(name)
		if err == nil && isAlias {
			rule.Alias, err = ruleDomain(rule.Alias)
		}
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%q: %w", entry, err))
		case rule.Alias == d:
			errs = append(errs, fmt.Errorf("%q: a domain is not an alias of itself", entry))
		default:
			if _, dup := out[d]; dup {
				errs = append(errs, fmt.Errorf("%s is listed twice", d))
			}
			out[d] = rule
		}
	}
	for d, r := range out {
		if r.Alias != "" && out[r.Alias].Alias != "" {
			errs = append(errs, fmt.Errorf("%s: an alias of %s, itself an alias", d, r.Alias))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// ruleDomain folds a domain of a rule as Domain does, and checks it.
func ruleDomain(s string) (string, error) {
	s = strings.TrimSpace(s)
	if strings.ContainsAny(s, "@[]") || !strings.Contains(s, ".") || ValidateAddress("x@"+s) != nil {
		return "", errors.New("not a domain name")
	}
	return Domain("x@" + s), nil
}

// String returns rs in ParseMailboxRules' syntax, sorted.
func (rs MailboxRules) String() string {
	var out []string
	for _, d := range slices.Sorted(maps.Keys(rs)) {
		if rs[d].Alias != "" {
			out = append(out, d+"="+rs[d].Alias)
		} else if rs[d].Dots {
			out = append(out, d+":dots")
		}
	}
	return strings.Join(out, ",")
}

// Identity derives the identity of a mailbox from an address, for the
// limits: every spelling of one mailbox (case, tag, Unicode or A-label
// domain, and what its provider's rule folds) has one identity.
type Identity struct {
	// TagSeparators are the characters that start a tag in a local part;
	// empty means tags are part of the mailbox.
	TagSeparators string
	// Rules are the providers' rules (DefaultMailboxRules); nil is none.
	Rules MailboxRules
}

// Mailbox returns the identity of the mailbox s delivers to: the local
// part in lower case (ASCII letters only; other characters as they are),
// without its tag, "@", and the domain as a lower-case A-label; then the
// domain's rule, if it has one: an alias becomes its domain, and a domain
// that ignores dots loses those of the local part. s must have passed
// ValidateAddress.
func (id Identity) Mailbox(s string) string {
	at := strings.LastIndexByte(s, '@')
	local := asciiLower(s[:at])
	if i := strings.IndexAny(local, id.TagSeparators); i > 0 && id.TagSeparators != "" {
		local = local[:i]
	}
	domain := Domain(s)
	if r := id.Rules[domain]; r.Alias != "" {
		domain = r.Alias
	}
	if id.Rules[domain].Dots {
		local = strings.ReplaceAll(local, ".", "")
	}
	return local + "@" + domain
}

// Exact returns s, a valid address, as one exact address: the local part
// byte for byte as sent (case and tag kept), "@", and the domain as Domain
// has it. Two spellings of one mailbox that differ in the local part are
// two exact addresses; "Alice@Example.COM" and "Alice@example.com" are one.
func Exact(s string) string {
	at := strings.LastIndexByte(s, '@')
	return s[:at] + "@" + Domain(s)
}

// Domain returns the domain of s, a valid address, as a lower-case A-label
// (punycode): the form mail is sent to and limits count by.
func Domain(s string) string {
	d := s[strings.LastIndexByte(s, '@')+1:]
	if a, err := idnaProfile.ToASCII(d); err == nil {
		d = a
	}
	return asciiLower(d)
}

// ASCIIDomain returns s, a valid address, with an internationalized domain
// as its A-label, the form an SMTP server is given; an ASCII domain stays as
// sent.
func ASCIIDomain(s string) string {
	at := strings.LastIndexByte(s, '@')
	if IsASCII(s[at+1:]) {
		return s
	}
	return s[:at] + "@" + Domain(s)
}

// asciiLower folds A-Z to a-z and leaves every other byte as it is: simple
// ASCII folding, so that no non-ASCII character can become an ASCII one.
func asciiLower(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

// checkRunes refuses characters that make one mailbox look like another
// or hide in a log or on the wire: Unicode format characters (zero-width,
// direction overrides), the other default-ignorable characters (the
// combining grapheme joiner, variation selectors, Hangul fillers: drawn as
// nothing, and mapped to nothing in a domain), line and paragraph
// separators, private-use characters, U+FFFD (what a decoder makes of
// broken UTF-8), and non-ASCII characters whose case folding yields an
// ASCII one (the Kelvin sign K folds to k, the long s to s).
func checkRunes(s string) error {
	for _, r := range s {
		if r < utf8.RuneSelf {
			continue
		}
		switch {
		case unicode.Is(unicode.Cf, r), unicode.Is(unicode.Variation_Selector, r),
			unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r):
			return invalidAddress("contains an invisible character")
		case unicode.Is(unicode.Zl, r), unicode.Is(unicode.Zp, r):
			return invalidAddress("contains a line or paragraph separator")
		case unicode.Is(unicode.Co, r):
			return invalidAddress("contains a private-use character")
		case r == utf8.RuneError:
			return invalidAddress("contains U+FFFD, the mark of a broken encoding")
		case foldsToASCII(r):
			return invalidAddress("contains a character that folds to ASCII")
		}
	}
	return nil
}

// foldsToASCII reports whether a non-ASCII r is, under any case mapping or
// simple folding, an ASCII character.
func foldsToASCII(r rune) bool {
	if unicode.ToLower(r) < utf8.RuneSelf || unicode.ToUpper(r) < utf8.RuneSelf {
		return true
	}
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f < utf8.RuneSelf {
			return true
		}
	}
	return false
}

// Validate checks TagSeparators (field "TagSeparators"): ASCII characters
// that may stand in a local part, neither letters, digits nor "@".
func (id Identity) Validate() error {
	for _, r := range id.TagSeparators {
		if r >= utf8.RuneSelf || r <= ' ' || r == 0x7f || r == '@' || r == '"' || r == '\\' ||
			unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("(),:;<>[]", r) {
			return field.Errorf("TagSeparators", "%q cannot separate a tag in a local part", r)
		}
	}
	return nil
}

// IsASCII reports whether s has no byte outside ASCII: an address whose
// local part is not needs SMTPUTF8 (its domain goes as an A-label,
// ASCIIDomain).
func IsASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
