package tasks_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/tasks"
)

// A task of a purpose mails that purpose's code, with that purpose's
// template and lifetime; the default purpose's code is another.
func TestSendCodeHandlerPurpose(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, "reset_password"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "reset_password", "en.subject.tmpl"), []byte("Reset your password"), 0o600))
	tpl, err := mail.LoadTemplates(mail.TemplateConfig{Dir: dir})
	require.NoError(t, err)
	h := e.handler(t, func(c *tasks.HandlerConfig) {
		c.Author, c.PurposeTTL = newAuthor(t, tpl), map[string]time.Duration{"reset_password": 15 * time.Minute}
	})

	def, err := e.store.GetOrCreate(ctx, codes.ID{Email: "p@example.com"})
	require.NoError(t, err)
	reset, err := e.store.GetOrCreate(ctx, codes.ID{Email: "p@example.com", Purpose: "reset_password"})
	require.NoError(t, err)
	require.NotEqual(t, def.Code, reset.Code)
	// No expiry: the mail states the purpose's own lifetime.
	require.NoError(t, e.rdb.Persist(ctx, "code_reset_password:p@example.com").Err())

	task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{Email: "p@example.com", Purpose: "reset_password", Locale: "en",
		RequestedAt: time.Now(), ExpiresAt: time.Now().Add(10 * time.Minute)})
	require.NoError(t, err)
	require.NoError(t, h.ProcessTask(ctx, task))
	msgs := e.smtp.WaitMessages(t, 1, 5*time.Second)
	assert.Equal(t, "Reset your password", msgs[0].Subject)
	assert.Contains(t, msgs[0].Text, reset.Code)
	assert.NotContains(t, msgs[0].Text, def.Code)
	assert.Contains(t, msgs[0].Text, "15 minutes")

	st, err := e.records.Status(ctx, codes.ID{Purpose: "reset_password", Email: "p@example.com"}, time.Now())
	require.NoError(t, err)
	assert.Equal(t, delivery.StateSent, st.State)
	st, err = e.records.Status(ctx, codes.ID{Email: "p@example.com"}, time.Now())
	require.NoError(t, err)
	assert.Equal(t, delivery.StateQueued, st.State, "the default purpose's mail is another task's")
}

func TestPayloadPurposeIsChecked(t *testing.T) {
	t.Parallel()
	task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{Email: "p@example.com", Purpose: "../x", ExpiresAt: time.Now().Add(time.Minute)})
	require.NoError(t, err)
	_, err = tasks.ParseSendCodePayload(task)
	assert.ErrorContains(t, err, "purpose")
}
