package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/logtest"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/tasks"
)

// The worker mails with APP_NAME, MAIL_REPLY_TO, MAIL_LINK_URL and a
// MAIL_TEMPLATES_DIR whose en HTML template replaces the embedded one.
func TestWorkerMailsBrandedTemplates(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	srv := smtptest.Start(t)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "en.html.tmpl"),
		[]byte(`<p>{{.AppName}} custom HTML: {{.Code}} <a href="{{.Link}}">verify</a></p>`), 0o600))

	cfg := Config{
		Common: platform.Common{
			RedisMode: "single", RedisURL: platform.Secret(rs.URL()), LogLevel: platform.LogLevel(slog.LevelDebug), KeyPrefix: "code_",
			TTL: 10 * time.Minute, ShutdownTimeout: 5 * time.Second, QueueShards: 1,
		},
		AdminAddr: "127.0.0.1:0", Concurrency: 2, MaxConns: 2, Server: smtpServer(t, fmt.Sprintf("smtp://%s?tls=none&timeout=5s", net.JoinHostPort(srv.Host(), strconv.Itoa(srv.Port())))),
		From: "ACME <no-reply@acme.test>", ReplyTo: "support@acme.test",
		Templates: Templates{AppName: "ACME", Dir: dir, LinkURL: "https://app.acme.test/verify?email={email}&code={code}"},
	}
	require.NoError(t, cfg.Resolve())
	logger, logs := logtest.New(t)
	app, err := NewApp(cfg, logger, nil)
	require.NoError(t, err)
	require.NoError(t, app.Open(context.Background()))
	t.Cleanup(func() { assert.NoError(t, app.Close(closeCtx(t, app))) })

	ctx := context.Background()
	client := asynq.NewClientFromRedisClient(rdb)
	send := func(email, locale, code string) smtptest.Message {
		t.Helper()
		srv.ClearMessages()
		require.NoError(t, rdb.Set(ctx, "code_"+email, code, 10*time.Minute).Err())
		task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{
			Email: email, Locale: locale, RequestedAt: time.Now(), ExpiresAt: time.Now().Add(10 * time.Minute),
		})
		require.NoError(t, err)
		_, err = client.EnqueueContext(ctx, task)
		require.NoError(t, err)
		msgs := srv.WaitMessages(t, 1, 10*time.Second)
		require.Len(t, msgs, 1)
		return msgs[0]
	}

	en := send("ann@example.com", "en", "424242")
	assert.Equal(t, "Your ACME verification code", en.Subject)
	assert.Equal(t, `<p>ACME custom HTML: 424242 <a href="https://app.acme.test/verify?email=ann%40example.com&amp;code=424242">verify</a></p>`,
		en.HTML, "the directory's en HTML template")
	assert.Contains(t, en.Text, "Your ACME verification code is 424242.")
	assert.Contains(t, en.Text, "https://app.acme.test/verify?email=ann%40example.com&code=424242")
	assert.Equal(t, "support@acme.test", en.Header.Get("Reply-To"))

	zh := send("bo@example.com", "", "515151")
	assert.Equal(t, "ACME 验证码", zh.Subject)
	assert.Contains(t, zh.Text, "您的 ACME 验证码为 515151，请在 10 分钟内完成验证。")
	assert.Contains(t, zh.HTML, "您的 ACME 验证码为 <strong")
	assert.Contains(t, zh.HTML, `href="https://app.acme.test/verify?email=bo%40example.com&amp;code=515151"`)

	for _, secret := range []string{"424242", "515151", "app.acme.test"} {
		assert.NotContains(t, logs.String(), secret, "neither a code nor a link is logged")
	}
}

// A MAIL_TEMPLATES_DIR with a template that lacks the code stops the worker
// at start: exit status 1 and a message naming the file.
func TestRunStopsOnTemplateWithoutCode(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "en.txt.tmpl")
	require.NoError(t, os.WriteFile(bad, []byte("Your code expires in {{.Minutes}} minutes.\n"), 0o600))
	t.Setenv("MAIL_TEMPLATES_DIR", dir)
	var stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	assert.Equal(t, 1, platform.Run(ctx, binary, nil, &stderr))
	assert.Contains(t, stderr.String(), "MAIL_TEMPLATES_DIR: "+bad+": the text does not show the code")
	t.Log(stderr.String())

	// The same directory with the code in the text starts as far as the
	// configuration goes: -healthcheck gets past loading it and fails only
	// on the worker it asks for, which is not running.
	require.NoError(t, os.WriteFile(bad, []byte("Your code is {{.Code}}.\n"), 0o600))
	t.Setenv("ADMIN_ADDR", "127.0.0.1:1")
	stderr.Reset()
	assert.Equal(t, 1, platform.Run(ctx, binary, []string{"-healthcheck"}, &stderr))
	assert.NotContains(t, stderr.String(), "MAIL_TEMPLATES_DIR")
}
