package tasks_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/relay"
	"github.com/verifyq/verifyq/tasks"
)

type env struct {
	redis   redistest.Deployment
	rdb     redis.UniversalClient
	store   *codes.Store
	records *delivery.Records
	smtp    *smtptest.Server
	cfg     tasks.HandlerConfig // the handler's, as newEnv made it
	h       asynq.Handler       // the handler of cfg, without middleware
	logs    *bytes.Buffer
	sender  *relay.Client
}

// codeTTL is the handler's configured code lifetime, on purpose not the
// store's (codes.DefaultTTL) nor any other default.
const codeTTL = 7 * time.Minute

// newEnv returns a handler, a store and an SMTP server on a Redis of the
// test's own, of the mode VERIFYQ_TEST_REDIS_MODE names (redistest.Shared):
// the suite runs against single, sentinel and cluster.
func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOn(t, redistest.Shared(t))
}

// newEnvOn is newEnv on the deployment rs.
func newEnvOn(t *testing.T, rs redistest.Deployment) *env {
	t.Helper()
	rdb := rs.UniversalClient(t)
	store, err := codes.NewStore(rdb, codes.Config{KeyPrefix: "code_", TTL: 10 * time.Minute, Length: 6})
	require.NoError(t, err)
	smtpSrv := smtptest.Start(t)
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sender, err := relay.NewClient(relay.Config{
		Host: smtpSrv.Host(), Port: smtpSrv.Port(), TLS: relay.TLSNone, Timeout: 500 * time.Millisecond,
	}, logger)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sender.Close() })
	// The handler reads codes as the worker does: through the delivery
	// records, with CODE_TTL (here codeTTL) for a key without expiry.
	records := newRecords(t, rdb)
	e := &env{redis: rs, rdb: rdb, store: store, records: records, smtp: smtpSrv, logs: &logs, sender: sender,
		cfg: tasks.HandlerConfig{Deliveries: records, Author: newAuthor(t, nil), Mailer: sender, TTL: codeTTL, Logger: logger}}
	e.h = e.handler(t, nil)
	return e
}

// newAuthor returns the Author of the tests' mails, from
// no-reply@verifyq.test with tpl's templates (nil: the embedded ones).
func newAuthor(t *testing.T, tpl *mail.Templates) mail.Author {
	t.Helper()
	a, err := mail.NewAuthor("no-reply@verifyq.test", "", tpl)
	require.NoError(t, err)
	return a
}

// handler returns the send-code handler of e.cfg as change changes it,
// behind mws as the worker's mux puts them.
func (e *env) handler(t *testing.T, change func(*tasks.HandlerConfig), mws ...asynq.MiddlewareFunc) asynq.Handler {
	t.Helper()
	cfg := e.cfg
	if change != nil {
		change(&cfg)
	}
	h, err := tasks.NewSendCodeHandler(cfg)
	require.NoError(t, err)
	mux := asynq.NewServeMux()
	mux.Use(mws...)
	mux.Handle(tasks.TypeSendCode, h)
	return mux
}

// newRecords returns the delivery records as the worker makes them: from
// the key prefix alone.
func newRecords(t *testing.T, rdb redis.UniversalClient) *delivery.Records {
	t.Helper()
	keys, err := codes.NewKeys("code_")
	require.NoError(t, err)
	return delivery.NewRecords(rdb, keys, asynq.NewInspectorFromRedisClient(rdb))
}

func (e *env) task(t *testing.T, email, locale string) *asynq.Task {
	t.Helper()
	task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{
		Email: email, Locale: locale, RequestedAt: time.Now(), ExpiresAt: time.Now().Add(10 * time.Minute),
	})
	require.NoError(t, err)
	return task
}

func TestSendCodeHandlerMailsLiveCode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	issued, err := e.store.GetOrCreate(ctx, codes.ID{Email: "Someone@Example.com"})
	require.NoError(t, err)

	require.NoError(t, e.h.ProcessTask(ctx, e.task(t, "Someone@Example.com", "en")))
	msgs := e.smtp.WaitMessages(t, 1, 5*time.Second)
	assert.Equal(t, []string{"Someone@Example.com"}, msgs[0].To)
	assert.Contains(t, msgs[0].Text, issued.Code)
	assert.Contains(t, msgs[0].HTML, issued.Code)
	assert.Contains(t, msgs[0].Text, "10 minutes")
	assert.NotContains(t, e.logs.String(), issued.Code, "no code in logs")
	assert.NotContains(t, e.logs.String(), "Someone@Example.com", "no full address in logs")
}

