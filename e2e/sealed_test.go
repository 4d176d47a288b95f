package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"maps"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/tasks"
)

var tenDigits = regexp.MustCompile(`\b\d{10}\b`)

// With CODE_SECRET set (codes sealed) no code is in Redis (code keys, tasks, archived
// tasks after a 550): the mail carries it, verify works, wrong codes count
// attempts, and after a restart with CODE_SECRET=new,old the code still
// verifies.
func TestSealedCodesEndToEnd(t *testing.T) {
	t.Parallel()
	oldSecret := "5a5b5c5d" + strings.Repeat("5a", 28)
	newSecret := "c3c4c5c6" + strings.Repeat("c3", 28)
	s := startStack(t, map[string]string{
		"CODE_SECRET": oldSecret, "CODE_LENGTH": longCodes, "RESEND_COOLDOWN": "0", "MAILBOX_GAP": "0",
	})
	ctx := context.Background()
	raw, err := hex.DecodeString(oldSecret)
	require.NoError(t, err)
	seal, err := codes.NewSeal(raw, nil) // the test's own copy, to open what the tasks carry
	require.NoError(t, err)

	// A 550: the task is archived, its payload in Redis.
	s.smtp.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, EnhancedCode: [3]int{5, 1, 1}})
	status, body := s.post(t, "/v1/codes", map[string]string{"email": "dead@example.com"})
	require.Equal(t, http.StatusAccepted, status, body)
	insp := s.inspector(t)
	var archived []byte
	require.Eventually(t, func() bool {
		infos, err := insp.ListArchivedTasks(tasks.Queue)
		if err != nil || len(infos) == 0 {
			return false
		}
		archived = infos[0].Payload
		return true
	}, 10*time.Second, 50*time.Millisecond)
	var p tasks.SendCodePayload
	require.NoError(t, json.Unmarshal(archived, &p))
	require.NotEmpty(t, p.SealedCode)
	deadCode, err := seal.Decrypt(codes.ID{Email: "dead@example.com"}, p.SealedCode)
	require.NoError(t, err)
	s.smtp.ClearFault()

	// A code mailed for a purpose.
	const email = "Sealed.User@example.com"
	status, body = s.post(t, "/v1/codes", map[string]string{"email": email, "purpose": "reset_password"})
	require.Equal(t, http.StatusAccepted, status, body)
	msgs := s.smtp.WaitMessages(t, 1, 10*time.Second)
	code := tenDigits.FindString(msgs[0].Text)
	require.NotEmpty(t, code, "the mail carries the code")

	dump := s.dumpRedis(t, true)
	assert.Contains(t, dump, "code_reset_password:"+email, "the dump holds the code key")
	assert.Contains(t, dump, "asynq:{mail}:archived", "and the archive")
	for _, c := range []string{code, deadCode} {
		assert.NotContains(t, dump, c, "no code anywhere in Redis")
	}
	assert.NotContains(t, dump, oldSecret)
	id := codes.ID{Purpose: "reset_password", Email: email}
	rdb := s.redis.UniversalClient(t)
	assert.Equal(t, seal.MAC(id, code), rdb.Get(ctx, "code_reset_password:"+email).Val(), "the code key holds the HMAC")

	// Wrong codes count attempts; another purpose does not know the code.
	status, body = s.post(t, "/v1/codes/verify", map[string]string{"email": email, "code": "0000000000", "purpose": "reset_password"})
	assert.Equal(t, http.StatusUnprocessableEntity, status, body)
	assert.Equal(t, "1", rdb.Get(ctx, "{code_reset_password:"+email+"}:attempts").Val())
	status, body = s.post(t, "/v1/codes/verify", map[string]string{"email": email, "code": code, "purpose": "register"})
	assert.Equal(t, http.StatusGone, status, body)

	// A restart with a new secret, the old one as previous.
	old := s.enqueuer
	old.stop(t)
	env := maps.Clone(s.enqEnv)
	env["CODE_SECRET"] = newSecret + "," + oldSecret
	s.startEnqueuer(t, env)
	status, body = s.post(t, "/v1/codes/verify", map[string]string{"email": email, "code": code, "purpose": "reset_password"})
	assert.Equal(t, http.StatusOK, status, body)
	status, body = s.post(t, "/v1/codes/verify", map[string]string{"email": email, "code": code, "purpose": "reset_password"})
	assert.Equal(t, http.StatusGone, status, body, "used once")

	s.enqueuer.stop(t)
	s.worker.stop(t)
	for _, pr := range []*proc{old, s.enqueuer, s.worker} {
		logs := pr.logs.String()
		for _, secret := range []string{code, deadCode, oldSecret, newSecret} {
			assert.NotContains(t, logs, secret, "no code or secret in the logs")
		}
	}
}
