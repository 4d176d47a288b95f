package mail

import (
	"bytes"
	"fmt"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/smtptest"
)

// bothWays makes the mail of m from tpl prepared (nil when it is not) and
// rendered, with one Date, Message-ID and MIME boundary.
func bothWays(t *testing.T, tpl *Templates, from, replyTo string, m Message) (prepared, rendered []byte) {
	t.Helper()
	s, err := tpl.sender(from, replyTo)
	require.NoError(t, err)
	require.NoError(t, ValidateAddress(m.To), m.To)
	loc, err := ParseLocale(string(m.Locale))
	require.NoError(t, err)
	date := time.Date(2026, 12, 6, 19, 55, 12, 0, time.FixedZone("", 8*3600))
	msgID := "<0123456789abcdef0123456789abcdef@" + s.from.Address[strings.LastIndexByte(s.from.Address, '@')+1:] + ">"
	c, err := tpl.renderMail(s, m.To, m.Code, m.Purpose, loc, minutesUp(m.ExpiresIn), date, msgID)
	require.NoError(t, err)
	var buf bytes.Buffer
	_, err = c.WriteTo(&buf)
	require.NoError(t, err)
	rendered = buf.Bytes()
	if p := tpl.prepared(s, m.Purpose, loc, minutesUp(m.ExpiresIn)); p.fits(m.To, m.Code) {
		_, params, ok := bytes.Cut(rendered, []byte("boundary="))
		require.True(t, ok)
		boundary, _, _ := bytes.Cut(params, []byte("\r\n"))
		prepared = p.write(nil, m.To, m.Code, date, msgID, string(boundary))
	}
	return prepared, rendered
}

// A prepared mail is byte for byte the mail rendering makes, for every
// purpose and locale of the embedded templates, with and without an app
// name, a link, a Reply-To and a sender's name, for addresses and codes
// of every kind, and lifetimes that fold the subject or not.
func TestPreparedIsRendered(t *testing.T) {
	t.Parallel()
	configs := []TemplateConfig{
		{},
		{AppName: "ACME", LinkURL: "https://app.example.com/verify?email={email}&code={code}"},
		{AppName: strings.Repeat("名", MaxAppNameLen), LinkURL: "https://app.example.com/v/{code}?x=<'\">"},
		{AppName: "A&B <i> \"q\"", LinkURL: "http://[::1]:8080/{email}/{code}#{code}"},
	}
	senders := []struct{ from, replyTo string }{
		{"no-reply@verifyq.test", ""},
		{"Verifyq <no-reply@verifyq.test>", "support@verifyq.test"},
		{"\"验证 服务\" <no-reply@verifyq.test>", "客服 <support@verifyq.test>"},
		{"no-reply@verifyq.test", strings.Repeat("r", 60) + "@" + strings.Repeat("d", 60) + ".example"},
	}
	addresses := []string{
		"user@example.com",
		"user+tag@example.com",
		"o'neil.x_y-z~w@sub.example.co.uk",
		"用户@例子.广告",
		"ünïcode@bücher.example",
		strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + ".example",
		"x@localhost",
	}
	purposes := append([]string{"", "unsubscribe"}, codes.DefaultPurposes...)
	for ci, c := range configs {
		tpl, err := LoadTemplates(c)
		require.NoError(t, err)
		for si, s := range senders {
			for _, purpose := range purposes {
				for _, loc := range locales {
					for i, minutes := range []time.Duration{1, 2, 10, 60, 61, 1440} {
						to := addresses[(si+i+len(purpose))%len(addresses)]
						code := []string{"0", "482916", "0000000000", strings.Repeat("9", maxCodeLen)}[(ci+i)%4]
						m := Message{To: to, Locale: loc, Code: code, ExpiresIn: minutes * time.Minute, Purpose: purpose}
						prepared, rendered := bothWays(t, tpl, s.from, s.replyTo, m)
						name := fmt.Sprintf("config %d, sender %d, %q, %s, %d min, %s", ci, si, purpose, loc, minutes, to)
						require.NotNil(t, prepared, "not prepared: %s", name)
						require.Equal(t, string(rendered), string(prepared), name)
					}
				}
			}
		}
	}
}

