package mail_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/mail"
)

func TestMailbox(t *testing.T) {
	t.Parallel()
	plus := mail.Identity{TagSeparators: mail.DefaultTagSeparators}
	rules, err := mail.ParseMailboxRules(mail.DefaultMailboxRules)
	require.NoError(t, err)
	google := mail.Identity{TagSeparators: mail.DefaultTagSeparators, Rules: rules}
	tests := []struct {
		id       mail.Identity
		in, want string
	}{
		{plus, "victim@example.com", "victim@example.com"},
		{plus, "victim+1@example.com", "victim@example.com"},
		{plus, "VICTIM+Newsletter@EXAMPLE.COM", "victim@example.com"},
		{plus, "a+b+c@example.com", "a@example.com"},
		{plus, "+tag@example.com", "+tag@example.com"}, // nothing before the separator: no tag
		{plus, "kim@bücher.de", "kim@xn--bcher-kva.de"},
		{plus, "kim@BÜCHER.de", "kim@xn--bcher-kva.de"},
		{plus, "kim@xn--bcher-kva.de", "kim@xn--bcher-kva.de"},
		{plus, "张三+x@example.com", "张三@example.com"},
		{plus, "Äbc@example.com", "Äbc@example.com"},      // only ASCII letters fold
		{plus, "kim@example\uFF0Ecom", "kim@example.com"}, // IDNA maps a fullwidth dot
		{mail.Identity{}, "victim+1@example.com", "victim+1@example.com"},
		{mail.Identity{TagSeparators: "+-"}, "victim-1@example.com", "victim@example.com"},
		{google, "J.Doe+x@gmail.com", "jdoe@gmail.com"},
		{google, "j.d.o.e@GoogleMail.com", "jdoe@gmail.com"},
		{google, "jdoe@googlemail.com", "jdoe@gmail.com"},
		{google, "j.doe@example.com", "j.doe@example.com"}, // no rule: dots count
		{google, "j.doe@mail.gmail.com", "j.doe@mail.gmail.com"},
		{plus, "j.doe@gmail.com", "j.doe@gmail.com"}, // no rules at all
	}
	for _, tt := range tests {
		require.NoError(t, mail.ValidateAddress(tt.in), tt.in)
		assert.Equal(t, tt.want, tt.id.Mailbox(tt.in), "%q with separators %q", tt.in, tt.id.TagSeparators)
	}
	assert.Equal(t, "kim@xn--bcher-kva.de", mail.ASCIIDomain("kim@Bücher.de"))
	assert.Equal(t, "Kim+x@xn--bcher-kva.de", mail.ASCIIDomain("Kim+x@bücher.de"), "the local part as sent")
}

func TestParseMailboxRules(t *testing.T) {
	t.Parallel()
	rules, err := mail.ParseMailboxRules(" Gmail.com:dots, googlemail.com=GMAIL.com ,,fastmail.example:dots,bücher.de=gmail.com")
	require.NoError(t, err)
	assert.Equal(t, mail.MailboxRules{
		"gmail.com":        {Dots: true},
		"googlemail.com":   {Alias: "gmail.com"},
		"fastmail.example": {Dots: true},
		"xn--bcher-kva.de": {Alias: "gmail.com"},
	}, rules)
	assert.Equal(t, "fastmail.example:dots,gmail.com:dots,googlemail.com=gmail.com,xn--bcher-kva.de=gmail.com", rules.String())
	none, err := mail.ParseMailboxRules("")
	require.NoError(t, err)
	assert.Empty(t, none, "empty: no rules")

	for in, want := range map[string]string{
		"gmail.com":                               `"gmail.com" is neither domain:dots nor alias=domain`,
		"gmail.com:tags":                          `"gmail.com:tags" is neither`,
		"gmail.com:dots,GMAIL.com:dots":           "gmail.com is listed twice",
		"a.example=b.example,b.example=c.example": "a.example: an alias of b.example, itself an alias",
		"gmail.com=gmail.com":                     "not an alias of itself",
		"localhost:dots":                          `"localhost:dots": not a domain name`,
		"x@y.example:dots":                        "not a domain name",
		"a.example=":                              `"a.example=": not a domain name`,
	} {
		_, err := mail.ParseMailboxRules(in)
		require.Error(t, err, in)
		assert.Contains(t, err.Error(), want, in)
	}
	_, err = mail.ParseMailboxRules(strings.Repeat("a.example:dots,", 257))
	assert.ErrorContains(t, err, "more than 256 entries")
}

// The exact address keeps the local part as sent and folds the domain only.
func TestExact(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"Alice+x@Example.COM": "Alice+x@example.com",
		"alice@example.com":   "alice@example.com",
		"Kim@BÜCHER.de":       "Kim@xn--bcher-kva.de",
		"张三@example.com":      "张三@example.com",
	} {
		require.NoError(t, mail.ValidateAddress(in), in)
		assert.Equal(t, want, mail.Exact(in), in)
	}
	assert.NotEqual(t, mail.Exact("alice@example.com"), mail.Exact("Alice@example.com"), "the local part is exact")
}

// Characters that disguise a mailbox or hide on the wire are refused, and
// the error never echoes them.
func TestValidateAddressRefusesDisguises(t *testing.T) {
	t.Parallel()
	for name, in := range map[string]string{
		"Kelvin sign folds to k":       "\u212Aim@example.com",
		"long s folds to s":            "\u017Fam@example.com",
		"dotted capital I lowers to i": "\u0130an@example.com",
		"zero-width space":             "ki\u200Bm@example.com",
		"right-to-left override":       "kim\u202E@example.com",
		"line separator":               "kim\u2028@example.com",
		"paragraph separator":          "kim@exa\u2029mple.com",
		"private use":                  "kim\uE000@example.com",
		"replacement character":        "kim\uFFFD@example.com",
		"byte order mark":              "\uFEFFkim@example.com",
		"combining grapheme joiner":    "ki\u034Fm@example.com",
		"variation selector":           "kim@exa\uFE0Fmple.com",
		"Hangul filler":                "kim\u3164@example.com",
		"domain of ignorables only":    "0@\u034F",
		"empty label after mapping":    "kim@b.\u3002c",
		"invalid IDN":                  "kim@xn--a.com",
	} {
		err := mail.ValidateAddress(in)
		require.ErrorIs(t, err, mail.ErrInvalidAddress, name)
		assert.NotContains(t, err.Error(), in, name)
	}
}

func TestIsASCII(t *testing.T) {
	t.Parallel()
	assert.True(t, mail.IsASCII("alice@example.com"))
	assert.True(t, mail.IsASCII(""))
	assert.False(t, mail.IsASCII("张三@example.com"))
	assert.False(t, mail.IsASCII("kim@bücher.de"))
}
