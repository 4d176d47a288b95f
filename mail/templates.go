package mail

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	texttemplate "text/template"
	"text/template/parse"
	"unicode"
	"unicode/utf8"

	"github.com/verifyq/verifyq/internal/field"

	"github.com/verifyq/verifyq/codes"
)

// TemplateData is what every template sees: the subject, text and HTML
// templates of a mail, embedded or from TemplateConfig.Dir. Templates refer
// to its fields as {{.Code}}, {{.Minutes}} and so on.
type TemplateData struct {
	// Code is the verification code. The text and the HTML part must show
	// it.
	Code string
	// Minutes is the code's remaining lifetime in whole minutes, rounded
	// up, at least 1.
	Minutes int64
	// Lifetime is Minutes in words in the mail's locale, the word in the
	// plural form the number takes: "1 minute", "10 minutes", "10 分钟",
	// "10分", "1 минуту", "2 минуты", "5 минут".
	Lifetime string
	// AppName is the product's name (APP_NAME); empty when unset.
	AppName string
	// Purpose is what the code is for; empty is the default purpose.
	Purpose string
	// Locale is the mail's locale, one of Locales: "zh-CN", "en", "ja" ...
	Locale string
	// Link is the verification link, TemplateConfig.LinkURL with the
	// address and the code filled in; empty when no link is configured.
	Link string
	// ReplyTo is the Reply-To address (MAIL_REPLY_TO); empty when unset,
	// in which case replies go nowhere useful.
	ReplyTo string
	// Subject is the rendered subject line, for the text and HTML parts;
	// empty while the subject itself renders.
	Subject string
	// Phrases is the wording of the mail's purpose in its locale:
	// {{.CodeName}}, {{.Action}} and {{.Button}}. A purpose without
	// wording of its own (one added with PURPOSES) has the default
	// purpose's.
	Phrases
}

// Bounds on the template configuration and on what the templates render.
const (
	// MaxAppNameLen bounds TemplateConfig.AppName, in characters.
	MaxAppNameLen = 64
	// MaxLinkURLLen bounds TemplateConfig.LinkURL, in bytes.
	MaxLinkURLLen = 2048
	// MaxTemplateSize bounds one template file, in bytes.
	MaxTemplateSize = 64 << 10
	// MaxSubjectLen bounds a rendered subject, in characters.
	MaxSubjectLen = 200
	// maxPartSize bounds a rendered text or HTML part, in bytes.
	maxPartSize = 256 << 10
	// maxPurposes bounds the purpose directories in TemplateConfig.Dir.
	maxPurposes = 64
)

// TemplateConfig configures what the mails say. The zero value is the
// embedded templates without an app name or a link.
type TemplateConfig struct {
	// Dir, when set, is a directory of templates that override the
	// embedded ones, each on its own: "<locale>.subject.tmpl",
	// "<locale>.txt.tmpl" and "<locale>.html.tmpl" for every purpose, and
	// the same names under "<purpose>/" for one purpose. A mail takes each
	// of its three templates from the first of Dir's "<purpose>/<locale>",
	// Dir's "<locale>", then the same two names in the embedded set. Files
	// that do not end in ".tmpl" and names starting with "." are ignored.
	Dir string
	// AppName is the product's name, shown in the subject and both parts
	// of the embedded templates: up to MaxAppNameLen characters, no
	// control characters, no leading or trailing space.
	AppName string
	// LinkURL, when set, adds a verification link to the mails: an
	// absolute http or https URL in which "{code}" (required) and
	// "{email}" (optional) are replaced by the code and the recipient's
	// address, query-escaped, e.g.
	// "https://app.example.com/verify?email={email}&code={code}".
	LinkURL string
}

// Templates are the parsed and checked templates of every purpose and
// locale, with the app name and the link. They are safe for concurrent use.
type Templates struct {
	appName string
	linkURL string
	sets    map[setKey]*templateSet

	// The senders kept parsed (of Authors and of Compose) and the mails
	// prepared (prepare.go), each up to its bounds (nSenders, nPrepared,
	// preparedBytes).
	senders       sync.Map // senderKey to *sender
	nSenders      atomic.Int32
	mails         sync.Map // preparedKey to *prepared, nil for mails rendered
	nPrepared     atomic.Int32
	preparedBytes atomic.Int64 // the sizes of the mails prepared
}

