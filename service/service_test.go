package service_test

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/replication"
	"github.com/verifyq/verifyq/service"
	"github.com/verifyq/verifyq/tasks"
)

// enqueuerFunc is a hand-written fake for fault injection.
type enqueuerFunc func(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)

func (f enqueuerFunc) EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	return f(ctx, task, opts...)
}

// stack is the real send step on one Redis: the code store, its limits
// and its delivery records.
type stack struct {
	store   *codes.Store
	limiter *limits.Limiter
	records *delivery.Records
}

// newStack returns the stack on rdb of codes as cc says (its zero fields
// verifyq's defaults) under the limits lc.
func newStack(t testing.TB, rdb redis.UniversalClient, cc codes.Config, lc limits.Config) stack {
	t.Helper()
	if cc.KeyPrefix == "" {
		cc.KeyPrefix, cc.TTL, cc.Length = codes.DefaultKeyPrefix, codes.DefaultTTL, codes.DefaultLength
	}
	store, err := codes.NewStore(rdb, cc)
	require.NoError(t, err)
	l, err := limits.New(rdb, lc, store)
	require.NoError(t, err)
	return stack{store: store, limiter: l, records: delivery.NewRecords(rdb, store.Keys, asynq.NewInspectorFromRedisClient(rdb))}
}

// service returns the service of s that queues with queue.
func (s stack) service(queue service.Enqueuer) *service.Service {
	return service.New(s.store, s.limiter, s.records, queue, discard)
}

func newStore(t *testing.T) stack {
	t.Helper()
	return newStack(t, redistest.Shared(t).UniversalClient(t), codes.Config{}, limits.Config{})
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestSendCodeEnqueuesTaskWithClockedPayload(t *testing.T) {
	t.Parallel()
	var got *asynq.Task
	svc := newStore(t).service(enqueuerFunc(func(_ context.Context, task *asynq.Task, _ ...asynq.Option) (*asynq.TaskInfo, error) {
		got = task
		return &asynq.TaskInfo{}, nil
	}))
	now := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	svc.Now = func() time.Time { return now }

	sent, err := svc.SendCode(context.Background(), service.SendRequest{Email: "a@example.com", Locale: "en"})
	require.NoError(t, err)
	assert.True(t, sent.Created)
	assert.Equal(t, 10*time.Minute, sent.ExpiresIn)
	require.NotNil(t, got)
	p, err := tasks.ParseSendCodePayload(got)
	require.NoError(t, err)
	assert.Equal(t, tasks.SendCodePayload{Email: "a@example.com", Locale: "en", RequestedAt: now, ExpiresAt: now.Add(10 * time.Minute)}, p)
}

// A failed enqueue is reported as unavailable, so the caller retries; the
// failed attempt leaves no code behind that was never mailed, and the retry
// makes one.
func TestSendCodeEnqueueFailure(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	fail := true
	svc := store.service(enqueuerFunc(func(context.Context, *asynq.Task, ...asynq.Option) (*asynq.TaskInfo, error) {
		if fail {
			return nil, errors.New("connection refused")
		}
		return &asynq.TaskInfo{}, nil
	}))

	_, err := svc.SendCode(context.Background(), service.SendRequest{Email: "a@example.com"})
	assert.ErrorIs(t, err, service.ErrUnavailable)

	fail = false
	sent, err := svc.SendCode(context.Background(), service.SendRequest{Email: "a@example.com"})
	require.NoError(t, err)
	assert.True(t, sent.Created, "the code of the failed attempt was taken back with it")
}

// The task carries the supported locale the send's language matched: the
// tag, else the Accept-Language, else DefaultLocale; a malformed tag is
// refused before anything is stored, a malformed header is the default.
func TestSendCodeLocale(t *testing.T) {
	t.Parallel()
	var got []tasks.SendCodePayload
	svc := newStore(t).service(enqueuerFunc(func(_ context.Context, task *asynq.Task, _ ...asynq.Option) (*asynq.TaskInfo, error) {
		p, err := tasks.ParseSendCodePayload(task)
		got = append(got, p)
		return &asynq.TaskInfo{}, err
	}))
	tests := []struct {
		req  service.SendRequest
		def  mail.Locale
		want mail.Locale
	}{
		{service.SendRequest{Locale: "ja"}, "", mail.LocaleJA},
		{service.SendRequest{AcceptLanguage: "zh-HK"}, "", mail.LocaleZhTW},
		{service.SendRequest{Locale: "en-GB", AcceptLanguage: "zh-HK"}, "", mail.LocaleEN},
		{service.SendRequest{Locale: "nl"}, "", mail.LocaleZhCN},
		{service.SendRequest{Locale: "nl"}, mail.LocaleFR, mail.LocaleFR},
		{service.SendRequest{AcceptLanguage: "nl"}, mail.LocaleRU, mail.LocaleRU},
		{service.SendRequest{}, mail.LocaleDE, mail.LocaleDE},
		{service.SendRequest{Locale: "zh-CN"}, mail.LocaleEN, mail.LocaleZhCN}, // as the old gateway's calls
		{service.SendRequest{AcceptLanguage: "en;q=x"}, mail.LocaleKO, mail.LocaleKO},
	}
	for i, tt := range tests {
		svc.DefaultLocale = tt.def
		tt.req.Email = fmt.Sprintf("l%d@example.com", i)
		_, err := svc.SendCode(context.Background(), tt.req)
		require.NoError(t, err, "%+v", tt.req)
		require.Len(t, got, i+1)
		assert.Equal(t, string(tt.want), got[i].Locale, "%+v, default %q", tt.req, tt.def)
	}
	for _, req := range []service.SendRequest{{Locale: "en_GB!"}, {Locale: "x", AcceptLanguage: "ja"}} {
		req.Email = "refused@example.com"
		_, err := svc.SendCode(context.Background(), req)
		assert.ErrorIs(t, err, service.ErrUnknownLocale, "%+v", req)
	}
	assert.Len(t, got, len(tests), "nothing enqueued for the refused")
}

func TestServiceErrors(t *testing.T) {
	t.Parallel()
	svc := newStore(t).service(enqueuerFunc(func(context.Context, *asynq.Task, ...asynq.Option) (*asynq.TaskInfo, error) {
		return &asynq.TaskInfo{}, nil
	}))
	ctx := context.Background()

	_, err := svc.SendCode(ctx, service.SendRequest{Email: "not an address"})
	assert.ErrorIs(t, err, service.ErrInvalidAddress)
	_, err = svc.SendCode(ctx, service.SendRequest{Email: "a@example.com", Locale: "xx"})
	assert.ErrorIs(t, err, service.ErrUnknownLocale)
	assert.ErrorIs(t, svc.VerifyCode(ctx, service.VerifyRequest{Email: "a@example.com", Code: ""}), service.ErrInvalidCode)
	assert.ErrorIs(t, svc.VerifyCode(ctx, service.VerifyRequest{Email: "a@example.com", Code: string(make([]byte, service.MaxCodeLength+1))}), service.ErrInvalidCode)
	assert.ErrorIs(t, svc.VerifyCode(ctx, service.VerifyRequest{Email: "a@example.com", Code: "123456"}), service.ErrNotFound)

	var rl error = &service.RateLimitError{Limit: "cooldown", RetryAfter: time.Second}
	assert.ErrorIs(t, rl, service.ErrRateLimited)
}

func TestClientID(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"203.0.113.5":           "203.0.113.5",
		" 203.0.113.5 ":         "203.0.113.5",
		"::ffff:203.0.113.5":    "203.0.113.5",
		"2001:db8:1:2:3:4:5:6":  "2001:db8:1:2::/64",
		"2001:db8:1:2::9":       "2001:db8:1:2::/64",
		"fe80::1%eth0":          "fe80::/64",
		"":                      "",
		"unknown":               "",
		"203.0.113.5:443":       "",
		"203.0.113.5, 10.0.0.1": "",
	}
	for in, want := range tests {
		assert.Equal(t, want, service.ClientID(in), "%q", in)
	}
}