// Compose makes prepared mails once there is one, and every mail it makes
// reads back as rendered.
func TestComposeUsesPrepared(t *testing.T) {
	t.Parallel()
	tpl, err := LoadTemplates(TemplateConfig{AppName: "ACME", LinkURL: "https://app.example.com/v?e={email}&c={code}"})
	require.NoError(t, err)
	m := Message{To: "user+tag@example.com", Locale: LocaleEN, Code: "482916", ExpiresIn: 10 * time.Minute, Purpose: "login"}
	c, err := tpl.Compose("Verifyq <no-reply@verifyq.test>", "", m)
	require.NoError(t, err)
	require.NotNil(t, c.raw, "prepared")
	got := readMail(t, c)
	subject, text, html, err := tpl.render(tpl.lookup("login", LocaleEN), tpl.data("login", LocaleEN, m.To, m.Code, 10, ""))
	require.NoError(t, err)
	assert.Equal(t, subject, got.subject)
	assert.Equal(t, canonicalLines(text), got.text)
	assert.Equal(t, canonicalLines(html), got.html)
	assert.Regexp(t, `^<[0-9a-f]{32}@verifyq\.test>$`, got.messageID)
	assert.WithinDuration(t, time.Now(), got.date, 2*time.Second)

	// Two mails: their own Message-ID and boundary.
	c2, err := tpl.Compose("Verifyq <no-reply@verifyq.test>", "", m)
	require.NoError(t, err)
	got2 := readMail(t, c2)
	assert.NotEqual(t, got.messageID, got2.messageID)
	assert.NotEqual(t, got.boundary, got2.boundary)
	assert.Equal(t, got.html, got2.html)

	// A code of other characters than digits is rendered (and escaped).
	m.Code = "<b>&"
	c, err = tpl.Compose("no-reply@verifyq.test", "", m)
	require.NoError(t, err)
	assert.Nil(t, c.raw, "rendered")
	assert.Contains(t, readMail(t, c).html, "&lt;b&gt;&amp;")
}

// readBack is what the tests here read back of a mail.
type readBack struct {
	subject, text, html, messageID, boundary string
	date                                     time.Time
}

// readMail writes c and reads it back.
func readMail(t *testing.T, c *Composed) readBack {
	t.Helper()
	var buf bytes.Buffer
	n, err := c.WriteTo(&buf)
	require.NoError(t, err)
	require.Equal(t, int64(buf.Len()), n)
	return smtptestParse(t, buf.Bytes())
}

// smtptestParse reads raw back as a receiving server would.
func smtptestParse(t *testing.T, raw []byte) readBack {
	t.Helper()
	m := smtptest.ParseMessage(raw)
	require.NotNil(t, m.Header, "a message")
	date, err := m.Header.Date()
	require.NoError(t, err)
	_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	require.NoError(t, err)
	return readBack{subject: m.Subject, text: m.Text, html: m.HTML, messageID: m.Header.Get("Message-ID"),
		boundary: params["boundary"], date: date}
}

