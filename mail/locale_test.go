package mail_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/mail"
)

func TestParseLocale(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    mail.Locale
		wantErr bool
	}{
		{"", mail.DefaultLocale, false},
		{"zh-CN", mail.LocaleZhCN, false},
		{"ZH-cn", mail.LocaleZhCN, false},
		{"zh", mail.LocaleZhCN, false},
		{"en", mail.LocaleEN, false},
		{"EN", mail.LocaleEN, false},
		{"en-US", "", true},
		{"fr", "", true},
		{" en", "", true},
		{strings.Repeat("x", 1000), "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := mail.ParseLocale(tt.in)
			if tt.wantErr {
				require.ErrorIs(t, err, mail.ErrUnknownLocale)
				require.Less(t, len(err.Error()), 64, "error must not echo a huge input")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
	require.Equal(t, mail.LocaleZhCN, mail.DefaultLocale)
}
