package mail_test

import (
	"io"
	"testing"

	"github.com/verifyq/verifyq/mail"
)

// BenchmarkCompose measures building a verification mail and rendering it
// to the bytes sent in DATA, per locale.
func BenchmarkCompose(b *testing.B) {
	for _, loc := range mail.Locales() {
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

// BenchmarkValidateAddress measures the check of a recipient, which the
// enqueuer runs on every send (and again to mask it in the access log),
// for a common address and an internationalized one.
func BenchmarkValidateAddress(b *testing.B) {
	for _, tc := range []struct{ name, addr string }{
		{"plain", "alice.smith+news@example.com"},
		{"idn", "用户@例子.广告"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := mail.ValidateAddress(tc.addr); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
