package mail

import (
	"testing"

	"golang.org/x/text/feature/plural"

	"github.com/stretchr/testify/assert"
)

// The lifetime takes the plural form its number asks for in each locale:
// Russian has three after whole numbers (1, 21 минуту; 2, 22 минуты; 5,
// 11, 25 минут), the languages of Europe two, those of East Asia one.
func TestLifetime(t *testing.T) {
	t.Parallel()
	tests := []struct {
		loc  Locale
		n    int64
		want string
	}{
		{LocaleRU, 1, "1 минуту"}, {LocaleRU, 2, "2 минуты"}, {LocaleRU, 4, "4 минуты"}, {LocaleRU, 5, "5 минут"},
		{LocaleRU, 10, "10 минут"}, {LocaleRU, 11, "11 минут"}, {LocaleRU, 12, "12 минут"}, {LocaleRU, 21, "21 минуту"},
		{LocaleRU, 22, "22 минуты"}, {LocaleRU, 25, "25 минут"}, {LocaleRU, 101, "101 минуту"}, {LocaleRU, 111, "111 минут"},
		{LocaleRU, 1440, "1440 минут"},
		{LocaleEN, 1, "1 minute"}, {LocaleEN, 2, "2 minutes"}, {LocaleEN, 21, "21 minutes"},
		{LocaleES, 1, "1 minuto"}, {LocaleES, 10, "10 minutos"},
		{LocaleFR, 1, "1\u00a0minute"}, {LocaleFR, 10, "10\u00a0minutes"},
		{LocaleDE, 1, "1 Minute"}, {LocaleDE, 10, "10 Minuten"},
		{LocalePtBR, 1, "1 minuto"}, {LocalePtBR, 10, "10 minutos"},
		{LocaleZhCN, 1, "1 分钟"}, {LocaleZhCN, 10, "10 分钟"},
		{LocaleZhTW, 10, "10 分鐘"}, {LocaleJA, 10, "10分"}, {LocaleKO, 10, "10분"},
		{LocaleRU, 1<<40 + 1, "1099511627777 минут"}, // ends in 77: many
		{LocaleEN, 1 << 40, "1099511627776 minutes"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, lifetime(tt.loc, tt.n), "%s %d", tt.loc, tt.n)
	}
	for _, loc := range locales {
		assert.NotEmpty(t, minuteWords[loc].forms[plural.Other], "%s has no word for minutes", loc)
	}
}
