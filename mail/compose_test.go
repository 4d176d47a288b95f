package mail_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/mail"
)

const testFrom = "Verifyq <no-reply@verifyq.test>"

// compose renders m and parses it back like a receiving MTA would.
func compose(t *testing.T, m mail.Message) smtptest.Message {
	t.Helper()
	g, err := mail.Compose(testFrom, m)
	require.NoError(t, err)
	var buf bytes.Buffer
	_, err = g.WriteTo(&buf)
	require.NoError(t, err)
	return smtptest.ParseMessage(buf.Bytes())
}

func TestComposeLocales(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		locale    mail.Locale
		expiresIn time.Duration
		subject   string
		text      string // must appear in the text part
		html      []string
	}{
		{"zh-CN 10m", mail.LocaleZhCN, 10 * time.Minute, "验证码",
			"您的验证码为 482916，请在 10 分钟内完成验证。", []string{"482916", "10 分钟"}},
		{"default locale is zh-CN", "", 10 * time.Minute, "验证码",
			"您的验证码为 482916，请在 10 分钟内完成验证。", []string{"482916", "10 分钟"}},
		{"zh-CN rounds up", mail.LocaleZhCN, 4*time.Minute + time.Second, "验证码",
			"请在 5 分钟内完成验证", []string{"482916", "5 分钟"}},
		{"en 10m", mail.LocaleEN, 10 * time.Minute, "Your verification code",
			"Your verification code is 482916. It expires in 10 minutes.", []string{"482916", "10 minutes"}},
		{"en singular", mail.LocaleEN, time.Minute, "Your verification code",
			"It expires in 1 minute.", []string{"482916", "1 minute."}},
		{"en less than a minute is 1 minute", mail.LocaleEN, 5 * time.Second, "Your verification code",
			"It expires in 1 minute.", []string{"1 minute."}},
		{"en rounds up", mail.LocaleEN, 9*time.Minute + 1, "Your verification code",
			"It expires in 10 minutes.", []string{"10 minutes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msg := compose(t, mail.Message{To: "user@example.com", Locale: tt.locale, Code: "482916", ExpiresIn: tt.expiresIn})

			require.Equal(t, tt.subject, msg.Subject)
			require.Contains(t, msg.Text, tt.text)
			require.Contains(t, msg.Text, "482916")
			for _, h := range tt.html {
				require.Contains(t, msg.HTML, h)
			}
			require.Contains(t, msg.HTML, "<html")

			// Headers: never the code, and the mandatory ones are there.
			require.Equal(t, "user@example.com", msg.Header.Get("To"))
			require.Contains(t, msg.Header.Get("From"), "no-reply@verifyq.test")
			require.NotEmpty(t, msg.Header.Get("Date"))
			require.Regexp(t, `^<[0-9a-f]{32}@verifyq\.test>$`, msg.Header.Get("Message-ID"))
			ct := msg.Header.Get("Content-Type")
			require.True(t, strings.HasPrefix(ct, "multipart/alternative"), ct)
			for k, vs := range msg.Header {
				for _, v := range vs {
					require.NotContains(t, v, "482916", "header %s carries the code", k)
				}
			}
		})
	}
}

func TestComposeSubjectIsEncoded(t *testing.T) {
	t.Parallel()
	msg := compose(t, mail.Message{To: "user@example.com", Locale: mail.LocaleZhCN, Code: "1", ExpiresIn: time.Minute})
	raw := string(msg.Raw)
	require.Contains(t, raw, "Subject: =?UTF-8?")
	require.NotContains(t, raw, "Subject: 验证码", "non-ASCII subject must be RFC 2047 encoded")
	require.Equal(t, "验证码", msg.Subject)
}

func TestComposeRejects(t *testing.T) {
	t.Parallel()
	ok := mail.Message{To: "user@example.com", Locale: mail.LocaleEN, Code: "123456", ExpiresIn: time.Minute}
	tests := []struct {
		name   string
		from   string
		mutate func(*mail.Message)
		target error
	}{
		{"To header injection", testFrom, func(m *mail.Message) { m.To = "user@example.com\r\nBcc: evil@example.net" }, mail.ErrInvalidAddress},
		{"To with display name", testFrom, func(m *mail.Message) { m.To = "Eve <user@example.com>" }, mail.ErrInvalidAddress},
		{"To list", testFrom, func(m *mail.Message) { m.To = "user@example.com, evil@example.net" }, mail.ErrInvalidAddress},
		{"From injection", "no-reply@verifyq.test\r\nBcc: evil@example.net", func(*mail.Message) {}, mail.ErrInvalidAddress},
		{"From empty", "", func(*mail.Message) {}, mail.ErrInvalidAddress},
		{"unknown locale", testFrom, func(m *mail.Message) { m.Locale = "fr" }, mail.ErrUnknownLocale},
		{"empty code", testFrom, func(m *mail.Message) { m.Code = "" }, mail.ErrInvalidMessage},
		{"code with newline", testFrom, func(m *mail.Message) { m.Code = "12\r\n34" }, mail.ErrInvalidMessage},
		{"code too long", testFrom, func(m *mail.Message) { m.Code = strings.Repeat("1", 65) }, mail.ErrInvalidMessage},
		{"zero lifetime", testFrom, func(m *mail.Message) { m.ExpiresIn = 0 }, mail.ErrInvalidMessage},
		{"negative lifetime", testFrom, func(m *mail.Message) { m.ExpiresIn = -time.Second }, mail.ErrInvalidMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := ok
			tt.mutate(&m)
			_, err := mail.Compose(tt.from, m)
			require.ErrorIs(t, err, tt.target)
			require.True(t, mail.IsPermanent(err))
			require.NotContains(t, err.Error(), "evil")
		})
	}
}

func TestComposeHTMLEscapes(t *testing.T) {
	t.Parallel()
	msg := compose(t, mail.Message{To: "user@example.com", Locale: mail.LocaleEN, Code: "<b>&", ExpiresIn: time.Minute})
	require.Contains(t, msg.HTML, "&lt;b&gt;&amp;")
	require.Contains(t, msg.Text, "<b>&")
}
