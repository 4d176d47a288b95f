package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/logtest"
	"github.com/verifyq/verifyq/internal/metrics/metricstest"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/internal/smtptest"
)

// With MAIL_RETURN_PATH, BOUNCE_SECRET and BOUNCE_ADDR the worker mails
// from a VERP return path and takes the bounce that comes back to it on
// its intake: the status says bounced, the address is suppressed, the
// metric counts it.
func TestWorkerBounceIntake(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	srv := smtptest.Start(t)
	var secret platform.RotatedSecret
	require.NoError(t, secret.Decode("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"))
	cfg := Config{
		Common: platform.Common{
			RedisMode: "single", RedisURL: platform.Secret(rs.URL()), LogLevel: platform.LogLevel(slog.LevelDebug), KeyPrefix: "code_",
			TTL: 10 * time.Minute, ShutdownTimeout: 5 * time.Second, QueueShards: 1, TagSeparators: "+",
		},
		AdminAddr: "127.0.0.1:0", Concurrency: 2, MaxConns: 2,
		Server: smtpServer(t, fmt.Sprintf("smtp://%s?tls=none&timeout=5s", net.JoinHostPort(srv.Host(), strconv.Itoa(srv.Port())))),
		From:   "no-reply@verifyq.test", ReturnPathAddress: "bounces@bounce.test", BounceSecret: secret, BounceAddr: "127.0.0.1:0",
		SuppressFor: time.Hour,
	}
	require.NoError(t, cfg.Resolve())
	logger, logs := logtest.New(t)
	app, err := NewApp(cfg, logger, nil)
	require.NoError(t, err)
	require.NoError(t, app.Open(context.Background()))
	t.Cleanup(func() { assert.NoError(t, app.Close(closeCtx(t, app))) })
	require.NotEmpty(t, app.BounceAddr())

	ctx := context.Background()
	const email = "nobody@dest.test"
	queueSend(t, rdb, email)
	rp := srv.WaitMessages(t, 1, 10*time.Second)[0].From
	require.Regexp(t, `^bounces\+[a-z2-7]{32}@bounce\.test$`, rp)

	b, err := os.ReadFile("../../bounce/report/testdata/postfix-user-unknown.eml")
	require.NoError(t, err)
	dsn := strings.ReplaceAll(strings.ReplaceAll(string(b), "bounces+TOKEN@bounce.test", rp), "\n", "\r\n")
	c, err := smtp.Dial(app.BounceAddr())
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SendMail("", []string{rp}, strings.NewReader(dsn)))
	require.NoError(t, c.Quit())

	keys, err := codes.NewKeys("code_")
	require.NoError(t, err)
	st, err := delivery.NewRecords(rdb, keys, asynq.NewInspectorFromRedisClient(rdb)).Status(ctx, codes.ID{Email: email}, time.Now())
	require.NoError(t, err)
	assert.Equal(t, delivery.StateBounced, st.State)
	assert.Equal(t, "5.1.1", st.DSN)
	list, _, err := delivery.NewSuppressions(rdb, cfg.Identity()).List(ctx, delivery.Filter{}, 10)
	require.NoError(t, err)
	assert.Len(t, list, 1)
	v, ok := metricstest.Scrape(t, "http://"+app.AdminAddr()+"/metrics").Value("verifyq_bounces_total", map[string]string{"result": "bounced"})
	assert.True(t, ok)
	assert.Equal(t, 1.0, v)
	assert.NotContains(t, logs.String(), email, "addresses only masked")
	assert.NotContains(t, logs.String(), "00112233445566778899", "never the secret")
}