// A key an older writer left without expiry is mailed with the configured
// lifetime, CODE_TTL, and the key is left as it is (the next send fixes it).
func TestSendCodeHandlerNoExpiryMailsConfiguredTTL(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	require.NoError(t, e.rdb.Set(ctx, "code_legacy@example.com", "424242", 0).Err())

	require.NoError(t, e.h.ProcessTask(ctx, e.task(t, "legacy@example.com", "en")))
	msgs := e.smtp.WaitMessages(t, 1, 5*time.Second)
	assert.Contains(t, msgs[0].Text, "424242")
	assert.Contains(t, msgs[0].Text, "7 minutes")
	assert.NotContains(t, msgs[0].Text, "10 minutes")
	assert.Contains(t, e.logs.String(), "code key has no expiry")
	assert.NotContains(t, e.logs.String(), "424242", "no code in logs")
	ttl, err := e.rdb.PTTL(ctx, "code_legacy@example.com").Result()
	require.NoError(t, err)
	assert.Equal(t, time.Duration(-1), ttl, "the worker leaves the code key as it is")
}

func TestSendCodeHandlerCodeGone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	require.NoError(t, e.h.ProcessTask(context.Background(), e.task(t, "gone@example.com", "")),
		"a code that expired or was used ends the task without a retry")
	assert.Zero(t, e.smtp.Count(), "nothing mailed")
}

func TestSendCodeHandlerErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		fault     smtptest.Fault
		skipRetry bool
		class     delivery.Class
	}{
		{"550 5.1.1 at RCPT is permanent", smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, EnhancedCode: [3]int{5, 1, 1}}, true, delivery.RecipientRefused},
		{"554 at data is permanent", smtptest.Fault{Stage: smtptest.StageData, Code: 554}, true, delivery.MessageRefused},
		{"530 5.7.0 at MAIL FROM is retried", smtptest.Fault{Stage: smtptest.StageMail, Code: 530, EnhancedCode: [3]int{5, 7, 0}}, false, delivery.RelayRefused},
		{"450 at RCPT is retried", smtptest.Fault{Stage: smtptest.StageRcpt, Code: 450, EnhancedCode: [3]int{4, 2, 0}}, false, delivery.RecipientDeferred},
		{"451 is retried", smtptest.Fault{Stage: smtptest.StageData, Code: 451}, false, delivery.RelayDeferred},
		{"421 is retried", smtptest.Fault{Stage: smtptest.StageMail, Code: 421}, false, delivery.RelayDeferred},
		{"a hung server times out and is retried", smtptest.Fault{Stage: smtptest.StageData, Hang: true}, false, delivery.RelayDeferred},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			ctx := context.Background()
			_, err := e.store.GetOrCreate(ctx, codes.ID{Email: "f@example.com"})
			require.NoError(t, err)
			e.smtp.SetFault(tt.fault)
			err = e.h.ProcessTask(ctx, e.task(t, "f@example.com", ""))
			require.Error(t, err)
			assert.Equal(t, tt.skipRetry, errors.Is(err, asynq.SkipRetry), "%v", err)
			assert.Contains(t, err.Error(), "send mail: "+string(tt.class)+": ", "the task's last error, as the dashboard shows it, leads with the class")
			e.smtp.ClearFault()
		})
	}
}

// The zero Author has no sender: a handler is refused it at its start,
// not its first mail.
func TestNewSendCodeHandlerRefusesTheZeroAuthor(t *testing.T) {
	t.Parallel()
	cfg := newEnv(t).cfg
	cfg.Author = mail.Author{}
	h, err := tasks.NewSendCodeHandler(cfg)
	require.ErrorContains(t, err, "mail.NewAuthor")
	assert.Nil(t, h)
}

func TestSendCodeHandlerBadPayloadIsNotRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	err := e.h.ProcessTask(context.Background(), asynq.NewTask(tasks.TypeSendCode, []byte("{")))
	assert.ErrorIs(t, err, asynq.SkipRetry)
}

