package mail_test

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/mail"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// TestComposeGolden pins the default mails (no app name, no link, the
// embedded templates) byte for byte: the subject and both parts of each
// locale, for a lifetime of one minute and of ten.
func TestComposeGolden(t *testing.T) {
	t.Parallel()
	for _, loc := range []mail.Locale{mail.LocaleZhCN, mail.LocaleEN} {
		for _, minutes := range []int{1, 10} {
			name := fmt.Sprintf("%s.%dm", loc, minutes)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				msg := compose(t, mail.Message{To: "user@example.com", Locale: loc, Code: "482916",
					ExpiresIn: time.Duration(minutes) * time.Minute})
				for ext, got := range map[string]string{"subject": msg.Subject, "txt": msg.Text, "html": msg.HTML} {
					file := name + "." + ext
					if *update {
						require.NoError(t, os.WriteFile(filepath.Join("testdata", "golden", file), []byte(got), 0o600))
						continue
					}
					want, err := fs.ReadFile(os.DirFS(filepath.Join("testdata", "golden")), file)
					require.NoError(t, err)
					require.Equal(t, string(want), got, file)
				}
			})
		}
	}
}
