package docs

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/mail"
)

// localeCell is the first cell of a row of the locales table.
var localeCell = regexp.MustCompile("^\\| `([^`]+)` \\|")

// The locales API.md lists, the templates README names and
// DEFAULT_LOCALE's row offers are the supported locales, mail.Locales.
func TestLocalesDocumented(t *testing.T) {
	t.Parallel()
	var want []string
	for _, l := range mail.Locales() {
		want = append(want, string(l))
	}

	api, err := os.ReadFile("API.md")
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(api), "<!-- locales:start -->\n")
	require.True(t, ok, "the locales:start marker")
	table, _, ok := strings.Cut(rest, "<!-- locales:end -->")
	require.True(t, ok, "the locales:end marker")
	var got []string
	for _, line := range strings.Split(table, "\n") {
		if m := localeCell.FindStringSubmatch(line); m != nil {
			got = append(got, m[1])
		}
	}
	assert.Equal(t, want, got, "API.md's table of locales")

	list := "`" + strings.Join(want, "`, `") + "`"
	for _, file := range []string{"CONFIGURATION.md", "templates/README.md"} {
		b, err := os.ReadFile(file) //nolint:gosec // G304: the test names the file
		require.NoError(t, err)
		assert.Contains(t, string(b), list, "%s lists the locales in mail.Locales' order", file)
	}
}
