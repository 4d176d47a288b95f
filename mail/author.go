package mail

import (
	"errors"

	"github.com/verifyq/verifyq/internal/field"
)

// Author writes verifyq's mails: who they are from and what they say.
type Author struct {
	// From is the sender, a bare address or "Name <address>"; its address
	// is also the envelope sender.
	From string
	// ReplyTo, when set, is the Reply-To address, in the same forms as
	// From.
	ReplyTo string
	// Templates make the mails; nil means DefaultTemplates.
	Templates *Templates
}

// Validate reports every problem with a at once, each a *field.Error named
// after its field (From, ReplyTo).
func (a Author) Validate() error {
	var errs []error
	if _, err := parseFrom(a.From); err != nil {
		errs = append(errs, &field.Error{Field: "From", Err: err})
	}
	if a.ReplyTo != "" {
		if _, err := parseFrom(a.ReplyTo); err != nil {
			errs = append(errs, &field.Error{Field: "ReplyTo", Err: err})
		}
	}
	return errors.Join(errs...)
}

// Compose builds the mail of m (Templates.Compose).
func (a Author) Compose(m Message) (*Composed, error) {
	t := a.Templates
	if t == nil {
		t = DefaultTemplates()
	}
	return t.Compose(a.From, a.ReplyTo, m)
}

// EnvelopeFrom is From's bare address, its domain as an A-label, for MAIL
// FROM; "" when From is not valid (Validate).
func (a Author) EnvelopeFrom() string {
	f, err := parseFrom(a.From)
	if err != nil {
		return ""
	}
	return f.Address
}