type setKey struct {
	purpose string
	locale  Locale
}

// templateSet holds the three templates of one purpose and locale.
type templateSet struct {
	subject, text, html *parsed
	// splits tells that its mails can be prepared (splittable).
	splits bool
}

// parsed is one parsed template file.
type parsed struct {
	file string // as errors name it: a path in Dir, or "mail/templates/..."
	t    interface {
		Execute(io.Writer, any) error
	}
}

// trees returns the parse trees of p's template and of those it defines.
func (p *parsed) trees() []*parse.Tree {
	var trees []*parse.Tree
	switch t := p.t.(type) {
	case *texttemplate.Template:
		for _, d := range t.Templates() {
			trees = append(trees, d.Tree)
		}
	case *htmltemplate.Template:
		for _, d := range t.Templates() {
			trees = append(trees, d.Tree)
		}
	}
	return trees
}

// kinds of template, by file name suffix.
const (
	subjectSuffix = ".subject.tmpl"
	textSuffix    = ".txt.tmpl"
	htmlSuffix    = ".html.tmpl"
)

//go:embed templates/*.tmpl
var templateFS embed.FS

// embeddedLayer holds the embedded templates by name, and embedded the
// Templates made of them alone; both are checked when the package loads.
var (
	embeddedLayer = func() map[string]*parsed {
		sub, err := fs.Sub(templateFS, "templates")
		if err != nil {
			panic(err)
		}
		layer, err := parseLayer(sub, func(name string) string { return "mail/templates/" + name })
		if err != nil {
			panic(err)
		}
		return layer
	}()
	embedded = func() *Templates {
		t, err := build(nil, embeddedLayer, "", "")
		if err != nil {
			panic(err)
		}
		return t
	}()
)

// DefaultTemplates returns the embedded templates, without an app name or a
// link.
func DefaultTemplates() *Templates { return embedded }

// LoadTemplates parses c.Dir's templates over the embedded set and checks
// every purpose and locale: each template parses and renders with sample
// data (with c's app name and link), the subject renders to one non-empty
// line of at most MaxSubjectLen characters without the code and the same
// for another code (nothing made from the code is in it), and the text and
// the HTML part show the code. It reports every problem at once, each a *field.Error
// named AppName, LinkURL or Dir; a Dir error names the file, and the line
// when the template parser or executor gives one.
func LoadTemplates(c TemplateConfig) (*Templates, error) {
	var errs []error
	if err := validateAppName(c.AppName); err != nil {
		errs = append(errs, &field.Error{Field: "AppName", Err: err})
		c.AppName = ""
	}
	if err := validateLinkURL(c.LinkURL); err != nil {
		errs = append(errs, &field.Error{Field: "LinkURL", Err: err})
		c.LinkURL = ""
	}
	var dir map[string]*parsed
	if c.Dir != "" {
		var err error
		if dir, err = loadDir(c.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	// The templates that parsed are checked even when others did not.
	t, err := build(dir, embeddedLayer, c.AppName, c.LinkURL)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		// Rename with no names flattens the joined errors into one list.
		return nil, field.Rename(errors.Join(errs...), nil)
	}
	return t, nil
}

// loadDir parses the templates in dir.
func loadDir(dir string) (map[string]*parsed, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, &field.Error{Field: "Dir", Err: err}
	}
	if !fi.IsDir() {
		return nil, field.Errorf("Dir", "%s: not a directory", dir)
	}
	return parseLayer(os.DirFS(dir), func(name string) string { return filepath.Join(dir, filepath.FromSlash(name)) })
}

// layer collects the parsed templates of one directory and its problems.
type layer struct {
	fsys    fs.FS
	display func(name string) string
	out     map[string]*parsed
	errs    []error
}

// fail records a problem with the file or directory name.
func (l *layer) fail(name string, err error) {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	l.errs = append(l.errs, field.Errorf("Dir", "%s: %w", l.display(name), err))
}