func TestSendCodeHandlerRedisDownIsRetried(t *testing.T) {
	t.Parallel()
	e := newEnvOn(t, redistest.StartMode(t)) // a deployment of its own, to stop
	e.redis.Close()
	// A deadline, as asynq gives every task: a sentinel client with every
	// sentinel gone retries each of its calls for some seconds.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := e.h.ProcessTask(ctx, e.task(t, "r@example.com", ""))
	require.Error(t, err)
	assert.NotErrorIs(t, err, asynq.SkipRetry)
}

func TestNewSendCodeTask(t *testing.T) {
	t.Parallel()
	_, err := tasks.NewSendCodeTask(tasks.SendCodePayload{Email: "a@example.com"})
	assert.Error(t, err, "an expiry is required: it is the deadline")
	task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{Email: "a@example.com", ExpiresAt: time.Now()})
	require.NoError(t, err)
	assert.Equal(t, tasks.TypeSendCode, task.Type())
	p, err := tasks.ParseSendCodePayload(task)
	require.NoError(t, err)
	assert.Equal(t, "a@example.com", p.Email)
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{Email: "a@example.com", ExpiresAt: now.Add(10 * time.Minute)})
	require.NoError(t, err)
	lo := func() float64 { return 0 }
	hi := func() float64 { return 1 }

	tests := []struct {
		n      int
		lo, hi time.Duration
	}{
		{0, 500 * time.Millisecond, time.Second},
		{1, time.Second, 2 * time.Second},
		{3, 4 * time.Second, 8 * time.Second},
		{6, 30 * time.Second, time.Minute},
		{7, 30 * time.Second, time.Minute},  // capped
		{40, 30 * time.Second, time.Minute}, // no overflow
	}
	relayDown := &relay.Error{Stage: relay.StageConnect, Err: errors.New("connection refused")}
	for _, tt := range tests {
		assert.Equal(t, tt.lo, tasks.RetryDelayAt(tt.n, relayDown, task, now, lo), "n=%d lowest", tt.n)
		assert.Equal(t, tt.hi, tasks.RetryDelayAt(tt.n, relayDown, task, now, hi), "n=%d highest", tt.n)
	}

	// A greylisted recipient is tried again after minutes, not seconds.
	greylisted := fmt.Errorf("send mail: %w", &relay.Error{Stage: relay.StageRcpt, Code: 450, Enhanced: "4.2.0"})
	for _, tt := range []struct {
		n      int
		lo, hi time.Duration
	}{
		{0, 30 * time.Second, time.Minute},
		{1, time.Minute, 2 * time.Minute},
		{2, 2 * time.Minute, 4 * time.Minute},
		{3, 150 * time.Second, 5 * time.Minute}, // capped
	} {
		assert.Equal(t, tt.lo, tasks.RetryDelayAt(tt.n, greylisted, task, now, lo), "greylisted n=%d lowest", tt.n)
		assert.Equal(t, tt.hi, tasks.RetryDelayAt(tt.n, greylisted, task, now, hi), "greylisted n=%d highest", tt.n)
	}

	// Never past the deadline.
	late := now.Add(10*time.Minute - 3*time.Second)
	assert.Equal(t, 3*time.Second, tasks.RetryDelayAt(8, relayDown, task, late, hi))
	assert.Equal(t, 3*time.Second, tasks.RetryDelayAt(0, greylisted, task, late, hi))
	assert.Equal(t, time.Duration(0), tasks.RetryDelayAt(8, relayDown, task, now.Add(time.Hour), hi))
}

func TestQueueShards(t *testing.T) {
	t.Parallel()
	assert.Equal(t, []string{"mail"}, tasks.Queues(1))
	assert.Equal(t, []string{"mail-0", "mail-1", "mail-2"}, tasks.Queues(3))
	assert.Equal(t, "mail", tasks.QueueFor("a@example.com", 1))
	seen := map[string]bool{}
	for i := range 100 {
		q := tasks.QueueFor(fmt.Sprintf("u%d@example.com", i), 3)
		assert.Contains(t, tasks.Queues(3), q)
		assert.Equal(t, q, tasks.QueueFor(fmt.Sprintf("u%d@example.com", i), 3), "one address, one shard")
		seen[q] = true
	}
	assert.Len(t, seen, 3, "addresses spread over every shard")
}
