package mail

import (
	"bytes"
	"encoding/base64"
	"mime/quotedprintable"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/gomail.v2"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/smtptest"
)

// Every purpose in the table is a valid one with wording in every locale,
// and every default purpose has its own.
func TestPurposePhrases(t *testing.T) {
	t.Parallel()
	for purpose, byLocale := range purposePhrases {
		require.NoError(t, codes.ValidatePurpose(purpose), purpose)
		require.Len(t, byLocale, len(locales), purpose)
		for _, loc := range locales {
			p := byLocale[loc]
			assert.NotEmpty(t, p.CodeName, "%q %s", purpose, loc)
			assert.NotEmpty(t, p.Action, "%q %s", purpose, loc)
			assert.NotEmpty(t, p.Button, "%q %s", purpose, loc)
		}
	}
	for _, purpose := range codes.DefaultPurposes {
		require.Contains(t, purposePhrases, purpose)
		for _, loc := range locales {
			assert.NotEqual(t, purposePhrases[""][loc], phrasesFor(purpose, loc), "%s %s", purpose, loc)
		}
	}
	for _, loc := range locales {
		assert.Equal(t, purposePhrases[""][loc], phrasesFor("unsubscribe", loc), "a purpose added with PURPOSES")
	}
}

// encodedLen returns the length of body once encoded as the mail writes it:
// quoted-printable, or base64 in lines of 76 characters ending in CRLF.
func encodedLen(t *testing.T, body string, enc gomail.Encoding) int {
	t.Helper()
	var buf bytes.Buffer
	if enc == gomail.Base64 {
		s := base64.StdEncoding.EncodeToString([]byte(body))
		for len(s) > maxBase64Line {
			buf.WriteString(s[:maxBase64Line] + "\r\n")
			s = s[maxBase64Line:]
		}
		buf.WriteString(s + "\r\n")
		return buf.Len()
	}
	w := quotedprintable.NewWriter(&buf)
	_, err := w.Write([]byte(body))
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return buf.Len()
}

// partEncoding picks the encoding that is really the shorter one, and its
// counts are close to the real lengths.
func TestPartEncoding(t *testing.T) {
	t.Parallel()
	zh := phrasesFor("reset_password", LocaleZhCN)
	bodies := map[string]gomail.Encoding{
		"Your code is 482916.\r\n":           gomail.QuotedPrintable,
		strings.Repeat("a=b ", 100) + "\r\n": gomail.Base64, // "=" takes 3
		strings.Repeat("x", 300):             gomail.QuotedPrintable,
		"您的" + zh.CodeName + "为 482916，请在 10 分钟内" + zh.Action + "。\r\n": gomail.Base64,
		strings.Repeat("验证码", 100): gomail.Base64,
		"\x00\x01\x02\x03":         gomail.Base64,
	}
	for body, want := range bodies {
		assert.Equal(t, want, partEncoding(body), "%q", body)
		qp, b64 := encodedLen(t, body, gomail.QuotedPrintable), encodedLen(t, body, gomail.Base64)
		if want == gomail.Base64 {
			assert.Less(t, b64, qp, "%q", body)
		} else {
			assert.LessOrEqual(t, qp, b64, "%q", body)
		}
	}
	// On the real mails too.
	for _, loc := range locales {
		for purpose := range purposePhrases {
			set := embedded.lookup(purpose, loc)
			_, text, html, err := embedded.render(set, embedded.data(purpose, loc, "user@example.com", "482916", 10, ""))
			require.NoError(t, err)
			for _, body := range []string{canonicalLines(text), canonicalLines(html)} {
				qp, b64 := encodedLen(t, body, gomail.QuotedPrintable), encodedLen(t, body, gomail.Base64)
				if partEncoding(body) == gomail.Base64 {
					assert.Less(t, b64, qp, "%s %q", loc, purpose)
				} else {
					assert.LessOrEqual(t, qp, b64, "%s %q", loc, purpose)
				}
			}
		}
	}
}

// Both parts of a written mail decode to the rendered text and HTML, with
// CRLF line ends.
func TestComposeDecodesToRendered(t *testing.T) {
	t.Parallel()
	tpl, err := LoadTemplates(TemplateConfig{AppName: "ACME", LinkURL: "https://app.example.com/v?c={code}"})
	require.NoError(t, err)
	for _, loc := range locales {
		for purpose := range purposePhrases {
			m := Message{To: "user@example.com", Locale: loc, Code: "482916", ExpiresIn: 10 * time.Minute, Purpose: purpose}
			c, err := tpl.Compose("no-reply@verifyq.test", "", m)
			require.NoError(t, err)
			var buf bytes.Buffer
			_, err = c.WriteTo(&buf)
			require.NoError(t, err)
			got := smtptest.ParseMessage(buf.Bytes())

			subject, text, html, err := tpl.render(tpl.lookup(purpose, loc), tpl.data(purpose, loc, m.To, m.Code, 10, ""))
			require.NoError(t, err)
			assert.Equal(t, subject, got.Subject)
			assert.Equal(t, strings.ReplaceAll(text, "\n", "\r\n"), got.Text)
			assert.Equal(t, strings.ReplaceAll(html, "\n", "\r\n"), got.HTML)
		}
	}
}

func TestCanonicalLines(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":            "",
		"a":           "a",
		"a\nb\n":      "a\r\nb\r\n",
		"a\r\nb\r\n":  "a\r\nb\r\n",
		"a\rb\r\n\nc": "a\r\nb\r\n\r\nc",
	} {
		assert.Equal(t, want, canonicalLines(in), "%q", in)
	}
}

func TestHeaderFields(t *testing.T) {
	t.Parallel()
	head := "A: 1\r\nContent-Type: multipart/alternative;\r\n boundary=x\r\nB: 2\r\n\tmore"
	var got []string
	for _, f := range headerFields([]byte(head)) {
		got = append(got, string(f))
	}
	assert.Equal(t, []string{"A: 1", "Content-Type: multipart/alternative;\r\n boundary=x", "B: 2\r\n\tmore"}, got)
}

// The table of phrases in docs/templates/README.md is this one.
func TestPhrasesDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(filepath.Join("..", "docs", "templates", "README.md"))
	require.NoError(t, err)
	rows := 0
	for purpose, byLocale := range purposePhrases {
		name := "default"
		if purpose != "" {
			name = "`" + purpose + "`"
		}
		en, zh := byLocale[LocaleEN], byLocale[LocaleZhCN]
		row := "| " + name + " | " + en.CodeName + " / " + zh.CodeName + " | " + en.Action + " / " + zh.Action +
			" | " + en.Button + " / " + zh.Button + " |"
		assert.Contains(t, string(doc), row+"\n")
		rows++
	}
	// No other purpose's row.
	table := regexp.MustCompile("(?m)^\\| (default|`[a-z0-9_]+`) \\| ").FindAllString(string(doc), -1)
	assert.Len(t, table, rows, "%q", table)
}
