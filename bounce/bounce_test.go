package bounce_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/bounce"
	"github.com/verifyq/verifyq/bounce/report"
	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/logtest"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/internal/servicetest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/returnpath"
)

// TestMain closes the deployments redistest.Shared pooled.
func TestMain(m *testing.M) { os.Exit(redistest.Run(m)) }

var (
	secret      = bytes.Repeat([]byte("0123456789abcdef"), 2)
	otherSecret = bytes.Repeat([]byte("an-other-secret!"), 2)
	identity    = mail.Identity{TagSeparators: mail.DefaultTagSeparators}
)

// counts is the Observer of the tests.
type counts struct {
	mu sync.Mutex
	n  map[bounce.Result]int
}

func (c *counts) BounceHandled(r bounce.Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[bounce.Result]int{}
	}
	c.n[r]++
}

func (c *counts) get() map[bounce.Result]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[bounce.Result]int{}
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// env is an intake on a real Redis, with the code store and records of
// the sends it gets reports about.
type env struct {
	parts  servicetest.Parts
	sup    *delivery.Suppressions
	path   *returnpath.Path
	intake *bounce.Intake
	counts *counts
	logs   *logtest.Buffer
	now    time.Time
}

func newEnv(t *testing.T, records bounce.Records) *env {
	t.Helper()
	rdb := redistest.Shared(t).UniversalClient(t)
	e := &env{
		parts:  servicetest.NewParts(t, rdb, codes.Config{}, limits.Config{Identity: identity}),
		sup:    delivery.NewSuppressions(rdb, identity),
		counts: &counts{},
		now:    time.Now(),
	}
	var err error
	e.path, err = returnpath.New("bounces@bounce.test", secret)
	require.NoError(t, err)
	if records == nil {
		records = e.parts.Records
	}
	logger, logs := logtest.New(t)
	e.logs = logs
	e.intake, err = bounce.New(bounce.Config{
		Path: e.path, Purposes: []string{"login", "register"},
		Records: records, Suppressor: e.sup, SuppressFor: time.Hour,
		Observer: e.counts, Logger: logger, Now: func() time.Time { return e.now },
	})
	require.NoError(t, err)
	return e
}

// send makes a code for id and sends it as task: the status says sent.
// It returns the return path of the mail.
func (e *env) send(t *testing.T, id codes.ID, task string) string {
	t.Helper()
	ctx := context.Background()
	_, err := e.parts.Limiter.Admit(ctx, limits.Request{Email: id.Email, Purpose: id.Purpose})
	require.NoError(t, err)
	_, err = e.parts.Records.Begin(ctx, id, delivery.Task{ID: task, Queue: "bounce-test"}, codes.DefaultTTL)
	require.NoError(t, err)
	require.NoError(t, e.parts.Records.Sent(ctx, id, task, delivery.Acceptance{At: e.now}))
	return e.path.For(returnpath.Send{Task: task, Purpose: id.Purpose, Email: id.Email}, e.now)
}

func (e *env) status(t *testing.T, id codes.ID) delivery.Status {
	t.Helper()
	st, err := e.parts.Records.Status(context.Background(), id, e.now)
	require.NoError(t, err)
	return st
}

func (e *env) suppressed(t *testing.T) []delivery.Suppression {
	t.Helper()
	list, _, err := e.sup.List(context.Background(), delivery.Filter{}, 100)
	require.NoError(t, err)
	return list
}

// sample is report/testdata/name with CRLF line ends, its return paths
// rp and its recipient's address replaced by to.
func sample(t *testing.T, name, rp string, replace ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("report", "testdata", name)) //nolint:gosec // G304: the test names the file
	require.NoError(t, err)
	s := strings.ReplaceAll(string(b), "bounces+TOKEN@bounce.test", rp)
	s = strings.NewReplacer(replace...).Replace(s)
	return []byte(strings.ReplaceAll(s, "\n", "\r\n"))
}

func (e *env) handle(t *testing.T, rcpt string, msg []byte) []bounce.Result {
	t.Helper()
	res, err := e.intake.Handle(context.Background(), []string{rcpt}, bytes.NewReader(msg))
	require.NoError(t, err)
	return res
}

