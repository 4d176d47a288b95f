package mail_test

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	netmail "net/mail"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
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
			"Your verification code is 482916. Enter it within 10 minutes to verify your email address.", []string{"482916", "10 minutes"}},
		{"en singular", mail.LocaleEN, time.Minute, "Your verification code",
			"Enter it within 1 minute to", []string{"482916", "1 minute to"}},
		{"en less than a minute is 1 minute", mail.LocaleEN, 5 * time.Second, "Your verification code",
			"Enter it within 1 minute to", []string{"1 minute to"}},
		{"en rounds up", mail.LocaleEN, 9*time.Minute + 1, "Your verification code",
			"Enter it within 10 minutes to", []string{"10 minutes"}},
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
		{"unknown locale", testFrom, func(m *mail.Message) { m.Locale = "nl" }, mail.ErrUnknownLocale},
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

// write renders c to bytes as the Sender would in DATA.
func write(t *testing.T, c interface {
	WriteTo(io.Writer) (int64, error)
}) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := c.WriteTo(&buf)
	require.NoError(t, err)
	require.Equal(t, int64(buf.Len()), n)
	return buf.Bytes()
}

// headerNames returns the names of the top-level header fields of raw, in
// the order written.
func headerNames(t *testing.T, raw []byte) []string {
	t.Helper()
	head, _, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	require.True(t, ok)
	var names []string
	for line := range strings.SplitSeq(string(head), "\r\n") {
		if line[0] == ' ' || line[0] == '\t' {
			continue
		}
		name, _, ok := strings.Cut(line, ":")
		require.True(t, ok, line)
		names = append(names, name)
	}
	return names
}

// The header fields come in one declared order, write after write; gomail
// alone writes them from a map, in a new order each time.
func TestComposeHeaderOrder(t *testing.T) {
	t.Parallel()
	tests := []struct {
		replyTo string
		want    []string
	}{
		{"", []string{"From", "To", "Subject", "Date", "Message-ID", "Mime-Version",
			"Content-Language", "Auto-Submitted", "Content-Type"}},
		{"support@verifyq.test", []string{"From", "To", "Subject", "Date", "Message-ID", "Mime-Version",
			"Content-Language", "Auto-Submitted", "Reply-To", "Content-Type"}},
	}
	for _, tt := range tests {
		c, err := mail.DefaultTemplates().Compose(testFrom, tt.replyTo, mail.Message{To: "user@example.com",
			Locale: mail.LocaleEN, Code: "482916", ExpiresIn: time.Minute})
		require.NoError(t, err)
		first := write(t, c)
		require.Equal(t, tt.want, headerNames(t, first))
		for range 20 {
			require.Equal(t, tt.want, headerNames(t, write(t, c)), "reply-to %q", tt.replyTo)
		}
		// The same mail each time, but for the MIME boundary.
		msg := smtptest.ParseMessage(first)
		again := smtptest.ParseMessage(write(t, c))
		delete(msg.Header, "Content-Type") // the boundary
		delete(again.Header, "Content-Type")
		require.Equal(t, msg.Header, again.Header, "the same header values")
		require.Equal(t, msg.Text, again.Text)
		require.Equal(t, msg.HTML, again.HTML)
	}
}

func TestComposeContentLanguage(t *testing.T) {
	t.Parallel()
	for loc, want := range map[mail.Locale]string{mail.LocaleZhCN: "zh-CN", mail.LocaleEN: "en", "": "zh-CN", "ZH": "zh-CN"} {
		msg := compose(t, mail.Message{To: "user@example.com", Locale: loc, Code: "482916", ExpiresIn: time.Minute})
		require.Equal(t, []string{want}, msg.Header["Content-Language"], "locale %q", loc)
	}
}

// partEncodings returns the Content-Transfer-Encoding of the text/plain
// and the text/html part of raw.
func partEncodings(t *testing.T, raw []byte) (text, html string) {
	t.Helper()
	m, err := netmail.ReadMessage(bytes.NewReader(raw))
	require.NoError(t, err)
	_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	require.NoError(t, err)
	r := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := r.NextRawPart()
		if errors.Is(err, io.EOF) {
			return text, html
		}
		require.NoError(t, err)
		switch ct := p.Header.Get("Content-Type"); {
		case strings.HasPrefix(ct, "text/plain"):
			text = p.Header.Get("Content-Transfer-Encoding")
		case strings.HasPrefix(ct, "text/html"):
			html = p.Header.Get("Content-Transfer-Encoding")
		}
	}
}