// Templates that use the code or the link otherwise than as they are make
// their mails rendered; those that print them as they are, in any context
// html/template escapes them for, prepared. Both are the mails rendering
// makes.
func TestPreparedOnlyWhenSplittable(t *testing.T) {
	t.Parallel()
	const text = "Code: {{.Code}}\n"
	tests := []struct {
		name   string
		files  map[string]string
		splits bool
	}{
		{"embedded", nil, true},
		{"code in a comparison", map[string]string{"en.txt.tmpl": `{{if eq .Code "482916"}}lucky {{end}}` + text}, false},
		{"code in a function", map[string]string{"en.txt.tmpl": `{{printf "%.3s" .Code}} ` + text}, false},
		{"code's length", map[string]string{"en.txt.tmpl": `{{len .Code}} ` + text}, false},
		{"code in a variable", map[string]string{"en.txt.tmpl": `{{$c := .Code}}{{$c}}`}, false},
		{"the whole data", map[string]string{"en.txt.tmpl": `{{.}} ` + text}, false},
		{"the whole data in a variable", map[string]string{"en.txt.tmpl": `{{$d := $}}{{$d.Code}}`}, false},
		{"code to a template", map[string]string{"en.txt.tmpl": `{{define "c"}}{{.}}{{end}}{{template "c" .Code}}`}, false},
		{"link escaped again", map[string]string{"en.html.tmpl": `<p>{{.Code}}</p><p>{{.Link | urlquery}}</p>`}, false},
		{"link compared", map[string]string{"en.html.tmpl": `<p>{{.Code}}</p>{{if eq .Link ""}}none{{end}}`}, false},
		{"inside with link, dot used", map[string]string{"en.txt.tmpl": text + `{{with .Link}}{{len .}}{{end}}`}, false},
		{"subject prints the link", map[string]string{"en.subject.tmpl": `Code {{if .Link}}{{slice .Link 0 4}}{{end}}`}, false},

		{"with code", map[string]string{"en.txt.tmpl": `{{with .Code}}Code: {{.}}{{end}}`}, true},
		{"dollar code", map[string]string{"en.txt.tmpl": `{{with .Phrases}}{{.CodeName}}: {{$.Code}}{{end}}`}, true},
		{"if code", map[string]string{"en.txt.tmpl": `{{if .Code}}` + text + `{{end}}`}, true},
		{"with dot", map[string]string{"en.txt.tmpl": `{{with .}}` + text + `{{end}}`}, true},
		{"a defined template given dot", map[string]string{"en.txt.tmpl": `{{define "c"}}Code: {{.Code}}{{end}}{{template "c" .}}`}, true},
		{"subject tests the link", map[string]string{"en.subject.tmpl": `Your code{{if .Link}} and link{{end}}`}, true},
		{"code in HTML contexts", map[string]string{"en.html.tmpl": `<a href="https://x.example/?c={{.Code}}&e=1" title="{{.Code}}">` +
			`{{.Code}}</a><script>var c = {{.Code}}; var s = "{{.Code}}";</script><style>p { width: {{.Code}}px }</style>` +
			`<!-- {{.Code}} --><textarea>{{.Code}}</textarea>{{with .Link}}<a href="{{.}}">{{.}}</a><script>var l = {{.}};</script>{{end}}`}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := TemplateConfig{AppName: "ACME", LinkURL: "https://app.example.com/v?e={email}&c={code}"}
			if tt.files != nil {
				c.Dir = t.TempDir()
				for name, content := range tt.files {
					require.NoError(t, os.WriteFile(filepath.Join(c.Dir, name), []byte(content), 0o600))
				}
			}
			tpl, err := LoadTemplates(c)
			require.NoError(t, err)
			assert.Equal(t, tt.splits, tpl.lookup("", LocaleEN).splits)
			for _, m := range []Message{
				{To: "user+tag@example.com", Locale: LocaleEN, Code: "482916", ExpiresIn: time.Minute},
				{To: "o'neil@例子.广告", Locale: LocaleEN, Code: "1234567890", ExpiresIn: 10 * time.Minute},
			} {
				prepared, rendered := bothWays(t, tpl, "no-reply@verifyq.test", "", m)
				if tt.splits {
					require.Equal(t, string(rendered), string(prepared))
				} else {
					assert.Nil(t, prepared)
				}
				c, err := tpl.Compose("no-reply@verifyq.test", "", m)
				require.NoError(t, err)
				assert.Equal(t, tt.splits, c.raw != nil)
				got := readMail(t, c)
				want := smtptestParse(t, rendered)
				assert.Equal(t, want.subject, got.subject)
				assert.Equal(t, want.text, got.text)
				assert.Equal(t, want.html, got.html)
			}
		})
	}
}

// The senders and mails kept are bounded, whether the senders come as
// strings (Templates.Compose) or from Authors (NewAuthor); mails past the
// bounds are made all the same.
func TestPreparedBounded(t *testing.T) {
	t.Parallel()
	tpl, err := LoadTemplates(TemplateConfig{})
	require.NoError(t, err)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range maxPrepared/2 + maxSenders {
				from := fmt.Sprintf("no-reply-%d@verifyq.test", i%(maxSenders+4))
				m := Message{To: "user@example.com", Locale: locales[g%2], Code: "482916", ExpiresIn: time.Duration(i+g+1) * time.Minute}
				var c *Composed
				var err error
				if g < 2 {
					c, err = tpl.Compose(from, "", m)
				} else {
					var a Author
					if a, err = NewAuthor(from, "", tpl); err == nil {
						c, err = a.Compose(m)
					}
				}
				if !assert.NoError(t, err) {
					continue
				}
				// assert, not readMail's require: this is not the
				// test's goroutine.
				var buf bytes.Buffer
				if _, err := c.WriteTo(&buf); assert.NoError(t, err) {
					assert.Contains(t, smtptest.ParseMessage(buf.Bytes()).Text, "482916")
				}
			}
		})
	}
	wg.Wait()
	assert.LessOrEqual(t, int(tpl.nPrepared.Load()), maxPrepared)
	senders := 0
	tpl.senders.Range(func(any, any) bool { senders++; return true })
	assert.LessOrEqual(t, senders, maxSenders)
	mails := 0
	tpl.mails.Range(func(any, any) bool { mails++; return true })
	assert.Equal(t, int(tpl.nPrepared.Load()), mails)
}