// A DSN that says a mail failed marks its send's status bounced, with the
// status code and the masked diagnostic, and suppresses that exact address
// when the recipient failed for good (5.1.x, 5.4.4); a policy or content
// refusal (5.7.x, 5.6.x) suppresses nobody; a delayed DSN changes
// nothing.
func TestBounces(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, file string
		to         string   // the address the mail went to
		replace    []string // in the sample
		want       []bounce.Result
		dsn, diag  string
		suppressed bool
		reply      int // in the suppression entry
	}{
		{
			name: "user unknown", file: "postfix-user-unknown.eml", to: "nobody@dest.test",
			want: []bounce.Result{bounce.ResultBounced}, dsn: "5.1.1", suppressed: true, reply: 550,
			diag: "<n***@dest.test>: Recipient address rejected: User unknown in virtual mailbox table",
		},
		{
			name: "no such domain", file: "postfix-no-domain.eml", to: "alice@no-such-domain.test",
			want: []bounce.Result{bounce.ResultBounced}, dsn: "5.4.4", suppressed: true,
			diag: "Host or domain name not found. Name service error for name=no-such-domain.test type=A: Host not found",
		},
		{
			name: "the original recipient as sent, the final one folded", file: "postfix-gmail-multiline.eml", to: "Dave.Gone@webmail.test",
			want: []bounce.Result{bounce.ResultBounced}, dsn: "5.1.1", suppressed: true, reply: 550,
		},
		{
			// The token names erin's mail: frank's verdict in the same
			// DSN cannot be made to count.
			name: "policy, and another recipient", file: "postfix-policy.eml", to: "erin@strict.test",
			want: []bounce.Result{bounce.ResultBounced, bounce.ResultForged}, dsn: "5.7.1",
			diag: "Service unavailable; Client host [192.0.2.10] blocked using zen.spamhaus.test; e***@strict.test",
		},
		{
			name: "content", file: "postfix-policy.eml", to: "frank@strict.test",
			want: []bounce.Result{bounce.ResultForged, bounce.ResultBounced}, dsn: "5.6.0", diag: "Message content rejected",
		},
		{
			name: "delayed", file: "postfix-delayed.eml", to: "carol@slow.test",
			want: []bounce.Result{bounce.ResultDelayed},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, nil)
			id := codes.ID{Email: tt.to, Purpose: "login"}
			rp := e.send(t, id, "task-"+tt.name)
			assert.Equal(t, tt.want, e.handle(t, rp, sample(t, tt.file, rp, tt.replace...)))

			st := e.status(t, id)
			if tt.dsn == "" {
				assert.Equal(t, delivery.StateSent, st.State)
			} else {
				assert.Equal(t, delivery.StateBounced, st.State)
				assert.Equal(t, tt.dsn, st.DSN)
				if tt.diag != "" {
					assert.Equal(t, tt.diag, st.Diagnostic)
				}
			}
			list := e.suppressed(t)
			if !tt.suppressed {
				assert.Empty(t, list)
			} else if assert.Len(t, list, 1) {
				assert.Equal(t, delivery.ReasonBounced, list[0].Reason)
				assert.Equal(t, tt.dsn, list[0].Enhanced)
				assert.Equal(t, tt.reply, list[0].Reply, "the reply the diagnostic quotes")
				assert.Equal(t, mail.MaskAddress(tt.to), list[0].Masked)
				assert.Equal(t, delivery.MailboxID(identity.Mailbox(tt.to))+":"+delivery.AddressID(tt.to), list[0].ID, "that exact address")
			}
			assert.NotContains(t, e.logs.String(), tt.to, "addresses are logged masked")
		})
	}
}

