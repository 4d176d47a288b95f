package mail_test

import (
	"bytes"
	netmail "net/mail"
	"strings"
	"testing"
	"time"

	"github.com/verifyq/verifyq/mail"
)

// FuzzValidateAddress checks that whatever ValidateAddress accepts is a bare
// address that cannot inject a header into the composed mail.
func FuzzValidateAddress(f *testing.F) {
	for _, s := range []string{
		"a@example.com", "Mixed.Case@Example.COM", "user+tag@example.com", `"quoted local"@example.com`,
		"A <a@example.com>", "a@example.com\r\nBcc: b@example.com", "a@example.com\nSubject: x",
		"a@b.co, c@d.co", "=?utf-8?q?a?=@example.com", "用户@例子.广告", "a\x00@example.com", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if mail.ValidateAddress(s) != nil {
			return
		}
		if len(s) > 254 || strings.ContainsAny(s, "\r\n\x00") {
			t.Fatalf("accepted %q", s)
		}
		a, err := netmail.ParseAddress(s)
		if err != nil || a.Name != "" || a.Address != s {
			t.Fatalf("accepted %q, which net/mail reads as %+v (%v)", s, a, err)
		}
		m, err := mail.Compose("no-reply@example.com", mail.Message{To: s, Locale: mail.LocaleEN, Code: "123456", ExpiresIn: time.Minute})
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if _, err := m.WriteTo(&buf); err != nil {
			t.Fatalf("write: %v", err)
		}
		msg, err := netmail.ReadMessage(&buf)
		if err != nil {
			t.Fatalf("composed mail for %q does not parse: %v", s, err)
		}
		for _, h := range []string{"Bcc", "Cc", "Reply-To"} {
			if msg.Header.Get(h) != "" {
				t.Fatalf("%q injected a %s header", s, h)
			}
		}
		to, err := msg.Header.AddressList("To")
		if err != nil || len(to) != 1 || to[0].Address != mail.ASCIIDomain(s) {
			t.Fatalf("To for %q reads back as %v (%v), want its domain as an A-label", s, to, err)
		}
	})
}
