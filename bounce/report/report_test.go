package report_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/bounce/report"
)

// read reads testdata/name, with CRLF line ends as SMTP carries it when
// crlf.
func read(t *testing.T, name string, crlf bool) (*report.Report, error) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name)) //nolint:gosec // G304: the test names the file
	require.NoError(t, err)
	if crlf {
		b = bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
	}
	return report.Read(bytes.NewReader(b))
}

// The samples are shaped as Postfix writes its notifications and as
// webmail providers write their feedback reports; each reads the same with
// LF and CRLF line ends.
func TestRead(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file string
		want report.Report
	}{
		{"postfix-user-unknown.eml", report.Report{
			Type: report.Delivery,
			Recipients: []report.Recipient{{
				Final: "nobody@dest.test", Original: "nobody@dest.test", Action: "failed", Status: "5.1.1", Reply: 550,
				Diagnostic: "5.1.1 <nobody@dest.test>: Recipient address rejected: User unknown in virtual mailbox table",
			}},
			Original: report.Original{To: []string{"nobody@dest.test"}, ReturnPath: "bounces+TOKEN@bounce.test"},
		}},
		{"postfix-no-domain.eml", report.Report{
			Type: report.Delivery,
			Recipients: []report.Recipient{{
				Final: "alice@no-such-domain.test", Original: "alice@no-such-domain.test", Action: "failed", Status: "5.4.4",
				Diagnostic: "Host or domain name not found. Name service error for name=no-such-domain.test type=A: Host not found",
			}},
			Original: report.Original{To: []string{"alice@no-such-domain.test"}, ReturnPath: "bounces+TOKEN@bounce.test"},
		}},
		{"postfix-delayed.eml", report.Report{
			Type: report.Delivery,
			Recipients: []report.Recipient{{
				Final: "carol@slow.test", Original: "carol@slow.test", Action: "delayed", Status: "4.4.1",
				Diagnostic: "connect to mx.slow.test[192.0.2.80]:25: Connection timed out",
			}},
			Original: report.Original{To: []string{"carol@slow.test"}, ReturnPath: "bounces+TOKEN@bounce.test"},
		}},
		{"postfix-gmail-multiline.eml", report.Report{
			Type: report.Delivery,
			Recipients: []report.Recipient{{
				Final: "dave.gone@webmail.test", Original: "Dave.Gone@webmail.test", Action: "failed", Status: "5.1.1", Reply: 550,
				Diagnostic: "5.1.1 The email account that you tried to reach does not exist. Please try double-checking the recipient's email " +
					"address for typos or unnecessary spaces. For more information, go to  https://support.webmail.test/NoSuchUser " +
					"d9443c01a7336-2a0f1b2c3d4e5si1234567ad.123 - gsmtp",
			}},
		}},
		{"postfix-policy.eml", report.Report{
			Type: report.Delivery,
			Recipients: []report.Recipient{
				{
					Final: "erin@strict.test", Action: "failed", Status: "5.7.1", Reply: 554,
					Diagnostic: "5.7.1 Service unavailable; Client host [192.0.2.10] blocked using zen.spamhaus.test; erin@strict.test",
				},
				{Final: "frank@strict.test", Action: "failed", Status: "5.6.0", Reply: 554, Diagnostic: "5.6.0 Message content rejected"},
			},
		}},
		{"global-utf8.eml", report.Report{
			Type:       report.Delivery,
			Recipients: []report.Recipient{{Final: "jürgen@dest.test", Action: "failed", Status: "5.1.1", Reply: 550, Diagnostic: "5.1.1 No such user"}},
			Original:   report.Original{To: []string{"jürgen@dest.test"}, ReturnPath: "bounces+TOKEN@bounce.test"},
		}},
		{"arf-yahoo.eml", report.Report{
			Type:     report.Feedback,
			Feedback: report.FeedbackFields{Type: "abuse", MailFrom: "bounces+TOKEN@bounce.test", RcptTo: []string{"grace@webmail.test"}},
			Original: report.Original{To: []string{"grace@webmail.test"}, ReturnPath: "bounces+TOKEN@bounce.test"},
		}},
		{"arf-redacted.eml", report.Report{
			Type:     report.Feedback,
			Feedback: report.FeedbackFields{Type: "abuse"},
			Original: report.Original{To: []string{"redacted@provider.test"}, ReturnPath: "bounces+TOKEN@bounce.test"},
		}},
	}
	for _, tt := range tests {
		for _, crlf := range []bool{false, true} {
			got, err := read(t, tt.file, crlf)
			require.NoError(t, err, "%s crlf=%v", tt.file, crlf)
			assert.Equal(t, tt.want, *got, "%s crlf=%v", tt.file, crlf)
		}
	}
}

