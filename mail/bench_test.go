package mail_test

import (
	"io"
	"testing"

	"github.com/verifyq/verifyq/mail"
)

// BenchmarkCompose measures building a verification mail and rendering it
// to the bytes sent in DATA, per locale.
func BenchmarkCompose(b *testing.B) {
	for _, loc := range []mail.Locale{mail.LocaleZhCN, mail.LocaleEN} {
		b.Run(string(loc), func(b *testing.B) {
			m := testMessage()
			m.Locale = loc
			b.ReportAllocs()
			for b.Loop() {
				g, err := mail.Compose(testFrom, m)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := g.WriteTo(io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
