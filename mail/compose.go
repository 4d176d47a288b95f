package mail

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	netmail "net/mail"
	"strings"
	"time"
	"unicode"

	"gopkg.in/gomail.v2"

	"github.com/verifyq/verifyq/codes"
)

// ErrInvalidMessage is wrapped by Compose and Send errors about a Message
// that can never be sent as is (bad code, lifetime or purpose).
var ErrInvalidMessage = errors.New("invalid message")

// maxCodeLen bounds the length of a verification code.
const maxCodeLen = 64

// Message is one verification mail.
type Message struct {
	// To is the recipient, a bare address (see ValidateAddress).
	To string
	// Locale selects the language; empty means DefaultLocale.
	Locale Locale
	// Code is the verification code: 1 to 64 printable ASCII characters
	// without spaces. It only ever appears in the body.
	Code string
	// ExpiresIn is the code's remaining lifetime; it must be positive. The
	// mail states it in whole minutes, rounded up.
	ExpiresIn time.Duration
	// Purpose is what the code is for (see codes.ValidatePurpose); it picks the
	// templates of that purpose when there are any. Empty is the default
	// purpose.
	Purpose string
}

// Compose builds the verification mail for m with the embedded templates,
// without an app name, a link or a Reply-To; see Templates.Compose.
func Compose(from string, m Message) (*gomail.Message, error) {
	return DefaultTemplates().Compose(from, "", m)
}

// Compose builds the verification mail for m from t's templates for
// m.Purpose and m.Locale, sent from from (a bare address or "Name
// <address>") with an optional Reply-To, replyTo (the same forms; "" for
// none). The result is multipart/alternative with a text/plain and a
// text/html part, both stating the code and the lifetime in whole minutes,
// rounded up, and the link when t has one. Headers are From, To, Subject,
// Date, Message-ID, Mime-Version, Auto-Submitted and, when set, Reply-To;
// the code and the link are never put in a header.
//
// Errors wrap ErrInvalidAddress (From, Reply-To or To), ErrUnknownLocale or
// ErrInvalidMessage.
func (t *Templates) Compose(from, replyTo string, m Message) (*gomail.Message, error) {
	sender, err := parseFrom(from)
	if err != nil {
		return nil, fmt.Errorf("mail: from: %w", err)
	}
	var reply *netmail.Address
	if replyTo != "" {
		if reply, err = parseFrom(replyTo); err != nil {
			return nil, fmt.Errorf("mail: reply-to: %w", err)
		}
	}
	if err := ValidateAddress(m.To); err != nil {
		return nil, fmt.Errorf("mail: recipient: %w", err)
	}
	loc, err := ParseLocale(string(m.Locale))
	if err != nil {
		return nil, fmt.Errorf("mail: %w", err)
	}
	if err := validateCode(m.Code); err != nil {
		return nil, err
	}
	if m.ExpiresIn <= 0 {
		return nil, fmt.Errorf("mail: %w: non-positive lifetime", ErrInvalidMessage)
	}
	if err := codes.ValidatePurpose(m.Purpose); err != nil {
		return nil, fmt.Errorf("mail: %w: purpose: %w", ErrInvalidMessage, err)
	}

	var replyAddr string
	if reply != nil {
		replyAddr = reply.Address
	}
	data := t.data(m.Purpose, loc, m.To, m.Code, minutesUp(m.ExpiresIn), replyAddr)
	subject, text, html, err := t.render(t.lookup(m.Purpose, loc), data)
	if err != nil {
		return nil, fmt.Errorf("mail: render: %w", err)
	}
	msgID, err := messageID(sender.Address)
	if err != nil {
		return nil, err
	}

	g := gomail.NewMessage(gomail.SetCharset("UTF-8"), gomail.SetEncoding(gomail.QuotedPrintable))
	g.SetAddressHeader("From", sender.Address, sender.Name)
	if reply != nil {
		g.SetAddressHeader("Reply-To", reply.Address, reply.Name)
	}
	g.SetAddressHeader("To", ASCIIDomain(m.To), "")
	g.SetHeader("Subject", subject)
	g.SetDateHeader("Date", time.Now())
	g.SetHeader("Message-ID", msgID)
	g.SetHeader("Auto-Submitted", "auto-generated")
	g.SetBody("text/plain", text)
	g.AddAlternative("text/html", html)
	return g, nil
}

// parseFrom parses a sender given as a bare address or "Name <address>".
func parseFrom(from string) (*netmail.Address, error) {
	if strings.ContainsFunc(from, unicode.IsControl) {
		return nil, fmt.Errorf("%w: contains a control character", ErrInvalidAddress)
	}
	a, err := netmail.ParseAddress(from)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed", ErrInvalidAddress)
	}
	if err := ValidateAddress(a.Address); err != nil {
		return nil, err
	}
	return a, nil
}

func validateCode(code string) error {
	if code == "" || len(code) > maxCodeLen {
		return fmt.Errorf("mail: %w: code must be 1 to %d characters", ErrInvalidMessage, maxCodeLen)
	}
	for i := 0; i < len(code); i++ {
		if c := code[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("mail: %w: code must be printable ASCII without spaces", ErrInvalidMessage)
		}
	}
	return nil
}

// minutesUp returns d in whole minutes, rounded up, at least 1.
func minutesUp(d time.Duration) int64 {
	m := int64(d / time.Minute)
	if d%time.Minute != 0 {
		m++
	}
	return max(m, 1)
}

// messageID returns a random RFC 5322 Message-ID in the sender's domain.
func messageID(sender string) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("mail: message id: %w", err)
	}
	domain := sender[strings.LastIndexByte(sender, '@')+1:]
	return "<" + hex.EncodeToString(b[:]) + "@" + domain + ">", nil
}