// parseLayer parses the templates of fsys: "<locale>.<kind>.tmpl" at the
// top and "<purpose>/<locale>.<kind>.tmpl" one level down. Symbolic links
// are followed (a Kubernetes ConfigMap volume is made of them); names
// starting with "." are skipped, and so are files not ending in ".tmpl"
// and anything deeper. display names a file in errors and in the parsed
// templates. Every problem is reported, each a *field.Error named Dir.
func parseLayer(fsys fs.FS, display func(name string) string) (map[string]*parsed, error) {
	l := &layer{fsys: fsys, display: display, out: make(map[string]*parsed)}
	top, err := fs.ReadDir(fsys, ".")
	if err != nil {
		l.fail(".", err)
		return nil, errors.Join(l.errs...)
	}
	purposes := 0
	for _, e := range top {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		fi, err := fs.Stat(fsys, name)
		switch {
		case err != nil:
			l.fail(name, err)
		case !fi.IsDir():
			l.file(name, "", fi)
		default:
			if purposes++; purposes > maxPurposes {
				l.fail(name, fmt.Errorf("more than %d purpose directories", maxPurposes))
				return nil, errors.Join(l.errs...)
			}
			l.purposeDir(name)
		}
	}
	return l.out, errors.Join(l.errs...)
}

// purposeDir parses the templates of one purpose directory.
func (l *layer) purposeDir(purpose string) {
	entries, err := fs.ReadDir(l.fsys, purpose)
	if err != nil {
		l.fail(purpose, err)
		return
	}
	for _, e := range entries {
		name := path.Join(purpose, e.Name())
		if strings.HasPrefix(e.Name(), ".") || !strings.HasSuffix(e.Name(), ".tmpl") {
			continue
		}
		if err := codes.ValidatePurpose(purpose); err != nil {
			l.fail(name, fmt.Errorf("the directory's name is not a purpose: %w", err))
			continue
		}
		fi, err := fs.Stat(l.fsys, name)
		if err != nil {
			l.fail(name, err)
			continue
		}
		l.file(name, purpose, fi)
	}
}

// file parses one template file. Files that do not end in ".tmpl" are
// ignored.
func (l *layer) file(name, purpose string, fi fs.FileInfo) {
	base := path.Base(name)
	if !strings.HasSuffix(base, ".tmpl") {
		return
	}
	suffix := suffixOf(base)
	loc := Locale(strings.TrimSuffix(base, suffix))
	switch {
	case !fi.Mode().IsRegular():
		l.fail(name, errors.New("not a regular file"))
		return
	case suffix == "" || !slices.Contains(locales, loc):
		l.fail(name, fmt.Errorf("unexpected template name: want <locale>%s, <locale>%s or <locale>%s, locale one of %s",
			subjectSuffix, textSuffix, htmlSuffix, localeList()))
		return
	}
	src, err := readLimited(l.fsys, name)
	if err != nil {
		l.fail(name, err)
		return
	}
	file := l.display(name)
	p := &parsed{file: file}
	if suffix == htmlSuffix {
		p.t, err = htmltemplate.New(file).Parse(src)
	} else {
		p.t, err = texttemplate.New(file).Parse(src)
	}
	if err != nil {
		// The parser's error names the file and the line:
		// "template: <file>:3: unexpected ...".
		l.errs = append(l.errs, &field.Error{Field: "Dir", Err: err})
		return
	}
	l.out[templateName(purpose, loc, suffix)] = p
}

// readLimited reads a template file of at most MaxTemplateSize bytes of
// valid UTF-8.
func readLimited(fsys fs.FS, name string) (string, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }() // read only: nothing to lose
	b, err := io.ReadAll(io.LimitReader(f, MaxTemplateSize+1))
	switch {
	case err != nil:
		return "", err
	case len(b) > MaxTemplateSize:
		return "", fmt.Errorf("larger than %d bytes", MaxTemplateSize)
	case !utf8.Valid(b):
		return "", errors.New("not valid UTF-8")
	}
	return string(b), nil
}

func suffixOf(name string) string {
	for _, s := range []string{subjectSuffix, textSuffix, htmlSuffix} {
		if strings.HasSuffix(name, s) {
			return s
		}
	}
	return ""
}

func templateName(purpose string, loc Locale, suffix string) string {
	if purpose == "" {
		return string(loc) + suffix
	}
	return purpose + "/" + string(loc) + suffix
}

func localeList() string {
	names := make([]string, len(locales))
	for i, l := range locales {
		names[i] = string(l)
	}
	return strings.Join(names, ", ")
}

