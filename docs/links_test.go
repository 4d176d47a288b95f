package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	fence      = regexp.MustCompile("(?ms)^ *```.*?^ *```[^\n]*$")
	codeSpan   = regexp.MustCompile("`[^`\n]*`")
	comment    = regexp.MustCompile(`(?s)<!--.*?-->`)
	inlineLink = regexp.MustCompile(`!?\[([^\]]*)\]\(([^)\s]*)(?:\s+"[^"]*")?\)`)
	heading    = regexp.MustCompile(`(?m)^#{1,6}[ \t]+(.+?)[ \t#]*$`)
	scheme     = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
)

// prose is a Markdown text without its code blocks, code spans and
// comments, where a link is not a link.
func prose(md string) string {
	md = fence.ReplaceAllString(md, "")
	md = comment.ReplaceAllString(md, "")
	return codeSpan.ReplaceAllString(md, "")
}

// links are the targets of the inline links and images of md, in order.
func links(md string) []string {
	var out []string
	for _, m := range inlineLink.FindAllStringSubmatch(prose(md), -1) {
		out = append(out, m[2])
	}
	return out
}

// anchors are the anchors GitHub gives the headings of md: the heading's
// text in lower case, without punctuation (but - and _), spaces turned into
// hyphens, and -1, -2 ... after a repeated one.
func anchors(md string) map[string]bool {
	seen := map[string]int{}
	out := map[string]bool{}
	for _, m := range heading.FindAllStringSubmatch(fence.ReplaceAllString(md, ""), -1) {
		text := inlineLink.ReplaceAllString(m[1], "$1")
		var b strings.Builder
		for _, r := range strings.ToLower(text) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		a := b.String()
		if n := seen[a]; n > 0 {
			out[a+"-"+strconv.Itoa(n)] = true
		} else {
			out[a] = true
		}
		seen[a]++
	}
	return out
}

func TestLinksAndAnchorsFound(t *testing.T) {
	t.Parallel()
	md := "# Title\n\n## A `code` heading (with: punctuation)\n\n## Title\n\n" +
		"See [one](a.md), ![two](img/b.png \"title\"), [three](#title-1) and [web](https://example.com).\n\n" +
		"```sh\n[not](a-link.md)\n```\n\n`[nor](this.md)` <!-- [nor](that.md) -->\n"
	assert.Equal(t, []string{"a.md", "img/b.png", "#title-1", "https://example.com"}, links(md))
	assert.Equal(t, map[string]bool{"title": true, "a-code-heading-with-punctuation": true, "title-1": true}, anchors(md))
}

// Every relative link of every Markdown file of the repository (README.md,
// docs/, SECURITY.md, BENCHMARKS.md ...) leads to a file or directory of the
// repository, and a link's #anchor into a Markdown file to one of its
// headings.
func TestEveryRelativeLinkResolves(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	var files []string
	require.NoError(t, filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() && path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "tmp-") ||
			name == "bin" || name == "node_modules" || name == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(name, ".md") {
			files = append(files, path)
		}
		return nil
	}))
	require.Contains(t, files, filepath.Join(root, "README.md"))
	require.Contains(t, files, filepath.Join(root, "docs", "API.md"))

	read := func(path string) string {
		b, err := os.ReadFile(path) //nolint:gosec // G304: a Markdown file of the repository, found above
		require.NoError(t, err)
		return string(b)
	}
	checked := 0
	for _, file := range files {
		rel, _ := filepath.Rel(root, file)
		for _, target := range links(read(file)) {
			if target == "" || scheme.MatchString(target) || strings.HasPrefix(target, "//") {
				continue
			}
			checked++
			path, anchor, _ := strings.Cut(target, "#")
			dest := file
			if path != "" {
				dest = filepath.Join(filepath.Dir(file), filepath.FromSlash(path))
				inside, err := filepath.Rel(root, dest)
				if !assert.NoError(t, err) || !assert.False(t, strings.HasPrefix(inside, ".."), "%s: %s leaves the repository", rel, target) {
					continue
				}
				if _, err := os.Stat(dest); err != nil {
					assert.Fail(t, "broken link", "%s: %s: %v", rel, target, err)
					continue
				}
			}
			if anchor != "" && strings.HasSuffix(dest, ".md") {
				assert.True(t, anchors(read(dest))[anchor], "%s: %s: no heading with the anchor #%s", rel, target, anchor)
			}
		}
	}
	assert.Positive(t, checked, "relative links found")
	t.Logf("%d relative links in %d files", checked, len(files))
}