// An Author's sender, parsed once by NewAuthor, is the one its Templates
// keep: its mails are prepared, and another Author or Templates.Compose of
// the same strings use it as it is. Past maxSenders an Author's sender is
// not kept, and its mails are rendered.
func TestAuthorSenderIsKept(t *testing.T) {
	t.Parallel()
	tpl, err := LoadTemplates(TemplateConfig{AppName: "ACME"})
	require.NoError(t, err)
	const from, replyTo = "Verifyq <no-reply@verifyq.test>", "support@verifyq.test"
	a, err := NewAuthor(from, replyTo, tpl)
	require.NoError(t, err)
	require.True(t, a.s.kept)
	b, err := NewAuthor(from, replyTo, tpl)
	require.NoError(t, err)
	assert.Same(t, a.s, b.s)
	s, err := tpl.sender(from, replyTo)
	require.NoError(t, err)
	assert.Same(t, a.s, s)

	m := Message{To: "user@example.com", Locale: LocaleEN, Code: "482916", ExpiresIn: 10 * time.Minute}
	c, err := a.Compose(m)
	require.NoError(t, err)
	assert.NotNil(t, c.raw, "prepared")
	fromStrings, err := tpl.Compose(from, replyTo, m)
	require.NoError(t, err)
	assert.Equal(t, readMail(t, c).text, readMail(t, fromStrings).text)

	for i := range maxSenders {
		_, err := NewAuthor(fmt.Sprintf("no-reply-%d@verifyq.test", i), "", tpl)
		require.NoError(t, err)
	}
	late, err := NewAuthor("late@verifyq.test", replyTo, tpl)
	require.NoError(t, err)
	assert.False(t, late.s.kept)
	c, err = late.Compose(m)
	require.NoError(t, err)
	assert.Nil(t, c.raw, "rendered")
	assert.Contains(t, readMail(t, c).text, "482916")
	senders := 0
	tpl.senders.Range(func(any, any) bool { senders++; return true })
	assert.Equal(t, maxSenders, senders)
}

// The mails kept prepared are bounded in bytes as well as in number:
// templates of the largest size a file may have, and codes of a long
// lifetime asked for at every minute of it, keep no more than
// maxPreparedBytes, and the mails past it are made all the same.
func TestPreparedBoundedInBytes(t *testing.T) {
	t.Parallel()
	filler := strings.Repeat("Lorem ipsum dolor sit amet. ", (MaxTemplateSize-200)/28)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "en.txt.tmpl"), []byte("Code: {{.Code}}\n"+filler), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "en.html.tmpl"), []byte("<p>{{.Code}}</p><p>"+filler+"</p>"), 0o600))
	tpl, err := LoadTemplates(TemplateConfig{Dir: dir})
	require.NoError(t, err)
	for minutes := range 400 {
		c, err := tpl.Compose("no-reply@verifyq.test", "", Message{To: "user@example.com", Locale: LocaleEN, Code: "482916",
			ExpiresIn: time.Duration(minutes+1) * time.Minute})
		require.NoError(t, err)
		require.Contains(t, readMail(t, c).text, "Code: 482916")
	}
	kept, n := 0, 0
	tpl.mails.Range(func(_, v any) bool {
		if p := v.(*prepared); p != nil {
			kept += p.size
			n++
		}
		return true
	})
	assert.Positive(t, n)
	assert.LessOrEqual(t, kept, maxPreparedBytes)
	assert.Equal(t, int64(kept), tpl.preparedBytes.Load())
}