// build picks the three templates of every purpose and locale, from dir
// first and then from emb (see TemplateConfig.Dir), and checks them with
// sample data, for every purpose with templates or wording of its own.
func build(dir, emb map[string]*parsed, appName, linkURL string) (*Templates, error) {
	var purposes []string
	for p := range purposePhrases {
		purposes = append(purposes, p)
	}
	for _, layer := range []map[string]*parsed{dir, emb} {
		for name := range layer {
			if p, _, ok := strings.Cut(name, "/"); ok && !slices.Contains(purposes, p) {
				purposes = append(purposes, p)
			}
		}
	}
	slices.Sort(purposes)
	t := &Templates{appName: appName, linkURL: linkURL, sets: make(map[setKey]*templateSet)}
	pick := func(purpose string, loc Locale, suffix string) *parsed {
		for _, layer := range []map[string]*parsed{dir, emb} {
			if purpose != "" {
				if p := layer[templateName(purpose, loc, suffix)]; p != nil {
					return p
				}
			}
			if p := layer[templateName("", loc, suffix)]; p != nil {
				return p
			}
		}
		panic("mail: no embedded template " + templateName("", loc, suffix))
	}
	for _, purpose := range purposes {
		for _, loc := range locales {
			t.sets[setKey{purpose, loc}] = &templateSet{
				subject: pick(purpose, loc, subjectSuffix),
				text:    pick(purpose, loc, textSuffix),
				html:    pick(purpose, loc, htmlSuffix),
			}
		}
	}
	if err := t.check(purposes); err != nil {
		return nil, err
	}
	// After check: html/template has added its escapers to the trees.
	for _, set := range t.sets {
		set.splits = splittable(set.subject.trees(), false) && splittable(set.text.trees(), true) && splittable(set.html.trees(), true)
	}
	return t, nil
}

// samples are the data every template is tried with at start: two codes
// and lifetimes, without and with a Reply-To. Each has a twin code of the
// same length that differs from it in every digit: the subject rendered
// with the twin (and all else equal) must be the same, or the subject
// tells something of the code.
var samples = []struct {
	code, twin, email, replyTo string
	minutes                    int64
}{
	{"402718", "659043", "user@example.com", "", 10},
	{"975361", "120894", "user+tag@example.com", "support@example.com", 1},
}

// check renders every purpose and locale with the samples. Each problem is
// reported once, a *field.Error named Dir that names the file.
func (t *Templates) check(purposes []string) error {
	var errs []error
	seen := make(map[string]bool)
	for _, purpose := range purposes {
		for _, loc := range locales {
			set := t.sets[setKey{purpose, loc}]
			for _, s := range samples {
				d := t.data(purpose, loc, s.email, s.code, s.minutes, s.replyTo)
				subject, text, html, err := t.render(set, d)
				var twin string
				if err == nil {
					twin, err = t.subject(set, t.data(purpose, loc, s.email, s.twin, s.minutes, s.replyTo))
				}
				if err == nil {
					switch {
					case strings.Contains(subject, s.code):
						err = fmt.Errorf("%s: the subject shows the code: keep it out of the headers", set.subject.file)
					case twin != subject:
						err = fmt.Errorf("%s: the subject changes with the code (it shows part of the code, "+
							"or something made from it such as the link): keep the code out of the headers", set.subject.file)
					case !strings.Contains(text, s.code):
						err = fmt.Errorf("%s: the text does not show the code ({{.Code}})", set.text.file)
					case !strings.Contains(html, s.code):
						err = fmt.Errorf("%s: the HTML does not show the code ({{.Code}})", set.html.file)
					}
				}
				if err != nil && !seen[err.Error()] {
					seen[err.Error()] = true
					errs = append(errs, &field.Error{Field: "Dir", Err: err})
				}
			}
		}
	}
	return errors.Join(errs...)
}

// data returns what the templates see for one mail.
func (t *Templates) data(purpose string, loc Locale, email, code string, minutes int64, replyTo string) TemplateData {
	return TemplateData{
		Code: code, Minutes: minutes, Lifetime: lifetime(loc, minutes), AppName: t.appName, Purpose: purpose,
		Locale: string(loc), Link: t.link(email, code), ReplyTo: replyTo,
		Phrases: phrasesFor(purpose, loc),
	}
}

// link fills the link template in, or returns "" when there is none.
func (t *Templates) link(email, code string) string {
	if t.linkURL == "" {
		return ""
	}
	return strings.NewReplacer("{email}", url.QueryEscape(email), "{code}", url.QueryEscape(code)).Replace(t.linkURL)
}

