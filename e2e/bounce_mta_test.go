//go:build mta

package e2e

import (
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/mtatest"
	"github.com/verifyq/verifyq/internal/smtptest"
)

// fixedAddr returns a free loopback address whose port is below the
// system's ephemeral range (ip_local_port_range), for a port that must be
// known before the process that binds it starts.
func fixedAddr(t *testing.T) string {
	t.Helper()
	low := 32768 // Linux's default
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	const first = 10000
	require.Greater(t, low, first+1000, "the ephemeral range starts at %d, too low for a fixed port", low)
	for range 100 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(first+rand.IntN(low-first))) //nolint:gosec // G404: a test port, no secret
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			return addr
		}
	}
	t.Fatalf("no free port from %d to %d", first, low-1)
	return ""
}

// bounceSecret is the tests' BOUNCE_SECRET.
const bounceSecret = "8f3c2a1b0e9d8c7b6a5f4e3d2c1b0a998877665544332211ffeeddccbbaa0011" //nolint:gosec // G101: the test's own secret

// Beyond "sent": Postfix accepts each mail (250), its next hop refuses it,
// and Postfix's own DSN to the VERP return path reaches the worker's bounce
// intake through Postfix's transport map. The status API says bounced,
// with the DSN's status code and a masked diagnostic; the address is
// suppressed for a 5.1.1 and not for a policy (5.7.1) or content (5.6.0)
// refusal. A forged DSN sent straight to the intake changes nothing and is
// counted.
func TestMTABounces(t *testing.T) {
	// Postfix's transport map names the intake's port before the worker
	// binds it, so start cannot choose it again: a port below the
	// ephemeral range, which no other test's port and no outgoing
	// connection takes.
	intake := fixedAddr(t)
	_, intakePort, err := net.SplitHostPort(intake)
	require.NoError(t, err)
	hop := func(f smtptest.Fault) string {
		srv := smtptest.Start(t)
		srv.SetFault(f)
		return "smtp:[127.0.0.1]:" + strconv.Itoa(srv.Port())
	}
	p := mtatest.Start(t, mtatest.Options{Transports: map[string]string{
		"bounce.test":  "smtp:[127.0.0.1]:" + intakePort,
		"unknown.test": hop(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, EnhancedCode: [3]int{5, 1, 1}, Message: "User unknown"}),
		"policy.test":  hop(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 554, EnhancedCode: [3]int{5, 7, 1}, Message: "Client host blocked"}),
		"content.test": hop(smtptest.Fault{Stage: smtptest.StageData, Code: 554, EnhancedCode: [3]int{5, 6, 0}, Message: "Message content rejected"}),
	}})
	s := startOnPostfix(t, map[string]string{
		"SMTP_URL": relayURL(p, ""), "MAIL_RETURN_PATH": "bounces@bounce.test", "BOUNCE_SECRET": bounceSecret, "BOUNCE_ADDR": intake,
	})

	tests := []struct {
		email, dsn, diagnostic string
		suppressed             bool
	}{
		{"nobody@unknown.test", "5.1.1", "User unknown", true},
		{"erin@policy.test", "5.7.1", "Client host blocked", false},
		{"frank@content.test", "5.6.0", "Message content rejected", false},
	}
	for _, tt := range tests {
		start := time.Now()
		status, body := s.post(t, "/v1/codes", map[string]string{"email": tt.email})
		require.Equal(t, http.StatusAccepted, status, body)
		st := s.waitState(t, tt.email, "bounced", "")
		t.Logf("%s: request to bounced in %s", tt.email, time.Since(start).Round(time.Millisecond))
		assert.Equal(t, tt.dsn, st["dsn_status"], tt.email)
		assert.Contains(t, st["diagnostic"], tt.diagnostic, tt.email)
		assert.NotContains(t, st["diagnostic"], tt.email, "masked")
		assert.NotEmpty(t, st["sent_at"], "%s: Postfix accepted it first", tt.email)
	}
	// Postfix took each mail, bounced it itself, and delivered its DSN to
	// the intake, which took it.
	for _, tt := range tests {
		p.WaitLog(t, "dsn="+tt.dsn+", status=bounced", 5*time.Second)
	}
	assert.NotEmpty(t, p.WaitLog(t, "relay=127.0.0.1[127.0.0.1]:"+intakePort, 5*time.Second))

	list := s.suppressed(t)
	require.Len(t, list, 1, "only the unknown user")
	entry := list[0].(map[string]any)
	assert.Equal(t, "bounced", entry["reason"])
	assert.Equal(t, "5.1.1", entry["enhanced_code"])
	assert.Equal(t, "n***@unknown.test", entry["address"])
	status, _ := s.post(t, "/v1/codes", map[string]string{"email": "nobody@unknown.test"})
	assert.Equal(t, http.StatusUnprocessableEntity, status, "suppressed")
	status, _ = s.post(t, "/v1/codes", map[string]string{"email": "erin@policy.test"})
	assert.Equal(t, http.StatusAccepted, status, "a policy refusal suppresses nobody")
	s.waitState(t, "erin@policy.test", "bounced", "")
	// Counted right after the status is written.
	assert.Eventually(t, func() bool { return s.workerMetric(t, `verifyq_bounces_total{result="bounced"}`) == 4 },
		5*time.Second, 50*time.Millisecond)

	// A forged DSN: Postfix's own notification for erin, its token changed.
	b, err := os.ReadFile("../bounce/report/testdata/postfix-policy.eml")
	require.NoError(t, err)
	forged := "bounces+" + strings.Repeat("a", 32) + "@bounce.test"
	dsn := strings.ReplaceAll(strings.ReplaceAll(string(b), "bounces+TOKEN@bounce.test", forged), "\n", "\r\n")
	before := s.statusOf(t, "frank@content.test")
	c, err := smtp.Dial(intake)
	require.NoError(t, err)
	require.NoError(t, c.SendMail("", []string{forged}, strings.NewReader(dsn)), "taken and dropped: never an error an MTA retries")
	require.NoError(t, c.Quit())
	assert.Equal(t, 2.0, s.workerMetric(t, `verifyq_bounces_total{result="forged"}`), "one per recipient of the DSN")
	after := s.statusOf(t, "frank@content.test")
	for _, k := range []string{"state", "dsn_status", "diagnostic", "sent_at"} {
		assert.Equal(t, before[k], after[k], k)
	}
	assert.Len(t, s.suppressed(t), 1)
	assert.NotContains(t, s.worker.logs.String(), "nobody@unknown.test", "addresses only masked")
	cleanSessions(t, p)
}
