package mail

import (
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	htmltemplate "html/template"
	netmail "net/mail"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode"

	"gopkg.in/gomail.v2"
)

// ErrInvalidMessage is wrapped by Compose and Send errors about a Message
// that can never be sent as is (bad code or lifetime, or a bad From).
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
}

//go:embed templates/*.tmpl
var templateFS embed.FS

var (
	textTemplates = texttemplate.Must(texttemplate.ParseFS(templateFS, "templates/*.txt.tmpl"))
	htmlTemplates = htmltemplate.Must(htmltemplate.ParseFS(templateFS, "templates/*.html.tmpl"))
)

// subjects holds the subject line per locale; every locale needs an entry
// and the two templates "<locale>.txt.tmpl" and "<locale>.html.tmpl".
var subjects = map[Locale]string{
	LocaleZhCN: "验证码",
	LocaleEN:   "Your verification code",
}

// templateData is what the templates see.
type templateData struct {
	Subject string
	Code    string
	Minutes int64
}

// Compose builds the verification mail for m, sent from from (a bare address
// or "Name <address>"). The result is multipart/alternative with a text/plain
// and a text/html part, both stating the code and the lifetime in whole
// minutes, rounded up. Headers are From, To, Subject, Date, Message-ID,
// Mime-Version and Auto-Submitted; the code is never put in a header.
//
// Errors wrap ErrInvalidAddress (From or To), ErrUnknownLocale or
// ErrInvalidMessage.
func Compose(from string, m Message) (*gomail.Message, error) {
	sender, err := parseFrom(from)
	if err != nil {
		return nil, fmt.Errorf("mail: from: %w", err)
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

	data := templateData{Subject: subjects[loc], Code: m.Code, Minutes: minutesUp(m.ExpiresIn)}
	var text, html bytes.Buffer
	if err := textTemplates.ExecuteTemplate(&text, string(loc)+".txt.tmpl", data); err != nil {
		return nil, fmt.Errorf("mail: render text: %w", err)
	}
	if err := htmlTemplates.ExecuteTemplate(&html, string(loc)+".html.tmpl", data); err != nil {
		return nil, fmt.Errorf("mail: render html: %w", err)
	}
	msgID, err := messageID(sender.Address)
	if err != nil {
		return nil, err
	}

	g := gomail.NewMessage(gomail.SetCharset("UTF-8"), gomail.SetEncoding(gomail.QuotedPrintable))
	g.SetAddressHeader("From", sender.Address, sender.Name)
	g.SetAddressHeader("To", ASCIIDomain(m.To), "")
	g.SetHeader("Subject", data.Subject)
	g.SetDateHeader("Date", time.Now())
	g.SetHeader("Message-ID", msgID)
	g.SetHeader("Auto-Submitted", "auto-generated")
	g.SetBody("text/plain", text.String())
	g.AddAlternative("text/html", html.String())
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
