package mail_test

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/field"
	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/mail"
)

// writeFiles writes files (name relative to dir, then contents) into a new
// temporary directory and returns it.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o750))
		require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	}
	return dir
}

// parse renders g and parses it back like a receiving MTA would.
func parse(t *testing.T, g interface {
	WriteTo(io.Writer) (int64, error)
}) smtptest.Message {
	t.Helper()
	var buf bytes.Buffer
	_, err := g.WriteTo(&buf)
	require.NoError(t, err)
	return smtptest.ParseMessage(buf.Bytes())
}

func loadTemplates(t *testing.T, c mail.TemplateConfig) *mail.Templates {
	t.Helper()
	tpl, err := mail.LoadTemplates(c)
	require.NoError(t, err)
	return tpl
}

// newAuthor returns the Author of from and replyTo with tpl's templates
// (nil: the embedded ones).
func newAuthor(t *testing.T, from, replyTo string, tpl *mail.Templates) mail.Author {
	t.Helper()
	a, err := mail.NewAuthor(from, replyTo, tpl)
	require.NoError(t, err)
	return a
}

// composeOne composes m as a writes it and returns the mail as a server
// would receive it.
func composeOne(t *testing.T, a mail.Author, m mail.Message) smtptest.Message {
	t.Helper()
	c, err := a.Compose(m)
	require.NoError(t, err)
	var buf bytes.Buffer
	_, err = c.WriteTo(&buf)
	require.NoError(t, err)
	return smtptest.ParseMessage(buf.Bytes())
}

func TestAppNameInSubjectAndBothParts(t *testing.T) {
	t.Parallel()
	tpl := loadTemplates(t, mail.TemplateConfig{AppName: "ACME"})
	tests := []struct {
		locale  mail.Locale
		subject string
		text    string
		html    string
	}{
		{mail.LocaleZhCN, "ACME 验证码", "您的 ACME 验证码为 739164，请在 10 分钟内完成验证。",
			`您的 ACME 验证码为 <strong style="font-size:24px;letter-spacing:4px;">739164</strong>`},
		{mail.LocaleEN, "Your ACME verification code", "Your ACME verification code is 739164. Enter it within 10 minutes to verify your email address.",
			`Your ACME verification code is <strong style="font-size:24px;letter-spacing:4px;">739164</strong>`},
	}
	for _, tt := range tests {
		t.Run(string(tt.locale), func(t *testing.T) {
			t.Parallel()
			m := testMessage()
			m.Locale = tt.locale
			got := composeOne(t, newAuthor(t, testFrom, "", tpl), m)
			assert.Equal(t, tt.subject, got.Subject)
			assert.Contains(t, got.Text, tt.text)
			assert.Contains(t, got.HTML, tt.html)
			assert.Contains(t, got.HTML, "<title>"+tt.subject+"</title>")
		})
	}
}

func TestAppNameIsEscapedInHTML(t *testing.T) {
	t.Parallel()
	tpl := loadTemplates(t, mail.TemplateConfig{AppName: `A&B <i>`})
	g, err := tpl.Compose(testFrom, "", testMessage())
	require.NoError(t, err)
	msg := parse(t, g)
	assert.Equal(t, "Your A&B <i> verification code", msg.Subject)
	assert.Contains(t, msg.Text, "Your A&B <i> verification code is")
	assert.Contains(t, msg.HTML, "Your A&amp;B &lt;i&gt; verification code is")
	assert.NotContains(t, msg.HTML, "<i>")
}

func TestLoadTemplatesRejectsBadAppName(t *testing.T) {
	t.Parallel()
	for _, name := range []string{
		strings.Repeat("x", mail.MaxAppNameLen+1),
		"ACME\r\nBcc: evil@example.net",
		"ACME\x00",
		"ACME\u202e", // right-to-left override
		" ACME",
		"\xff",
	} {
		_, err := mail.LoadTemplates(mail.TemplateConfig{AppName: name})
		require.Error(t, err, "%q", name)
		var fe *field.Error
		require.ErrorAs(t, err, &fe)
		assert.Equal(t, "AppName", fe.Field)
	}
	loadTemplates(t, mail.TemplateConfig{AppName: strings.Repeat("名", mail.MaxAppNameLen)})
}