// What is no report, or a broken one, is an error of its kind, never a
// panic.
func TestReadRefuses(t *testing.T) {
	t.Parallel()
	for file, want := range map[string]error{
		"autoreply.eml":   report.ErrNotReport,
		"no-boundary.eml": report.ErrMalformed,
	} {
		_, err := read(t, file, true)
		assert.ErrorIs(t, err, want, file)
	}
	head := "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=%s; boundary=b\r\n\r\n"
	for _, tt := range []struct {
		name, msg string
		want      error
	}{
		{"empty", "", report.ErrMalformed},
		{"no header end", "Subject: x", report.ErrNotReport},
		{"another report type", strings.Replace(head, "%s", "disposition-notification", 1) + "--b\r\n\r\nx\r\n--b--\r\n", report.ErrNotReport},
		{"no delivery status part", strings.Replace(head, "%s", "delivery-status", 1) + "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n", report.ErrMalformed},
		{"delivery status without a recipient", strings.Replace(head, "%s", "delivery-status", 1) +
			"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n--b--\r\n", report.ErrMalformed},
		{"a broken field", strings.Replace(head, "%s", "delivery-status", 1) +
			"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\nno colon here\r\n\r\n--b--\r\n", report.ErrMalformed},
		{"feedback report without fields", strings.Replace(head, "%s", "feedback-report", 1) +
			"--b\r\nContent-Type: message/feedback-report\r\n\r\n\r\n--b--\r\n", report.ErrMalformed},
		{"unterminated multipart", strings.Replace(head, "%s", "delivery-status", 1) + "--b\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Rec", report.ErrMalformed},
	} {
		_, err := report.Read(strings.NewReader(tt.msg))
		assert.ErrorIs(t, err, tt.want, tt.name)
	}
}

// Read keeps to its bounds: the recipients and addresses past them are
// left out, and parts past MaxParts are not read.
func TestReadBounds(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n")
	b.WriteString("--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n")
	for range 3 * report.MaxRecipients {
		b.WriteString("Final-Recipient: rfc822; a@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n")
	}
	b.WriteString("--b\r\nContent-Type: text/rfc822-headers\r\n\r\nTo: a@x.test, b@x.test, c@x.test, d@x.test, e@x.test, f@x.test\r\n\r\n--b--\r\n")
	rep, err := report.Read(strings.NewReader(b.String()))
	require.NoError(t, err)
	assert.Len(t, rep.Recipients, report.MaxRecipients)
	assert.Len(t, rep.Original.To, report.MaxAddresses)

	b.Reset()
	b.WriteString("Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n")
	for range report.MaxParts {
		b.WriteString("--b\r\nContent-Type: text/plain\r\n\r\nfiller\r\n")
	}
	b.WriteString("--b\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; a@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n")
	_, err = report.Read(strings.NewReader(b.String()))
	assert.ErrorIs(t, err, report.ErrMalformed, "the report part past MaxParts is not read")
}

func FuzzRead(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.eml"))
	require.NoError(f, err)
	for _, name := range files {
		b, err := os.ReadFile(name) //nolint:gosec // G304: the seed corpus, testdata's files
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, err := report.Read(bytes.NewReader(b))
		if err != nil {
			return
		}
		assert.LessOrEqual(t, len(rep.Recipients), report.MaxRecipients)
		assert.LessOrEqual(t, len(rep.Original.To), report.MaxAddresses)
		assert.LessOrEqual(t, len(rep.Feedback.RcptTo), report.MaxAddresses)
	})
}