// lookup returns the templates of purpose and loc, or the default
// purpose's when purpose has none of its own.
func (t *Templates) lookup(purpose string, loc Locale) *templateSet {
	if s := t.sets[setKey{purpose, loc}]; s != nil {
		return s
	}
	return t.sets[setKey{"", loc}]
}

// render renders the subject, then the text and HTML parts with
// d.Subject set. Errors name the template file.
func (t *Templates) render(set *templateSet, d TemplateData) (subject, text, html string, err error) {
	if subject, err = t.subject(set, d); err != nil {
		return "", "", "", err
	}
	d.Subject = subject
	if text, err = execute(set.text, d); err != nil {
		return "", "", "", err
	}
	if html, err = execute(set.html, d); err != nil {
		return "", "", "", err
	}
	return subject, text, html, nil
}

// subject renders the subject of set for d: one non-empty line of at most
// MaxSubjectLen characters, surrounding white space trimmed. Errors name
// the template file.
func (t *Templates) subject(set *templateSet, d TemplateData) (string, error) {
	d.Subject = ""
	subject, err := execute(set.subject, d)
	if err != nil {
		return "", err
	}
	subject = strings.TrimSpace(subject)
	switch {
	case subject == "":
		return "", fmt.Errorf("%s: the subject is empty", set.subject.file)
	case strings.ContainsFunc(subject, badInLine):
		return "", fmt.Errorf("%s: the subject must be one line without control characters", set.subject.file)
	case utf8.RuneCountInString(subject) > MaxSubjectLen:
		return "", fmt.Errorf("%s: the subject is longer than %d characters", set.subject.file, MaxSubjectLen)
	}
	return subject, nil
}

// execute runs one template into at most maxPartSize bytes.
func execute(p *parsed, d TemplateData) (string, error) {
	w := &limitedBuffer{max: maxPartSize}
	if err := p.t.Execute(w, d); err != nil {
		if errors.Is(err, errTooLarge) {
			return "", fmt.Errorf("%s: renders more than %d bytes", p.file, maxPartSize)
		}
		// The executor's error names the file, line and column.
		return "", err
	}
	return w.String(), nil
}

var errTooLarge = errors.New("too large")

// limitedBuffer is a bytes.Buffer that refuses to grow past max.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		return 0, errTooLarge
	}
	return b.Buffer.Write(p)
}

// badInLine reports characters that have no place in a one-line header
// value or a name: control characters (CR, LF, tab ...), format
// characters (such as bidi overrides) and line or paragraph separators.
func badInLine(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
}

func validateAppName(s string) error {
	switch {
	case s == "":
		return nil
	case !utf8.ValidString(s):
		return errors.New("not valid UTF-8")
	case utf8.RuneCountInString(s) > MaxAppNameLen:
		return fmt.Errorf("longer than %d characters", MaxAppNameLen)
	case strings.ContainsFunc(s, badInLine):
		return errors.New("contains a control or format character")
	case strings.TrimSpace(s) != s:
		return errors.New("starts or ends with a space")
	}
	return nil
}

// linkSample is the recipient the link is tried with at start.
const linkSample = "user+tag@example.com"

func validateLinkURL(s string) error {
	if s == "" {
		return nil
	}
	switch {
	case len(s) > MaxLinkURLLen:
		return fmt.Errorf("longer than %d bytes", MaxLinkURLLen)
	case !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || badInLine(r) }):
		return errors.New("contains a space, a control character or invalid UTF-8")
	case !strings.Contains(s, "{code}"):
		return errors.New("has no {code} placeholder")
	case strings.ContainsAny(strings.NewReplacer("{email}", "", "{code}", "").Replace(s), "{}"):
		return errors.New("has a brace outside the placeholders {email} and {code}")
	}
	t := Templates{linkURL: s}
	u, err := url.Parse(t.link(linkSample, "123456"))
	switch {
	case err != nil:
		return errors.New("not a valid URL once filled in")
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("must be an absolute http or https URL")
	case u.Host == "" || u.Opaque != "":
		return errors.New("must be an absolute http or https URL with a host")
	case u.User != nil:
		return errors.New("must not hold a user name or password")
	}
	return nil
}
