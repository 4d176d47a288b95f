// Package doctable reads the tables of verifyq's reference docs, for the
// tests that keep them true to the code (the configuration reference's
// variables, the operations guide's metrics).
package doctable

import (
	"bufio"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Rows returns the submatches of row for each row of the tables in the
// file at path under the heading "## "+heading, up to the next "## ": a
// line that begins "| `" there and does not match row fails t, as does a
// section without such a row.
func Rows(t *testing.T, path, heading string, row *regexp.Regexp) [][]string {
	t.Helper()
	f, err := os.Open(path) //nolint:gosec // G304: the test names the file
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	var rows [][]string
	in := false
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## "+heading
		case in && strings.HasPrefix(line, "| `"):
			m := row.FindStringSubmatch(line)
			if assert.NotNil(t, m, "a malformed row: %s", line) {
				rows = append(rows, m)
			}
		}
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, rows, "no table under ## %s in %s", heading, path)
	return rows
}