// A complaint comes to the bare return path (a provider's feedback loop
// is registered for one address) with the token in Original-Mail-From and
// in the original's Return-Path: its send's status says complained, and
// the address is suppressed.
func TestComplaint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	id := codes.ID{Email: "grace@webmail.test"}
	rp := e.send(t, id, "task-1")
	assert.Equal(t, []bounce.Result{bounce.ResultComplained}, e.handle(t, "bounces@bounce.test", sample(t, "arf-yahoo.eml", rp)))
	assert.Equal(t, delivery.StateComplained, e.status(t, id).State)
	list := e.suppressed(t)
	require.Len(t, list, 1)
	assert.Equal(t, delivery.ReasonComplaint, list[0].Reason)

	// A provider that redacts the recipient leaves nothing to check the
	// token with: counted, nothing changes.
	id2 := codes.ID{Email: "ivan@provider.test"}
	rp2 := e.send(t, id2, "task-2")
	assert.Equal(t, []bounce.Result{bounce.ResultForged}, e.handle(t, "bounces@bounce.test", sample(t, "arf-redacted.eml", rp2)))
	assert.Equal(t, delivery.StateSent, e.status(t, id2).State)
	assert.Len(t, e.suppressed(t), 1)
}

// Forged reports change nothing and are counted: a token signed under
// another secret, a changed one, and a recipient's own token in a report
// that names another address.
func TestForgedReportsChangeNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	victim := codes.ID{Email: "victim@dest.test"}
	e.send(t, victim, "task-victim")
	attacker := codes.ID{Email: "mallory@dest.test"}
	own := e.send(t, attacker, "task-mallory")

	otherPath, err := returnpath.New("bounces@bounce.test", otherSecret)
	require.NoError(t, err)
	foreign := otherPath.For(returnpath.Send{Task: "task-victim", Email: victim.Email}, e.now)
	tok, _ := e.path.TokenOf(e.path.For(returnpath.Send{Task: "task-victim", Email: victim.Email}, e.now))
	swap := byte('a')
	if tok[10] == swap {
		swap = 'b'
	}
	changed := "bounces+" + tok[:10] + string(swap) + tok[11:] + "@bounce.test"
	for _, rp := range []string{foreign, changed, own} {
		res := e.handle(t, rp, sample(t, "postfix-user-unknown.eml", rp, "nobody@dest.test", victim.Email))
		assert.Equal(t, []bounce.Result{bounce.ResultForged}, res, rp)
	}
	assert.Equal(t, delivery.StateSent, e.status(t, victim).State)
	assert.Equal(t, delivery.StateSent, e.status(t, attacker).State)
	assert.Empty(t, e.suppressed(t))
	assert.Equal(t, map[bounce.Result]int{bounce.ResultForged: 3}, e.counts.get())
}

// What cannot be matched is counted and dropped: an expired token, a
// report without a token, a message that is no report.
func TestUnmatched(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	id := codes.ID{Email: "nobody@dest.test"}
	rp := e.send(t, id, "task-1")
	msg := sample(t, "postfix-user-unknown.eml", rp)

	assert.Equal(t, []bounce.Result{bounce.ResultUnmatched}, e.handle(t, "bounces@bounce.test",
		sample(t, "postfix-user-unknown.eml", "bounces@bounce.test")), "no token anywhere")
	assert.Equal(t, []bounce.Result{bounce.ResultMalformed}, e.handle(t, rp, sample(t, "autoreply.eml", rp)))
	assert.Equal(t, []bounce.Result{bounce.ResultMalformed}, e.handle(t, rp, sample(t, "no-boundary.eml", rp)))

	e.now = e.now.Add(returnpath.Window + 2*time.Hour)
	assert.Equal(t, []bounce.Result{bounce.ResultExpired}, e.handle(t, rp, msg))
	assert.Empty(t, e.suppressed(t))
	assert.Equal(t, map[bounce.Result]int{bounce.ResultUnmatched: 1, bounce.ResultMalformed: 2, bounce.ResultExpired: 1}, e.counts.get())
}

// A bounce of a send whose status a later send took over leaves the status
// as it is (stale), and still suppresses the address: the recipient
// failed for good whichever send found out.
func TestStaleBounce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	id := codes.ID{Email: "nobody@dest.test"}
	first := e.send(t, id, "task-1")
	e.send(t, id, "task-2")
	assert.Equal(t, []bounce.Result{bounce.ResultStale}, e.handle(t, first, sample(t, "postfix-user-unknown.eml", first)))
	assert.Equal(t, delivery.StateSent, e.status(t, id).State)
	assert.Len(t, e.suppressed(t), 1)
}