// A caller that goes away between storing the code and queueing its task
// does not cut the enqueue off: it runs detached, with its own deadline.
func TestEnqueueIsDetachedFromTheCaller(t *testing.T) {
	t.Parallel()
	rdb := redistest.Shared(t).UniversalClient(t)
	store := newStack(t, rdb, codes.Config{}, limits.Config{Cooldown: time.Minute})
	queue := asynq.NewClientFromRedisClient(rdb)
	ctx, cancel := context.WithCancel(context.Background())
	svc := store.service(enqueuerFunc(func(ectx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
		cancel() // the caller goes away now
		if _, ok := ectx.Deadline(); !ok {
			return nil, errors.New("the enqueue has no deadline of its own")
		}
		return queue.EnqueueContext(ectx, task, opts...)
	}))

	_, err := svc.SendCode(ctx, service.SendRequest{Email: "gone@example.com"})
	require.NoError(t, err, "queued although the caller is gone")
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo(tasks.Queue)
	require.NoError(t, err)
	assert.Equal(t, 1, info.Pending)
}

// An enqueue that fails takes the request's limits back: the retry, inside
// the cooldown, is admitted.
func TestFailedEnqueueUndoesTheLimits(t *testing.T) {
	t.Parallel()
	rdb := redistest.Shared(t).UniversalClient(t)
	store := newStack(t, rdb, codes.Config{}, limits.Config{Cooldown: time.Minute, AddressPerHour: 1})
	fail := true
	svc := store.service(enqueuerFunc(func(context.Context, *asynq.Task, ...asynq.Option) (*asynq.TaskInfo, error) {
		if fail {
			return nil, errors.New("NOPERM this user has no permissions to access the 'asynq:{mail}:pending' key")
		}
		return &asynq.TaskInfo{}, nil
	}))
	_, err := svc.SendCode(context.Background(), service.SendRequest{Email: "u@example.com"})
	require.ErrorIs(t, err, service.ErrUnavailable)
	fail = false
	sent, err := svc.SendCode(context.Background(), service.SendRequest{Email: "u@example.com"})
	require.NoError(t, err)
	assert.True(t, sent.Created, "a new code: the failed attempt's was taken back")
}

