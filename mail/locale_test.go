package mail_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/mail"
)

// ParseLocale reads the names a task carries: a supported locale's name
// and nothing else.
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
		{"zh-TW", mail.LocaleZhTW, false},
		{"en", mail.LocaleEN, false},
		{"EN", mail.LocaleEN, false},
		{"pt-br", mail.LocalePtBR, false},
		{"ru", mail.LocaleRU, false},
		{"en-US", "", true},
		{"zh-HK", "", true},
		{"nl", "", true},
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
	for _, l := range mail.Locales() {
		got, err := mail.ParseLocale(string(l))
		require.NoError(t, err)
		require.Equal(t, l, got)
	}
}

// The locales the matcher picks among are the supported ones, and the
// issue's ten at least.
func TestLocales(t *testing.T) {
	t.Parallel()
	assert.Equal(t, []mail.Locale{"zh-CN", "zh-TW", "en", "ja", "ko", "es", "fr", "de", "pt-BR", "ru"}, mail.Locales())
	assert.Equal(t, mail.DefaultLocale, mail.Locales()[0])
	ls := mail.Locales()
	ls[0] = "xx"
	assert.Equal(t, mail.DefaultLocale, mail.Locales()[0], "Locales returns a copy")
}

// MatchLocale takes a BCP 47 tag and falls back through the matcher; a
// valid tag it finds nothing for is def; a malformed or too long one is
// an error.
func TestMatchLocale(t *testing.T) {
	t.Parallel()
	const def = mail.LocaleKO // not a locale any fallback below reaches
	tests := []struct {
		in      string
		want    mail.Locale
		wantErr string
	}{
		// each supported locale by its own name, and any case
		{in: "zh-CN", want: mail.LocaleZhCN}, {in: "zh-TW", want: mail.LocaleZhTW}, {in: "en", want: mail.LocaleEN},
		{in: "ja", want: mail.LocaleJA}, {in: "ko", want: mail.LocaleKO}, {in: "es", want: mail.LocaleES},
		{in: "fr", want: mail.LocaleFR}, {in: "de", want: mail.LocaleDE}, {in: "pt-BR", want: mail.LocalePtBR},
		{in: "ru", want: mail.LocaleRU}, {in: "ZH-tw", want: mail.LocaleZhTW}, {in: "PT-br", want: mail.LocalePtBR},
		// Traditional Chinese
		{in: "zh-HK", want: mail.LocaleZhTW}, {in: "zh-MO", want: mail.LocaleZhTW}, {in: "zh-Hant", want: mail.LocaleZhTW},
		{in: "zh-Hant-HK", want: mail.LocaleZhTW}, {in: "zh-Hant-CN", want: mail.LocaleZhTW},
		// Simplified Chinese
		{in: "zh", want: mail.LocaleZhCN}, {in: "zh-SG", want: mail.LocaleZhCN}, {in: "zh-Hans", want: mail.LocaleZhCN},
		{in: "zh-Hans-TW", want: mail.LocaleZhCN},
		// regions and extensions of the others
		{in: "en-GB", want: mail.LocaleEN}, {in: "en-US", want: mail.LocaleEN}, {in: "en_US", want: mail.LocaleEN},
		{in: "en-US-u-ca-gregory", want: mail.LocaleEN},
		{in: "pt", want: mail.LocalePtBR}, {in: "pt-PT", want: mail.LocalePtBR},
		{in: "es-MX", want: mail.LocaleES}, {in: "es-419", want: mail.LocaleES},
		{in: "fr-CA", want: mail.LocaleFR}, {in: "de-CH", want: mail.LocaleDE}, {in: "de-1996", want: mail.LocaleDE},
		{in: "ja-JP", want: mail.LocaleJA}, {in: "ru-UA", want: mail.LocaleRU},
		// valid tags the matcher finds nothing for
		{in: "", want: def}, {in: "nl", want: def}, {in: "uk", want: def}, {in: "und", want: def},
		{in: "yue", want: def}, {in: "x-private", want: def},
		// not tags
		{in: "english", wantErr: "not a valid BCP 47 language tag"},
		{in: "en-", wantErr: "not a valid BCP 47 language tag"},
		{in: "xx", wantErr: "not a valid BCP 47 language tag"}, // well-formed, not registered
		{in: "en GB", wantErr: "not a valid BCP 47 language tag"},
		{in: "zh-CN\n", wantErr: "not a valid BCP 47 language tag"},
		{in: "a-" + strings.Repeat("b", 60), wantErr: "not a valid BCP 47 language tag"},
		{in: "en-" + strings.Repeat("a-", 31), wantErr: "longer than 64 bytes"},
		{in: strings.Repeat("x", 10000), wantErr: "longer than 64 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := mail.MatchLocale(tt.in, def)
			if tt.wantErr != "" {
				require.ErrorIs(t, err, mail.ErrUnknownLocale)
				assert.Contains(t, err.Error(), tt.wantErr)
				assert.Less(t, len(err.Error()), 80, "error must not echo a long input")
				assert.NotContains(t, err.Error(), "\n")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// MatchAcceptLanguage takes the first tag, by q-value, that the matcher
// finds a locale for.
func TestMatchAcceptLanguage(t *testing.T) {
	t.Parallel()
	const def = mail.LocaleKO
	tests := []struct {
		in   string
		want mail.Locale
	}{
		{in: "", want: def},
		{in: "ja", want: mail.LocaleJA},
		{in: "zh-HK", want: mail.LocaleZhTW},
		// the first preference decides, even when a later one matches
		// more closely
		{in: "zh-HK,zh;q=0.9,en;q=0.8", want: mail.LocaleZhTW},
		{in: "zh-TW,zh-CN;q=0.9", want: mail.LocaleZhTW},
		{in: "en-GB,en;q=0.9,fr;q=0.8", want: mail.LocaleEN},
		// q-values order the tags, not their place
		{in: "fr;q=0.5, de;q=0.8", want: mail.LocaleDE},
		{in: "fr;q=0.5, de", want: mail.LocaleDE},
		// q=0 is "not this one"
		{in: "fr;q=0, de;q=0.1", want: mail.LocaleDE},
		// tags without a locale are skipped
		{in: "nl, uk;q=0.9, pt-PT;q=0.8", want: mail.LocalePtBR},
		{in: "nl, uk", want: def},
		{in: "*", want: def},
		{in: "  es-MX ,  en;q=0.2 ", want: mail.LocaleES},
		// malformed or too long: the default, not a refusal
		{in: "en;q=x", want: def},
		{in: "en-", want: def},
		{in: strings.Repeat("en-US;q=0.5, ", 100), want: def},
		{in: strings.Repeat("ja;q=0.5,", 113), want: mail.LocaleJA}, // 1017 bytes
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tt.want, mail.MatchAcceptLanguage(tt.in, def))
		})
	}
}
