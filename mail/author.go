package mail

import (
	"errors"

	"github.com/verifyq/verifyq/internal/field"
)

// errNoAuthor is the error of the zero Author's Compose.
var errNoAuthor = errors.New("mail: no sender: an Author is made by NewAuthor")

// Author writes verifyq's mails: who they are from and what they say. It
// is made by NewAuthor, which parses its sender once; the zero Author has
// none, and composes no mail.
type Author struct {
	s *sender    // From and ReplyTo, parsed
	t *Templates // not nil but in the zero Author
}

// NewAuthor returns the Author of mails from from, a bare address or "Name
// <address>" whose address is also the envelope sender (EnvelopeFrom),
// with the Reply-To replyTo ("" for none, else the same forms), made with
// t's templates (nil means DefaultTemplates). It reports every problem at
// once, each a *field.Error named after its parameter (From, ReplyTo)
// that wraps ErrInvalidAddress.
func NewAuthor(from, replyTo string, t *Templates) (Author, error) {
	if t == nil {
		t = DefaultTemplates()
	}
	s := &sender{key: senderKey{from, replyTo}}
	var errs []error
	var err error
	if s.from, err = parseFrom(from); err != nil {
		errs = append(errs, &field.Error{Field: "From", Err: err})
	}
	if replyTo != "" {
		if s.reply, err = parseFrom(replyTo); err != nil {
			errs = append(errs, &field.Error{Field: "ReplyTo", Err: err})
		}
	}
	if len(errs) > 0 {
		return Author{}, errors.Join(errs...)
	}
	return Author{s: t.keep(s), t: t}, nil
}

// Compose builds the mail of m from a's sender, parsed, and templates (see
// Templates.Compose). The zero Author's Compose returns an error.
func (a Author) Compose(m Message) (*Composed, error) {
	if a.s == nil {
		return nil, errNoAuthor
	}
	return a.t.compose(a.s, m)
}

// EnvelopeFrom is From's bare address, its domain as an A-label, for MAIL
// FROM; "" only for the zero Author.
func (a Author) EnvelopeFrom() string {
	if a.s == nil {
		return ""
	}
	return a.s.from.Address
}