// replicasFunc is a hand-written fake of the replicas' wait, for fault
// injection.
type replicasFunc func(ctx context.Context, keys ...string) error

func (f replicasFunc) Wait(ctx context.Context, keys ...string) error { return f(ctx, keys...) }

// The send's task ID is picked before its admission: the status names the
// task that is queued, and the index of open sends holds it.
func TestSendCodeNamesItsTaskInTheStatus(t *testing.T) {
	t.Parallel()
	rdb := redistest.Shared(t).UniversalClient(t)
	s := newStack(t, rdb, codes.Config{}, limits.Config{})
	svc := s.service(asynq.NewClientFromRedisClient(rdb))
	svc.QueueShards = 4
	ctx := context.Background()
	_, err := svc.SendCode(ctx, service.SendRequest{Email: "named@example.com", Locale: "en"})
	require.NoError(t, err)
	id := codes.ID{Email: "named@example.com"}
	raw, err := rdb.HGetAll(ctx, s.store.StatusKey(id)).Result()
	require.NoError(t, err)
	queue := tasks.QueueFor(id.Email, 4)
	assert.Equal(t, queue, raw["queue"])
	assert.Equal(t, "en", raw["locale"])
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(queue, raw["task"])
	require.NoError(t, err, "the queued task is the one the status names")
	assert.Equal(t, asynq.TaskStatePending, info.State)
	open, err := s.records.OpenSends(ctx, delivery.OpenSend{ID: id}.Shard(), time.Now(), 10)
	require.NoError(t, err)
	assert.Equal(t, []delivery.OpenSend{{Task: raw["task"], ID: id}}, open)
}

// An enqueue that finds its task's ID taken found the task queued (by the
// reconciler, after a slow enqueue): the send succeeds.
func TestSendCodeTakesAnIDConflictForSuccess(t *testing.T) {
	t.Parallel()
	svc := newStore(t).service(enqueuerFunc(func(context.Context, *asynq.Task, ...asynq.Option) (*asynq.TaskInfo, error) {
		return nil, fmt.Errorf("%w", asynq.ErrTaskIDConflict)
	}))
	_, err := svc.SendCode(context.Background(), service.SendRequest{Email: "conflict@example.com"})
	require.NoError(t, err)
}

// With REDIS_MIN_REPLICAS, the replicas' wait runs after the enqueue on
// the keys of the code's and the index's slots and the queue's; when it
// falls short the send fails as unavailable and is taken back as a failed
// enqueue is, and the task it queued mails nothing.
func TestSendCodeWaitsForReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Shared(t).UniversalClient(t)
	s := newStack(t, rdb, codes.Config{}, limits.Config{Cooldown: time.Minute})
	queue := asynq.NewClientFromRedisClient(rdb)
	var queued []string
	svc := s.service(enqueuerFunc(func(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
		info, err := queue.EnqueueContext(ctx, task, opts...)
		if err == nil {
			queued = append(queued, info.ID)
		}
		return info, err
	}))
	var keys []string
	fail := true
	svc.Replicas = replicasFunc(func(_ context.Context, k ...string) error {
		require.Len(t, queued, 1, "the wait comes after the enqueue")
		keys = k
		if fail {
			return &replication.TooFewError{Acked: 0, Want: 1, Timeout: 100 * time.Millisecond}
		}
		return nil
	})
	_, err := svc.SendCode(ctx, service.SendRequest{Email: "few@example.com"})
	require.ErrorIs(t, err, service.ErrUnavailable)
	require.ErrorIs(t, err, replication.ErrTooFew)
	id := codes.ID{Email: "few@example.com"}
	assert.Equal(t, []string{s.store.Key(id), delivery.OpenSend{ID: id}.Key(), "{" + tasks.Queue + "}"}, keys)
	n, err := rdb.Exists(ctx, s.store.Key(id)).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "the code was taken back")
	at, err := s.records.Begin(ctx, id, delivery.Task{ID: queued[0], Queue: tasks.Queue}, codes.DefaultTTL)
	require.NoError(t, err)
	assert.True(t, at.Done, "the task it queued finds no code to mail")

	fail, queued = false, nil
	sent, err := svc.SendCode(ctx, service.SendRequest{Email: "few@example.com"})
	require.NoError(t, err, "the retry is admitted: the cooldown was taken back")
	assert.True(t, sent.Created)
}
