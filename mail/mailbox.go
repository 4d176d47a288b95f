package mail

import (
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
// (UTS #46 with the IDNA2008 rules browsers and mail servers use).
var idnaProfile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.Transitional(false))

// Identity derives the identity of a mailbox from an address, for the
// limits: every spelling of one mailbox (case, tag, Unicode or A-label
// domain) has one identity.
type Identity struct {
	// TagSeparators are the characters that start a tag in a local part;
	// empty means tags are part of the mailbox.
	TagSeparators string
}

// Mailbox returns the identity of the mailbox s delivers to: the local
// part in lower case (ASCII letters only; other characters as they are),
// without its tag, "@", and the domain as a lower-case A-label. s must have
// passed ValidateAddress; the result's domain is Domain(s).
func (id Identity) Mailbox(s string) string {
	at := strings.LastIndexByte(s, '@')
	local := asciiLower(s[:at])
	if i := strings.IndexAny(local, id.TagSeparators); i > 0 && id.TagSeparators != "" {
		local = local[:i]
	}
	return local + "@" + Domain(s)
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
	if isASCII(s[at+1:]) {
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
// direction overrides), line and paragraph separators, private-use
// characters, U+FFFD (what a decoder makes of broken UTF-8), and non-ASCII
// characters whose case folding yields an ASCII one (the Kelvin sign K
// folds to k, the long s to s).
func checkRunes(s string) error {
	for _, r := range s {
		if r < utf8.RuneSelf {
			continue
		}
		switch {
		case unicode.Is(unicode.Cf, r):
			return invalidAddress("contains an invisible format character")
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

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
