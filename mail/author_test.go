package mail_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/field"
	"github.com/verifyq/verifyq/mail"
)

// fieldErrors returns the *field.Error joined in err, by field.
func fieldErrors(t *testing.T, err error) map[string]*field.Error {
	t.Helper()
	j, ok := err.(interface{ Unwrap() []error })
	require.True(t, ok, "errors joined: %v", err)
	got := map[string]*field.Error{}
	for _, e := range j.Unwrap() {
		var fe *field.Error
		require.ErrorAs(t, e, &fe)
		got[fe.Field] = fe
	}
	return got
}

// NewAuthor reports a bad From and a bad Reply-To at once, each named
// after its field and wrapping ErrInvalidAddress, without repeating what
// an injected header would say; it returns no Author then.
func TestNewAuthorReportsEveryField(t *testing.T) {
	t.Parallel()
	a, err := mail.NewAuthor("a@b.co\r\nBcc: evil@example.net", "support@example.com, evil@example.net", nil)
	require.ErrorIs(t, err, mail.ErrInvalidAddress)
	got := fieldErrors(t, err)
	require.Len(t, got, 2)
	for _, name := range []string{"From", "ReplyTo"} {
		require.Contains(t, got, name)
		assert.ErrorIs(t, got[name], mail.ErrInvalidAddress, name)
	}
	assert.NotContains(t, err.Error(), "evil")
	assert.Empty(t, a.EnvelopeFrom(), "the zero Author")

	// One bad field, one error; an empty ReplyTo is none.
	_, err = mail.NewAuthor("not an address", "", nil)
	got = fieldErrors(t, err)
	require.Len(t, got, 1)
	assert.Contains(t, got, "From")
	_, err = mail.NewAuthor(testFrom, "support@acme.test\r\nBcc: evil@example.net", mail.DefaultTemplates())
	require.ErrorIs(t, err, mail.ErrInvalidAddress)
	got = fieldErrors(t, err)
	require.Len(t, got, 1)
	assert.Contains(t, got, "ReplyTo")
}

// The zero Author has no sender: it composes no mail and names no envelope
// sender, without a panic.
func TestZeroAuthor(t *testing.T) {
	t.Parallel()
	var a mail.Author
	c, err := a.Compose(testMessage())
	require.Error(t, err)
	assert.Nil(t, c)
	assert.Contains(t, err.Error(), "NewAuthor")
	assert.False(t, errors.Is(err, mail.ErrInvalidMessage), "not the message's fault")
	assert.Empty(t, a.EnvelopeFrom())
}