func TestTemplatesDirOverridesOneTemplate(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"en.html.tmpl": `<p>{{.AppName}} custom: <b>{{.Code}}</b>, {{.Minutes}} min, {{.Locale}}{{with .Purpose}}, {{.}}{{end}}</p>`,
		"README.md":    "not a template",
	})
	tpl := loadTemplates(t, mail.TemplateConfig{Dir: dir, AppName: "ACME"})
	author := newAuthor(t, testFrom, "", tpl)

	en := composeOne(t, author, testMessage())
	assert.Equal(t, "<p>ACME custom: <b>739164</b>, 10 min, en</p>", en.HTML, "the directory's en HTML template")
	assert.Contains(t, en.Text, "Your ACME verification code is 739164.", "the embedded en text template")
	assert.Equal(t, "Your ACME verification code", en.Subject, "the embedded en subject template")

	m := testMessage()
	m.Locale = mail.LocaleZhCN
	zh := composeOne(t, author, m)
	assert.Contains(t, zh.HTML, "您的 ACME 验证码为", "the embedded zh-CN HTML template")
}

func TestTemplatesDirPerPurpose(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"en.subject.tmpl":              "{{.AppName}} code\n", // a trailing newline is trimmed
		"change_email/en.subject.tmpl": "Confirm your new {{.AppName}} address ({{.Purpose}})\n",
		"change_email/en.txt.tmpl":     "Confirmation code: {{.Code}}\n",
	})
	tpl := loadTemplates(t, mail.TemplateConfig{Dir: dir, AppName: "ACME"})
	tests := []struct {
		purpose, subject, text, html string
	}{
		{"", "ACME code", "Your ACME verification code is 739164.", "Your ACME verification code is"},
		{"change_email", "Confirm your new ACME address (change_email)", "Confirmation code: 739164\n", "Your ACME email change code is"},
		// No templates of its own: the directory's subject, the embedded
		// text and HTML, with the wording of its purpose.
		{"login", "ACME code", "Your ACME sign-in code is 739164.", "Your ACME sign-in code is"},
		// A purpose added with PURPOSES: the default purpose's wording.
		{"unsubscribe", "ACME code", "Your ACME verification code is 739164.", "Your ACME verification code is"},
	}
	for _, tt := range tests {
		m := testMessage()
		m.Purpose = tt.purpose
		g, err := tpl.Compose(testFrom, "", m)
		require.NoError(t, err)
		msg := parse(t, g)
		assert.Equal(t, tt.subject, msg.Subject, tt.purpose)
		assert.Contains(t, strings.ReplaceAll(msg.Text, "\r\n", "\n"), tt.text, tt.purpose)
		assert.Contains(t, msg.HTML, tt.html, "the embedded HTML for %q", tt.purpose)
	}

	m := testMessage()
	m.Purpose = "Change-Email"
	_, err := tpl.Compose(testFrom, "", m)
	require.ErrorIs(t, err, mail.ErrInvalidMessage)
}

// A ConfigMap volume holds symbolic links to files in a hidden directory.
func TestTemplatesDirFollowsSymlinks(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"..2026_01_01/en.subject.tmpl": "Linked {{.AppName}} subject",
		"..2026_01_01/en.txt.tmpl":     "no code here", // never looked at: hidden
	})
	require.NoError(t, os.Symlink("..2026_01_01", filepath.Join(dir, "..data")))
	require.NoError(t, os.Symlink(filepath.Join("..data", "en.subject.tmpl"), filepath.Join(dir, "en.subject.tmpl")))
	tpl := loadTemplates(t, mail.TemplateConfig{Dir: dir, AppName: "ACME"})
	g, err := tpl.Compose(testFrom, "", testMessage())
	require.NoError(t, err)
	assert.Equal(t, "Linked ACME subject", parse(t, g).Subject)
}

func TestLoadTemplatesNamesTheBadFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		files map[string]string
		file  string // named in the error
		want  string // in the error
	}{
		{"text without the code", map[string]string{"en.txt.tmpl": "Your code expires in {{.Minutes}} minutes."},
			"en.txt.tmpl", "the text does not show the code"},
		{"HTML without the code", map[string]string{"zh-CN.html.tmpl": "<p>{{.AppName}}</p>"},
			"zh-CN.html.tmpl", "the HTML does not show the code"},
		{"purpose HTML without the code", map[string]string{"login/en.html.tmpl": "<p>hi</p>"},
			filepath.Join("login", "en.html.tmpl"), "the HTML does not show the code"},
		{"parse error, with the line", map[string]string{"en.html.tmpl": "<p>\n{{.Code}\n</p>"},
			"en.html.tmpl:2:", "bad character"},
		{"unknown field, with the line", map[string]string{"en.txt.tmpl": "{{.Code}}\n{{.Nope}}"},
			"en.txt.tmpl:2:", "can't evaluate field Nope"},
		{"subject on two lines", map[string]string{"en.subject.tmpl": "Your code\n{{.AppName}} team"},
			"en.subject.tmpl", "one line"},
		{"code in the subject", map[string]string{"en.subject.tmpl": "Your code: {{.Code}}"},
			"en.subject.tmpl", "the subject shows the code"},
		{"link in the subject", map[string]string{"en.subject.tmpl": "{{.Link}}"},
			"en.subject.tmpl", "the subject shows the code"},
		{"empty subject", map[string]string{"zh-CN.subject.tmpl": "{{/* nothing */}}\n"},
			"zh-CN.subject.tmpl", "the subject is empty"},
		{"long subject", map[string]string{"en.subject.tmpl": strings.Repeat("x", mail.MaxSubjectLen+1)},
			"en.subject.tmpl", "longer than"},
		{"unknown locale", map[string]string{"nl.html.tmpl": "{{.Code}}"},
			"nl.html.tmpl", "unexpected template name"},
		{"unknown kind", map[string]string{"en.htm.tmpl": "{{.Code}}"},
			"en.htm.tmpl", "unexpected template name"},
		{"bad purpose directory", map[string]string{"Change-Email/en.txt.tmpl": "{{.Code}}"},
			filepath.Join("Change-Email", "en.txt.tmpl"), "not a purpose"},
		{"too large", map[string]string{"en.txt.tmpl": "{{.Code}}" + strings.Repeat(" ", mail.MaxTemplateSize)},
			"en.txt.tmpl", "larger than"},
		{"not UTF-8", map[string]string{"en.txt.tmpl": "{{.Code}}\xff"}, "en.txt.tmpl", "UTF-8"},
		{"renders too much", map[string]string{"en.txt.tmpl": "{{.Code}}{{range 300000}}.{{end}}"},
			"en.txt.tmpl", "renders more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := writeFiles(t, tt.files)
			_, err := mail.LoadTemplates(mail.TemplateConfig{Dir: dir, LinkURL: "https://app.example.com/v?c={code}"})
			require.Error(t, err)
			t.Log(err)
			assert.Contains(t, err.Error(), filepath.Join(dir, tt.file))
			assert.Contains(t, err.Error(), tt.want)
			var fe *field.Error
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, "Dir", fe.Field)
		})
	}
}

// A subject that changes with the code tells something of it, in a header
// every mail server and client logs and shows: refused at start, whatever
// part of the code it shows. What does not depend on the code's digits
// (its length) is fine.
func TestLoadTemplatesRefusesSubjectThatChangesWithTheCode(t *testing.T) {
	t.Parallel()
	const link = "https://app.example.com/v?c={code}"
	for name, subject := range map[string]string{
		"first five digits": "Your code starts {{slice .Code 0 5}}",
		"last digit":        "Code ending in {{slice .Code 5}}",
		"one digit, as is":  "{{index .Code 0}} is the first",
		"printf precision":  `Code {{printf "%.3s" .Code}}...`,
		"a branch on it":    `{{if eq (slice .Code 0 1) "4"}}Your code{{else}}Your new code{{end}}`,
		"part of the link":  "Open {{slice .Link 0 30}}",
		"the code in hex":   `Ref {{printf "%x" .Code}}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := writeFiles(t, map[string]string{"en.subject.tmpl": subject})
			_, err := mail.LoadTemplates(mail.TemplateConfig{Dir: dir, LinkURL: link})
			require.Error(t, err)
			t.Log(err)
			assert.Contains(t, err.Error(), filepath.Join(dir, "en.subject.tmpl"))
			assert.Contains(t, err.Error(), "the subject changes with the code")
			for _, digits := range []string{"402", "659", "975", "120", "718", "043", "361", "894"} {
				assert.NotContains(t, strings.ReplaceAll(err.Error(), dir, ""), digits, "no code, not even the samples, in the error")
			}
		})
	}
	for name, subject := range map[string]string{
		"its length":        "Your {{len .Code}}-digit code",
		"the app and words": "{{.AppName}}: {{.CodeName}} ({{.Minutes}} min)",
		"nothing of it":     `{{if .Code}}Your code{{end}}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := writeFiles(t, map[string]string{"en.subject.tmpl": subject})
			_, err := mail.LoadTemplates(mail.TemplateConfig{Dir: dir, AppName: "ACME", LinkURL: link})
			require.NoError(t, err)
		})
	}
}

