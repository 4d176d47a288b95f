package mail

import (
	"errors"
	"fmt"
	"log/slog"
	netmail "net/mail"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrInvalidAddress is wrapped by every address validation error.
var ErrInvalidAddress = errors.New("invalid email address")

// Address length limits from RFC 5321 section 4.5.3.1.
const (
	maxAddressLen   = 254
	maxLocalPartLen = 64
)

func invalidAddress(reason string) error {
	return fmt.Errorf("%w: %s", ErrInvalidAddress, reason)
}

// ValidateAddress reports whether s is a bare addr-spec acceptable as a
// recipient, such as "user+tag@example.com". It rejects display names, angle
// brackets, comments, lists, surrounding or inner spaces, CR, LF, NUL and
// other control characters, invalid UTF-8, Unicode format, separator and
// private-use characters and the other invisible (default-ignorable) ones,
// non-ASCII characters whose case folding is ASCII, domains that are not
// valid IDNA or have a label over 63 bytes as an A-label, addresses over
// 254 bytes (also with the domain as an A-label) and local parts over 64
// bytes. Single-label domains such as "localhost" are allowed, and so are
// non-ASCII local parts (sent with SMTPUTF8) and internationalized domains
// (sent as A-labels).
//
// Errors wrap ErrInvalidAddress with a short reason; they never echo s.
func ValidateAddress(s string) error {
	if isPlainAddress(s) {
		return nil // what validateAddress says of it, without parsing
	}
	return validateAddress(s)
}

// isPlainAddress reports whether s is an address of the common kind that
// passes every check of validateAddress: a dot-atom local part of ASCII
// letters, digits and "._+-", up to maxLocalPartLen bytes, and a domain of
// labels of 1 to 63 ASCII letters, digits and hyphens that neither start
// nor end with a hyphen nor hold two in a row, maxAddressLen bytes in all.
// False says nothing: such an address is checked in full. (A fuzz test
// holds every address it accepts to validateAddress.)
func isPlainAddress(s string) bool {
	if len(s) > maxAddressLen {
		return false
	}
	at := strings.IndexByte(s, '@')
	if at < 1 || at > maxLocalPartLen || at == len(s)-1 {
		return false
	}
	prev := byte('.') // a local part and a label may not start with "." or "-"
	for i := 0; i < at; i++ {
		c := s[i]
		switch {
		case isAlnum(c), c == '_' || c == '+' || c == '-':
		case c == '.' && prev != '.':
		default:
			return false
		}
		prev = c
	}
	if prev == '.' {
		return false
	}
	label := 0
	prev = '.'
	for i := at + 1; i < len(s); i++ {
		c := s[i]
		switch {
		case isAlnum(c):
			label++
		case c == '-' && prev != '.' && prev != '-':
			label++
		case c == '.' && prev != '.' && prev != '-':
			label = 0
		default:
			return false
		}
		if label > 63 {
			return false
		}
		prev = c
	}
	return prev != '.' && prev != '-'
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// validateAddress is ValidateAddress's every check.
func validateAddress(s string) error {
	switch {
	case s == "":
		return invalidAddress("empty")
	case len(s) > maxAddressLen:
		return invalidAddress("too long")
	case !utf8.ValidString(s):
		return invalidAddress("not valid UTF-8")
	case strings.ContainsFunc(s, unicode.IsControl):
		return invalidAddress("contains a control character")
	}
	if err := checkRunes(s); err != nil {
		return err
	}
	a, err := netmail.ParseAddress(s)
	if err != nil {
		return invalidAddress("malformed")
	}
	if a.Name != "" || a.Address != s {
		return invalidAddress("not a bare address")
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return invalidAddress("missing local part or domain")
	}
	if at > maxLocalPartLen {
		return invalidAddress("local part too long")
	}
	if strings.HasPrefix(s[at+1:], "[") {
		return invalidAddress("domain literals are not accepted")
	}
	if a, err := idnaProfile.ToASCII(s[at+1:]); err != nil || len(s[:at+1])+len(a) > maxAddressLen {
		return invalidAddress("domain is not a valid internationalized domain name")
	}
	return nil
}

// MaskAddress returns a form of s that is safe for logs: the first character
// of the local part, "***", "@" and the domain, e.g. "a***@example.com". It
// returns "***" if s is not a valid address.
func MaskAddress(s string) string {
	if ValidateAddress(s) != nil {
		return "***"
	}
	at := strings.LastIndexByte(s, '@')
	_, size := utf8.DecodeRuneInString(s)
	return s[:size] + "***" + s[at:]
}

// Masked is an address that logs as MaskAddress has it: a slog.LogValuer,
// so that a line that is not logged (a debug line at info level) does not
// check and mask the address at all.
type Masked string

// LogValue is MaskAddress of m.
func (m Masked) LogValue() slog.Value { return slog.StringValue(MaskAddress(string(m))) }