// A token of one purpose is matched under that purpose's status only; the
// domain's case as the DSN has it does not matter.
func TestPurposeAndSpelling(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	login := codes.ID{Email: "nobody@Dest.Test", Purpose: "login"}
	register := codes.ID{Email: "nobody@Dest.Test", Purpose: "register"}
	rp := e.send(t, login, "task-login")
	e.send(t, register, "task-register")
	// Postfix folds the domain in Final-Recipient; the original's To keeps
	// the address as sent.
	msg := sample(t, "postfix-user-unknown.eml", rp, "To: nobody@dest.test", "To: nobody@Dest.Test")
	assert.Equal(t, []bounce.Result{bounce.ResultBounced}, e.handle(t, rp, msg))
	assert.Equal(t, delivery.StateBounced, e.status(t, login).State)
	assert.Equal(t, delivery.StateSent, e.status(t, register).State)
}

// failingRecords fails every record: Redis away.
type failingRecords struct{}

func (failingRecords) ReportedTask(context.Context, codes.ID, string, delivery.Report) (string, error) {
	return "", context.DeadlineExceeded
}

func TestNewRefuses(t *testing.T) {
	t.Parallel()
	bare, err := returnpath.New("bounces@bounce.test")
	require.NoError(t, err)
	logger, _ := logtest.New(t)
	for _, cfg := range []bounce.Config{
		{Path: bare, Records: failingRecords{}, Logger: logger},
		{Records: failingRecords{}, Logger: logger},
		{Path: bare, Logger: logger},
	} {
		_, err := bounce.New(cfg)
		assert.Error(t, err)
	}
}

// noRecords records nothing: every report it sees is forged.
type noRecords struct{}

func (noRecords) ReportedTask(context.Context, codes.ID, string, delivery.Report) (string, error) {
	return "", nil
}

// A report costs at most so many HMACs whatever it holds: a DSN of many
// recipient blocks, each naming other addresses, sent to many tokens, is
// tried as far as one recipient's worth of pairs, not their product. The
// work is counted in allocations (every HMAC makes its own), not time;
// so the test is not parallel (testing.AllocsPerRun).
func TestReportWorkIsBounded(t *testing.T) {
	path, err := returnpath.New("bounces@bounce.test", secret, otherSecret)
	require.NoError(t, err)
	purposes := make([]string, codes.MaxPurposes)
	for i := range purposes {
		purposes[i] = fmt.Sprintf("p%d", i)
	}
	in, err := bounce.New(bounce.Config{Path: path, Purposes: purposes, Records: noRecords{}, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	var rcpts []string
	for i := range bounce.MaxRecipients + 1 {
		rcpts = append(rcpts, path.For(returnpath.Send{Task: fmt.Sprint("task-", i), Email: "x@dest.test"}, time.Now()))
	}
	dsn := func(recipients int) []byte {
		var b strings.Builder
		b.WriteString("Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n" +
			"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.test\r\n\r\n")
		for i := range recipients {
			fmt.Fprintf(&b, "Final-Recipient: rfc822; f%d@dest.test\r\nOriginal-Recipient: rfc822; o%d@dest.test\r\n"+
				"Action: failed\r\nStatus: 5.1.1\r\n\r\n", i, i)
		}
		b.WriteString("--B\r\nContent-Type: text/rfc822-headers\r\n\r\nReturn-Path: <" + rcpts[len(rcpts)-1] + ">\r\n" +
			"To: a@dest.test, b@dest.test\r\n\r\n--B--\r\n")
		return []byte(b.String())
	}
	cost := func(recipients int) float64 {
		msg := dsn(recipients)
		return testing.AllocsPerRun(3, func() {
			res, err := in.Handle(context.Background(), rcpts[:bounce.MaxRecipients], bytes.NewReader(msg))
			require.NoError(t, err)
			require.Len(t, res, recipients)
		})
	}
	one, many := cost(1), cost(report.MaxRecipients)
	assert.Less(t, many, 2*one, "a report of %d recipients costs %.0f allocations, one of a single recipient %.0f", report.MaxRecipients, many, one)
}