// Chinese text parts are base64, which takes 4 bytes for 3 where
// quoted-printable takes 9 for a Chinese character; English ones stay
// quoted-printable. A zh-CN mail is no more than 1.5 times the size of the
// en mail of the same purpose.
func TestComposeSizeByLocale(t *testing.T) {
	t.Parallel()
	for _, purpose := range append([]string{""}, codes.DefaultPurposes...) {
		size := map[mail.Locale]int{}
		for _, loc := range []mail.Locale{mail.LocaleZhCN, mail.LocaleEN} {
			c, err := mail.Compose(testFrom, mail.Message{To: "user@example.com", Locale: loc, Code: "482916",
				ExpiresIn: 10 * time.Minute, Purpose: purpose})
			require.NoError(t, err)
			raw := write(t, c)
			size[loc] = len(raw)
			text, html := partEncodings(t, raw)
			if loc == mail.LocaleEN {
				assert.Equal(t, "quoted-printable", text, purpose)
				assert.Equal(t, "quoted-printable", html, purpose)
			} else {
				assert.Equal(t, "base64", text, purpose)
			}
		}
		t.Logf("purpose %q: zh-CN %d bytes, en %d bytes", purpose, size[mail.LocaleZhCN], size[mail.LocaleEN])
		assert.LessOrEqual(t, float64(size[mail.LocaleZhCN]), 1.5*float64(size[mail.LocaleEN]), "purpose %q", purpose)
	}
}

// Each purpose's mail says what it is for, in its subject, its text and
// the button of its link.
func TestComposePurposeWording(t *testing.T) {
	t.Parallel()
	tpl := loadTemplates(t, mail.TemplateConfig{LinkURL: "https://app.example.com/v?c={code}"})
	tests := []struct {
		purpose string
		locale  mail.Locale
		subject string
		text    string
		button  string
	}{
		{"", mail.LocaleEN, "Your verification code", "to verify your email address.", "Verify your email address"},
		{"", mail.LocaleZhCN, "验证码", "请在 10 分钟内完成验证。", "验证邮箱地址"},
		{"register", mail.LocaleEN, "Your sign-up code", "to finish signing up.", "Finish signing up"},
		{"register", mail.LocaleZhCN, "注册验证码", "请在 10 分钟内完成注册。", "完成注册"},
		{"login", mail.LocaleEN, "Your sign-in code", "to sign in.", "Sign in"},
		{"login", mail.LocaleZhCN, "登录验证码", "请在 10 分钟内完成登录。", "登录"},
		{"reset_password", mail.LocaleEN, "Your password reset code", "to reset your password.", "Reset your password"},
		{"reset_password", mail.LocaleZhCN, "重置密码验证码", "请在 10 分钟内完成密码重置。", "重置密码"},
		{"change_email", mail.LocaleEN, "Your email change code", "to confirm your new email address.", "Confirm your new email address"},
		{"change_email", mail.LocaleZhCN, "更换邮箱验证码", "请在 10 分钟内确认新的邮箱地址。", "确认新邮箱地址"},
		// A purpose added with PURPOSES reads as the default purpose.
		{"unsubscribe", mail.LocaleEN, "Your verification code", "to verify your email address.", "Verify your email address"},
		{"unsubscribe", mail.LocaleZhCN, "验证码", "请在 10 分钟内完成验证。", "验证邮箱地址"},
	}
	for _, tt := range tests {
		t.Run(tt.purpose+"/"+string(tt.locale), func(t *testing.T) {
			t.Parallel()
			c, err := tpl.Compose(testFrom, "", mail.Message{To: "user@example.com", Locale: tt.locale,
				Code: "482916", ExpiresIn: 10 * time.Minute, Purpose: tt.purpose})
			require.NoError(t, err)
			msg := parse(t, c)
			assert.Equal(t, tt.subject, msg.Subject)
			assert.Contains(t, msg.Text, tt.text)
			assert.Contains(t, msg.HTML, tt.text)
			assert.Contains(t, msg.HTML, `">`+tt.button+"</a>")
		})
	}
}

const (
	testTo   = "alice.smith@example.com"
	testCode = "739164"
)

func testMessage() mail.Message {
	return mail.Message{To: testTo, Locale: mail.LocaleEN, Code: testCode, ExpiresIn: 10 * time.Minute}
}