func TestLoadTemplatesReportsEveryProblem(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"en.txt.tmpl":  "no code",
		"en.html.tmpl": "{{if}}",
		"xx.txt.tmpl":  "{{.Code}}",
	})
	_, err := mail.LoadTemplates(mail.TemplateConfig{Dir: dir, AppName: "A\nB", LinkURL: "ftp://x/{code}"})
	require.Error(t, err)
	fields := map[string]int{}
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *field.Error
		require.ErrorAs(t, e, &fe)
		fields[fe.Field]++
	}
	// The parse error, the unknown name and the text without the code.
	assert.Equal(t, map[string]int{"AppName": 1, "LinkURL": 1, "Dir": 3}, fields, err.Error())
}

func TestLoadTemplatesBadDir(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "missing")
	_, err := mail.LoadTemplates(mail.TemplateConfig{Dir: missing})
	require.Error(t, err)
	assert.Contains(t, err.Error(), missing)
	assert.ErrorIs(t, err, os.ErrNotExist)

	file := filepath.Join(writeFiles(t, map[string]string{"f": ""}), "f")
	_, err = mail.LoadTemplates(mail.TemplateConfig{Dir: file})
	require.Error(t, err)
	assert.Contains(t, err.Error(), file+": not a directory")
}

func TestLinkInBothParts(t *testing.T) {
	t.Parallel()
	tpl := loadTemplates(t, mail.TemplateConfig{LinkURL: "https://app.example.com/verify?email={email}&code={code}"})
	for _, loc := range mail.Locales() {
		t.Run(string(loc), func(t *testing.T) {
			t.Parallel()
			m := testMessage()
			m.Locale = loc
			m.To = "a+b@example.com"
			got := composeOne(t, newAuthor(t, testFrom, "", tpl), m)
			assert.Contains(t, got.Text, "\r\nhttps://app.example.com/verify?email=a%2Bb%40example.com&code=739164\r\n")
			assert.Contains(t, got.HTML, `<a href="https://app.example.com/verify?email=a%2Bb%40example.com&amp;code=739164"`)
			for k, vs := range got.Header {
				for _, v := range vs {
					assert.NotContains(t, v, "739164", "header %s carries the code", k)
				}
			}
		})
	}

	// Values that need escaping are query-escaped, then HTML-escaped.
	m := testMessage()
	m.Code = "a&b=c#d"
	g, err := tpl.Compose(testFrom, "", m)
	require.NoError(t, err)
	msg := parse(t, g)
	assert.Contains(t, msg.Text, "email=alice.smith%40example.com&code=a%26b%3Dc%23d\r\n")
	assert.Contains(t, msg.HTML, `href="https://app.example.com/verify?email=alice.smith%40example.com&amp;code=a%26b%3Dc%23d"`)
}

func TestNoLinkByDefault(t *testing.T) {
	t.Parallel()
	msg := compose(t, testMessage())
	assert.NotContains(t, msg.Text, "http")
	assert.NotContains(t, msg.HTML, "<a ")
}

func TestLoadTemplatesRejectsBadLinkURL(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"https://app.example.com/verify?email={email}",         // no code
		"/verify?code={code}",                                  // relative
		"javascript:alert(1)//{code}",                          // not http(s)
		"ftp://app.example.com/{code}",                         // not http(s)
		"https://app.example.com/verify?code={code}&x={Email}", // unknown placeholder
		"https://app.example.com/verify?code={code}\r\nX: y",   // line break
		"https://app.example.com/verify?code={code} x",         // space
		"https://user:pw@app.example.com/verify?code={code}",   // credentials
		"https:///verify?code={code}",                          // no host
		"https://app.example.com/" + strings.Repeat("x", mail.MaxLinkURLLen) + "{code}",
	} {
		_, err := mail.LoadTemplates(mail.TemplateConfig{LinkURL: u})
		require.Error(t, err, u)
		var fe *field.Error
		require.ErrorAs(t, err, &fe)
		assert.Equal(t, "LinkURL", fe.Field, u)
	}
	for _, u := range []string{
		"https://app.example.com/verify?email={email}&code={code}",
		"http://127.0.0.1:8080/v/{code}#{email}",
	} {
		loadTemplates(t, mail.TemplateConfig{LinkURL: u})
	}
}

