// Package configtest checks a binary's configuration against the
// configuration reference, docs/CONFIGURATION.md: its table of variables
// must list every variable of the binary with its default, and nothing the
// binary does not read.
package configtest

import (
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/verifyq/verifyq/internal/doctable"
	"github.com/verifyq/verifyq/internal/platform"
)

// MaxVariables bounds the variables of both binaries together: 36 once
// SMTP took one URL, and the relay's connection cap and EHLO name, which
// are not the URL's (they are about verifyq, not about the relay); the
// share of the public listeners one source may hold, which is a number of
// its own (its default follows MAX_CONNECTIONS); the caller check's four,
// each its own decision: who may call (API_KEYS_FILE), the explicit
// consent to serve strangers without a key (ALLOW_UNAUTHENTICATED), the
// networks of the old keyless gateway (LEGACY_CALLERS) and each caller's
// status reads (STATUS_READS_PER_MINUTE); MAILBOX_GAP, a limit of its own
// across purposes (the cooldown is per purpose); and MAILBOX_RULES, the
// providers' table of the mailbox identity, which no other variable's
// value reads naturally as; then TLS's four: the
// certificate and its key (two files, as every TLS server takes them),
// the client CA of mTLS, and the plaintext listener the old gateway needs
// beside TLS ones (LEGACY_GRPC_ADDR), an address no other variable holds;
// then the bounces' three: the return path (MAIL_RETURN_PATH), an address
// apart from MAIL_FROM that no other variable holds; its secret
// (BOUNCE_SECRET), a secret of its own that a rotation of CODE_SECRET must
// not touch (its tokens live 7 days, codes minutes) and that a worker
// without sealed codes needs all the same; and the intake's listener
// (BOUNCE_ADDR), an address no other variable holds, its bounds fixed
// (bounce.MaxMessageBytes and the others), not variables;
// and SMTP_FALLBACK_URL, a second relay: another server with its own
// credentials, TLS and timeout, which SMTP_URL cannot hold as one URL,
// while the EHLO name and the connection cap, about verifyq, serve both;
// then three for sends that survive a failover: how many replicas a send
// waits for (REDIS_MIN_REPLICAS, off by default, a trade of latency and
// availability only the operator can make) and for how long
// (REDIS_MIN_REPLICAS_TIMEOUT, which follows the replicas' distance, not
// any other setting), and the reconciler's period (RECONCILE_INTERVAL,
// which tests and operators shorten or turn off); then DEFAULT_LOCALE, the
// language of the mails of callers that name none: an operator's choice
// about its users (zh-CN for a service in China, en elsewhere) that no
// other variable implies, the locales themselves being fixed by the
// embedded templates; and the events' two: where they go (WEBHOOK_URLS, endpoints no other variable holds, empty
// for off) and the secret that signs them (WEBHOOK_SECRET, a secret the
// receivers hold, rotated on their schedule, not CODE_SECRET's or
// BOUNCE_SECRET's), their queue, retries, timeouts and concurrency fixed
// (package events), not variables.
const MaxVariables = 59

// Row is one row of the reference's table of variables.
type Row struct {
	Name, Binary, Default string
}

// row matches a row of the table: | `NAME` | binary | `default` or nothing | meaning |.
var row = regexp.MustCompile("^\\| `([A-Z0-9_]+)` \\| (both|enqueuer|worker) \\| *(?:`([^`]*)`)? *\\| .+ \\|$")

// Table reads the rows of the table under "## Variables" in the reference
// at path. A line of that table that is not a well-formed row fails t.
func Table(t *testing.T, path string) []Row {
	t.Helper()
	var rows []Row
	for _, m := range doctable.Rows(t, path, "Variables", row) {
		rows = append(rows, Row{Name: m[1], Binary: m[2], Default: m[3]})
	}
	return rows
}

// Check compares the variables of cfg, binary's configuration struct, with
// the reference at path both ways: each variable has a row for binary (or
// "both") with the default of its tag, and each row for binary or "both"
// is a variable of cfg. It also checks that the reference names each
// variable once per binary and at most MaxVariables in all.
func Check(t *testing.T, path, binary string, cfg any) {
	t.Helper()
	rows := Table(t, path)
	documented := map[string]Row{}
	names := map[string]bool{}
	for _, r := range rows {
		names[r.Name] = true
		if r.Binary != binary && r.Binary != "both" {
			continue
		}
		_, twice := documented[r.Name]
		assert.False(t, twice, "%s is documented twice for the %s", r.Name, binary)
		documented[r.Name] = r
	}
	assert.LessOrEqual(t, len(names), MaxVariables, "variables in all")

	vars := platform.Variables(cfg)
	read := map[string]bool{}
	for _, v := range vars {
		read[v.Name] = true
		r, ok := documented[v.Name]
		if !assert.True(t, ok, "%s of the %s is not in %s", v.Name, binary, path) {
			continue
		}
		assert.Equal(t, v.Default, r.Default, "the default of %s", v.Name)
	}
	for name := range documented {
		assert.True(t, read[name], "%s is documented for the %s, which does not read it", name, binary)
	}
}
