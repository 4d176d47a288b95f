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

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/mail"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// checkGolden compares the subject and both parts of msg with the golden
// files <name>.subject, <name>.txt and <name>.html, or rewrites them with
// -update.
func checkGolden(t *testing.T, name string, msg smtptest.Message) {
	t.Helper()
	dir := filepath.Join("testdata", "golden")
	for ext, got := range map[string]string{"subject": msg.Subject, "txt": msg.Text, "html": msg.HTML} {
		file := name + "." + ext
		if *update {
			require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, file)), 0o750))
			require.NoError(t, os.WriteFile(filepath.Join(dir, file), []byte(got), 0o600))
			continue
		}
		want, err := fs.ReadFile(os.DirFS(dir), file)
		require.NoError(t, err)
		require.Equal(t, string(want), got, file)
	}
}

// TestComposeGolden pins the default mails (no app name, no link, the
// embedded templates) byte for byte: the subject and both parts of each
// locale, for a lifetime of one minute and of ten.
func TestComposeGolden(t *testing.T) {
	t.Parallel()
	for _, loc := range mail.Locales() {
		for _, minutes := range []int{1, 10} {
			name := fmt.Sprintf("%s.%dm", loc, minutes)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				checkGolden(t, name, compose(t, mail.Message{To: "user@example.com", Locale: loc, Code: "482916",
					ExpiresIn: time.Duration(minutes) * time.Minute}))
			})
		}
	}
}

// TestComposeGoldenPurposes pins the mail of every purpose (the default
// one, "default" in the file names, and codes.DefaultPurposes) in every
// locale, with an app name and a link so that the button shows:
// testdata/golden/purposes/<purpose>.<locale>.{subject,txt,html}.
func TestComposeGoldenPurposes(t *testing.T) {
	t.Parallel()
	tpl := loadTemplates(t, mail.TemplateConfig{AppName: "ACME",
		LinkURL: "https://app.example.com/verify?email={email}&code={code}"})
	for _, purpose := range append([]string{""}, codes.DefaultPurposes...) {
		for _, loc := range mail.Locales() {
			file := purpose
			if file == "" {
				file = "default"
			}
			name := "purposes/" + file + "." + string(loc)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				g, err := tpl.Compose(testFrom, "", mail.Message{To: "user@example.com", Locale: loc,
					Code: "482916", ExpiresIn: 10 * time.Minute, Purpose: purpose})
				require.NoError(t, err)
				checkGolden(t, name, parse(t, g))
			})
		}
	}
}