// noReply is a piece of each locale's request not to reply.
var noReply = map[mail.Locale]string{
	mail.LocaleZhCN: "请勿回复", mail.LocaleZhTW: "請勿直接回覆", mail.LocaleEN: "do not reply",
	mail.LocaleJA: "送信専用", mail.LocaleKO: "발신 전용", mail.LocaleES: "no respondas",
	mail.LocaleFR: "ne pas y répondre", mail.LocaleDE: "antworten Sie nicht", mail.LocalePtBR: "não responda",
	mail.LocaleRU: "отвечать на него не нужно",
}

func TestReplyTo(t *testing.T) {
	t.Parallel()
	for _, loc := range mail.Locales() {
		t.Run(string(loc), func(t *testing.T) {
			t.Parallel()
			m := testMessage()
			m.Locale = loc
			got := composeOne(t, newAuthor(t, testFrom, "ACME Support <support@acme.test>", nil), m)
			assert.Equal(t, `"ACME Support" <support@acme.test>`, got.Header.Get("Reply-To"))
			// The mail no longer asks not to reply; without a Reply-To it
			// does.
			without := composeOne(t, newAuthor(t, testFrom, "", nil), m)
			require.Contains(t, noReply, loc)
			for _, part := range []string{got.Text, got.HTML} {
				assert.NotContains(t, part, noReply[loc])
			}
			for _, part := range []string{without.Text, without.HTML} {
				assert.Contains(t, part, noReply[loc])
			}
		})
	}
	none := compose(t, testMessage())
	assert.Empty(t, none.Header.Get("Reply-To"))
	assert.Contains(t, none.Text, "please do not reply")

	_, err := mail.NewAuthor(testFrom, "support@acme.test\r\nBcc: evil@example.net", nil)
	require.ErrorIs(t, err, mail.ErrInvalidAddress)
	var fe *field.Error
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "ReplyTo", fe.Field)
	assert.NotContains(t, err.Error(), "evil")

	_, err = mail.DefaultTemplates().Compose(testFrom, "not an address", testMessage())
	require.ErrorIs(t, err, mail.ErrInvalidAddress)
}

// The example directory in docs/templates is valid and used.
func TestDocsTemplatesExample(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("..", "docs", "templates")
	tpl, err := mail.LoadTemplates(mail.TemplateConfig{Dir: dir, AppName: "ACME",
		LinkURL: "https://app.example.com/verify?email={email}&code={code}"})
	require.NoError(t, err)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var templates int
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmpl") {
			templates++
		}
	}
	require.Positive(t, templates, "the example has templates")

	g, err := tpl.Compose(testFrom, "", testMessage())
	require.NoError(t, err)
	msg := parse(t, g)
	html, err := fs.ReadFile(os.DirFS(dir), "en.html.tmpl")
	require.NoError(t, err)
	// The example's HTML template is the one used.
	require.Contains(t, string(html), "Enter this code")
	assert.Contains(t, msg.HTML, "Enter this code")
	assert.Contains(t, msg.HTML, "739164")
	assert.Contains(t, msg.HTML, "ACME")
	assert.Contains(t, msg.HTML, "code=739164")
}

// The example's templates serve every purpose with its phrases.
func TestDocsTemplatesExamplePurposes(t *testing.T) {
	t.Parallel()
	tpl, err := mail.LoadTemplates(mail.TemplateConfig{Dir: filepath.Join("..", "docs", "templates"), AppName: "ACME",
		LinkURL: "https://app.example.com/verify?email={email}&code={code}"})
	require.NoError(t, err)
	for purpose, want := range map[string][2]string{
		"":               {"ACME: Verify your email address", "Enter this code to verify your email address:"},
		"reset_password": {"ACME: Reset your password", "Enter this code to reset your password:"},
		"login":          {"ACME: Sign in", "Enter this code to sign in:"},
	} {
		m := testMessage()
		m.Purpose = purpose
		g, err := tpl.Compose(testFrom, "", m)
		require.NoError(t, err)
		msg := parse(t, g)
		assert.Equal(t, want[0], msg.Subject, purpose)
		assert.Contains(t, msg.Text, want[1], purpose)
		assert.Contains(t, msg.HTML, want[1], purpose)
		assert.Contains(t, msg.HTML, ">"+strings.TrimPrefix(want[0], "ACME: ")+"</a>", purpose)
	}
}