// A sender in an internationalized domain (MAIL_FROM, MAIL_REPLY_TO) is
// written with its domain as an A-label, as the recipient's is: in the
// envelope, so that no mail of it needs SMTPUTF8 for that alone; in From
// and Reply-To, an ASCII header; and in the Message-ID, whose domain is
// From's (a msg-id holds no encoded word, RFC 5322 3.6.4).
func TestComposeSenderInAnInternationalDomain(t *testing.T) {
	t.Parallel()
	const from, ascii = "Verifyq <no-reply@bücher.test>", "no-reply@xn--bcher-kva.test"
	author := newAuthor(t, from, "support@bücher.test", nil)
	assert.Equal(t, ascii, author.EnvelopeFrom())
	for range 2 { // rendered, then prepared
		c, err := author.Compose(testMessage())
		require.NoError(t, err)
		raw := write(t, c)
		head, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
		assert.True(t, mail.IsASCII(string(head)), "%s", head)
		msg := smtptest.ParseMessage(raw)
		assert.Equal(t, `"Verifyq" <`+ascii+`>`, msg.Header.Get("From"))
		assert.Equal(t, "support@xn--bcher-kva.test", msg.Header.Get("Reply-To"))
		assert.Regexp(t, `^<[0-9a-f]{32}@xn--bcher-kva\.test>$`, msg.Header.Get("Message-ID"))
	}
}

// A subject of encoded words is folded so that no line of it is longer
// than 76 characters (RFC 2047, 2), "Subject: " included, whatever the
// locale, the purpose and the app name; it reads back as rendered.
func TestComposeSubjectLinesFold(t *testing.T) {
	t.Parallel()
	for _, app := range []string{"", "ACME", strings.Repeat("名", mail.MaxAppNameLen),
		strings.Repeat("Ünïcødé ", 8)[:63], strings.Repeat("Ж", mail.MaxAppNameLen)} {
		tpl := loadTemplates(t, mail.TemplateConfig{AppName: app})
		for _, purpose := range append([]string{""}, codes.DefaultPurposes...) {
			for _, loc := range mail.Locales() {
				c, err := tpl.Compose(testFrom, "", mail.Message{To: "user@example.com", Locale: loc, Code: "482916",
					ExpiresIn: 10 * time.Minute, Purpose: purpose})
				require.NoError(t, err)
				raw := write(t, c)
				head, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
				_, subject, _ := strings.Cut(string(head), "\r\nSubject: ")
				subject, _, _ = strings.Cut(subject, "\r\nDate: ")
				for i, line := range strings.Split("Subject: "+subject, "\r\n") {
					require.LessOrEqual(t, len(line), 76, "%s %q, app %q, line %d: %q", loc, purpose, app, i, line)
				}
				msg := smtptest.ParseMessage(raw)
				require.Contains(t, msg.Subject, app, "%s %q", loc, purpose)
				require.NotContains(t, msg.Subject, "=?", "%s %q: decoded", loc, purpose)
			}
		}
	}
}

// A sender's name in encoded words is folded as the subject is: no line of
// From or Reply-To longer than 76 characters, and the names read back.
func TestComposeSenderNameLinesFold(t *testing.T) {
	t.Parallel()
	names := []string{"某某科技有限公司客户服务中心", "Компания Ромашка, служба поддержки", "Verifyq Café & Co", "Verifyq"}
	for _, name := range names {
		author := newAuthor(t, `"`+name+`" <no-reply@verifyq.test>`, `"`+name+`" <support@verifyq.test>`, nil)
		for range 2 { // rendered, then prepared
			c, err := author.Compose(testMessage())
			require.NoError(t, err)
			raw := write(t, c)
			head, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
			for line := range strings.SplitSeq(string(head), "\r\n") {
				require.LessOrEqual(t, len(line), 76, "%q: %q", name, line)
			}
			msg := smtptest.ParseMessage(raw)
			for field, addr := range map[string]string{"From": "no-reply@verifyq.test", "Reply-To": "support@verifyq.test"} {
				a, err := netmail.ParseAddress(msg.Header.Get(field))
				require.NoError(t, err, "%s %q", field, msg.Header.Get(field))
				assert.Equal(t, name, a.Name, field)
				assert.Equal(t, addr, a.Address, field)
			}
		}
	}
}
