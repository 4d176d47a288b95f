package mail_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/mail"
)

func TestValidateAddress(t *testing.T) {
	t.Parallel()
	label := strings.Repeat("b", 63)                                                                     // the longest DNS label
	long := strings.Repeat("a", 64) + "@" + label + "." + label + "." + strings.Repeat("b", 58) + ".com" // 255 bytes
	require.Len(t, long, 255)
	maxAddr := strings.Repeat("a", 64) + "@" + label + "." + label + "." + strings.Repeat("b", 57) + ".com" // 254 bytes
	require.Len(t, maxAddr, 254)

	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"simple", "a@b.co", true},
		{"mixed case", "Mixed.Case@Example.COM", true},
		{"plus tag", "user+tag@example.com", true},
		{"localhost", "user@localhost", true},
		{"subdomain", "first.last@mail.example.co.uk", true},
		{"254 bytes", maxAddr, true},
		{"empty", "", false},
		{"no at", "a", false},
		{"no domain", "a@", false},
		{"no local part", "@b.co", false},
		{"display name", "A <a@b.co>", false},
		{"angle brackets", "<a@b.co>", false},
		{"leading space", " a@b.co", false},
		{"trailing space", "a@b.co ", false},
		{"inner space", "a b@c.co", false},
		{"comment", "a@b.co (me)", false},
		{"header injection CRLF", "a@b.co\r\nBcc: x@y.z", false},
		{"header injection LF", "a@b.co\nBcc: x@y.z", false},
		{"NUL", "a\x00@b.co", false},
		{"tab", "a\t@b.co", false},
		{"DEL", "a\x7f@b.co", false},
		{"255 bytes", long, false},
		{"label of 64 bytes", "a@" + strings.Repeat("b", 64) + ".com", false},
		{"local part 65 bytes", strings.Repeat("a", 65) + "@b.co", false},
		{"list", "a@b.co, c@d.co", false},
		{"two ats", "a@b@c.co", false},
		{"quoted local part", `"a b"@c.co`, false},
		{"domain literal", "a@[127.0.0.1]", false},
		{"invalid utf8", "a\xff@b.co", false},
		{"huge", strings.Repeat("a", 1<<20), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := mail.ValidateAddress(tt.in)
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, mail.ErrInvalidAddress)
			require.Less(t, len(err.Error()), 80, "error must not echo the input")
			if len(tt.in) > 3 {
				require.NotContains(t, err.Error(), tt.in)
			}
		})
	}
}

func TestMaskAddress(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"alice@example.com", "a***@example.com"},
		{"a@b.co", "a***@b.co"},
		{"Mixed.Case@Example.COM", "M***@Example.COM"},
		{"张三@example.com", "张***@example.com"},
		{"", "***"},
		{"not an address", "***"},
		{"A <a@b.co>", "***"},
		{"a@b.co\r\nBcc: x@y.z", "***"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, mail.MaskAddress(tt.in))
		})
	}
}

// Masked logs as MaskAddress has it, the full address never.
func TestMaskedLogsMasked(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "email", mail.Masked("someone@example.com"), "bad", mail.Masked("no at sign"))
	assert.Contains(t, b.String(), `"email":"s***@example.com"`)
	assert.Contains(t, b.String(), `"bad":"***"`)
	assert.NotContains(t, b.String(), "someone")
}
