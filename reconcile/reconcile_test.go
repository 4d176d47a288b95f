package reconcile_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/logtest"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/internal/servicetest"
	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/reconcile"
	"github.com/verifyq/verifyq/relay"
	"github.com/verifyq/verifyq/service"
	"github.com/verifyq/verifyq/tasks"
)

// TestMain closes the deployments redistest.Shared pooled.
func TestMain(m *testing.M) { os.Exit(redistest.Run(m)) }

// env is a send path and a reconciler on a Redis of the test's own (of the
// mode VERIFYQ_TEST_REDIS_MODE names), its clock at will.
type env struct {
	rdb     redis.UniversalClient
	parts   servicetest.Parts
	svc     *service.Service
	insp    *asynq.Inspector
	r       *reconcile.Reconciler
	obs     *observer
	now     time.Time
	seal    *codes.Seal
	logs    *logtest.Buffer
	queue   *asynq.Client
	records *delivery.Records
}

// observer records what the reconciler tells it.
type observer struct {
	mu      sync.Mutex
	checked []int
	reasons map[string]int
}

func (o *observer) Checked(n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.checked = append(o.checked, n)
}

func (o *observer) Reconciled(reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reasons[reason]++
}

func newEnv(t *testing.T, seal *codes.Seal) *env {
	t.Helper()
	rdb := redistest.Shared(t).UniversalClient(t)
	p := servicetest.NewParts(t, rdb, codes.Config{Seal: seal}, limits.Config{})
	queue := asynq.NewClientFromRedisClient(rdb)
	e := &env{rdb: rdb, parts: p, insp: asynq.NewInspectorFromRedisClient(rdb), obs: &observer{reasons: map[string]int{}},
		now: time.Now(), seal: seal, queue: queue, records: p.Records}
	var logger *slog.Logger
	logger, e.logs = logtest.New(t)
	e.svc = service.New(p.Store, p.Limiter, p.Records, queue, servicetest.Discard)
	var err error
	e.r, err = reconcile.New(reconcile.Config{
		Redis: rdb, Records: p.Records, Tasks: e.insp, Queue: queue, QueueShards: 1,
		TTLOf: p.Store.TTLOf, Interval: time.Hour, Observer: e.obs, Logger: logger,
	})
	require.NoError(t, err)
	e.r.Now = func() time.Time { return e.now }
	return e
}

// pass makes a pass at the env's clock plus after.
func (e *env) pass(t *testing.T, after time.Duration) reconcile.Report {
	t.Helper()
	e.now = time.Now().Add(after)
	rep, err := e.r.Pass(context.Background())
	require.NoError(t, err)
	return rep
}

// send asks for a code as a caller does, through the service: its task
// is queued.
func (e *env) send(t *testing.T, email, locale string) string {
	t.Helper()
	_, err := e.svc.SendCode(context.Background(), service.SendRequest{Email: email, Locale: locale})
	require.NoError(t, err)
	return e.task(t, codes.ID{Email: email})
}

// task is the task the status of id names.
func (e *env) task(t *testing.T, id codes.ID) string {
	t.Helper()
	task, err := e.rdb.HGet(context.Background(), e.parts.Store.StatusKey(id), "task").Result()
	require.NoError(t, err)
	return task
}

// info is the task id of the mail queue as asynq holds it, or nil.
func (e *env) info(t *testing.T, id string) *asynq.TaskInfo {
	t.Helper()
	info, err := e.insp.GetTaskInfo(tasks.Queue, id)
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return nil
	}
	require.NoError(t, err)
	return info
}

// worker runs a worker on the mail queue that mails through a new SMTP
// server, until the test ends.
func (e *env) worker(t *testing.T) *smtptest.Server {
	t.Helper()
	sink := smtptest.Start(t)
	sender, err := relay.NewClient(relay.Config{Host: sink.Host(), Port: sink.Port(), TLS: relay.TLSNone, Timeout: 2 * time.Second},
		servicetest.Discard)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sender.Close() })
	keys, err := codes.NewKeys(codes.DefaultKeyPrefix)
	require.NoError(t, err)
	author, err := mail.NewAuthor("no-reply@verifyq.test", "", nil)
	require.NoError(t, err)
	h, err := tasks.NewSendCodeHandler(tasks.HandlerConfig{
		Deliveries: delivery.NewRecords(e.rdb, keys, e.insp), Author: author,
		Mailer: sender, TTL: codes.DefaultTTL, Seal: e.seal, Logger: servicetest.Discard,
	})
	require.NoError(t, err)
	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{
		Concurrency: 2, Queues: map[string]int{tasks.Queue: 1}, TaskCheckInterval: 20 * time.Millisecond, LogLevel: asynq.FatalLevel,
	})
	mux := asynq.NewServeMux()
	mux.Handle(tasks.TypeSendCode, h)
	require.NoError(t, srv.Start(mux))
	t.Cleanup(srv.Shutdown)
	return sink
}

// A queued send whose task is deleted by hand is queued again under the
// same ID, as it was (address, locale), once it stood still for Grace, and
// mailed; a send that was mailed is not queued again.
func TestLostTaskIsQueuedAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	id := e.send(t, "lost@example.com", "zh")
	before := e.info(t, id)
	require.NotNil(t, before, "the send's task is the one its status names")
	require.NoError(t, e.insp.DeleteTask(tasks.Queue, id))

	rep := e.pass(t, 0)
	assert.Equal(t, 1, rep.Checked)
	assert.Empty(t, rep.Requeued, "within Grace its enqueue may be on its way")
	assert.Nil(t, e.info(t, id))

	rep = e.pass(t, reconcile.Grace+time.Second)
	assert.Equal(t, map[string]int{reconcile.ReasonLost: 1}, rep.Requeued)
	again := e.info(t, id)
	require.NotNil(t, again, "queued again under its ID")
	assert.Equal(t, asynq.TaskStatePending, again.State)
	var p, was tasks.SendCodePayload
	require.NoError(t, json.Unmarshal(again.Payload, &p))
	require.NoError(t, json.Unmarshal(before.Payload, &was))
	assert.Equal(t, was.Email, p.Email)
	assert.Equal(t, was.Locale, p.Locale)
	assert.Equal(t, "zh-CN", p.Locale)
	assert.Equal(t, was.RequestedAt.UnixMilli(), p.RequestedAt.UnixMilli())
	// The code's expiry as the pass saw it, at its clock Grace ahead.
	assert.WithinDuration(t, was.ExpiresAt, p.ExpiresAt, reconcile.Grace+2*time.Second)
	assert.Equal(t, 1, e.obs.reasons[reconcile.ReasonLost])
	assert.NotContains(t, e.logs.String(), "lost@example.com", "the log masks the address")

	sink := e.worker(t)
	msgs := sink.WaitMessages(t, 1, 10*time.Second)
	assert.Equal(t, []string{"lost@example.com"}, msgs[0].To)
	require.Eventually(t, func() bool { return e.info(t, id) == nil }, 10*time.Second, 20*time.Millisecond, "the task ended")

	rep = e.pass(t, reconcile.SentGrace+time.Minute)
	assert.Empty(t, rep.Requeued, "a mailed send is not queued again")
	assert.Zero(t, rep.Checked, "it left the index when it was mailed")
	time.Sleep(200 * time.Millisecond) // a second mail would arrive now
	assert.Equal(t, 1, sink.Count())
}

// An admission whose enqueue never came (the enqueuer died between the
// two) is repaired: its task is queued under the ID the status names, with
// the sealed code the status keeps, and mails the code the caller's
// admission made.
func TestAdmissionWithoutEnqueueIsRepaired(t *testing.T) {
	t.Parallel()
	seal, err := codes.NewSeal([]byte("a test secret of 32 bytes, 01234"), nil)
	require.NoError(t, err)
	e := newEnv(t, seal)
	ctx := context.Background()
	task := tasks.NewTaskID()
	adm, err := e.parts.Limiter.Admit(ctx, limits.Request{Email: "crash@example.com", Purpose: "login",
		Send: codes.Send{Task: task, Queue: tasks.Queue, Locale: "en"}})
	require.NoError(t, err)
	require.NotEmpty(t, adm.Sealed)
	assert.Nil(t, e.info(t, task), "no task: the enqueuer died")

	rep := e.pass(t, reconcile.Grace+time.Second)
	assert.Equal(t, map[string]int{reconcile.ReasonLost: 1}, rep.Requeued)
	info := e.info(t, task)
	require.NotNil(t, info)
	var p tasks.SendCodePayload
	require.NoError(t, json.Unmarshal(info.Payload, &p))
	assert.Equal(t, "login", p.Purpose)
	assert.Equal(t, adm.Sealed, p.SealedCode)
	assert.NotContains(t, string(info.Payload), adm.Code, "no plain code in the payload")

	sink := e.worker(t)
	msgs := sink.WaitMessages(t, 1, 10*time.Second)
	assert.Contains(t, msgs[0].Text, adm.Code, "the admission's code is mailed")
	require.NoError(t, e.parts.Store.Verify(ctx, codes.ID{Email: "crash@example.com", Purpose: "login"}, adm.Code))
}

// A task asynq holds active with no lease and no worker on it (asynq
// #1144: it never recovers such a task) is replaced by a new task once the
// send stood still for OrphanAfter; the status names the new one, and the
// old one, should it ever run, mails nothing. A task a live worker runs is
// left alone however long.
func TestOrphanedTaskIsReplaced(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	old := e.send(t, "orphan@example.com", "")
	// The state of asynq#1144, made by hand: the task moved from pending
	// to active, with no lease.
	require.NoError(t, e.rdb.LMove(ctx, "asynq:{mail}:pending", "asynq:{mail}:active", "RIGHT", "LEFT").Err())
	require.NoError(t, e.rdb.HSet(ctx, "asynq:{mail}:t:"+old, "state", "active").Err())
	require.Equal(t, asynq.TaskStateActive, e.info(t, old).State)

	rep := e.pass(t, reconcile.Grace+time.Second)
	assert.Empty(t, rep.Requeued, "active for less than OrphanAfter")

	rep = e.pass(t, reconcile.OrphanAfter+time.Second)
	assert.Equal(t, map[string]int{reconcile.ReasonOrphaned: 1}, rep.Requeued)
	id := codes.ID{Email: "orphan@example.com"}
	now := e.task(t, id)
	require.NotEqual(t, old, now, "a new task is the send's")
	assert.Equal(t, asynq.TaskStatePending, e.info(t, now).State)
	sends, err := e.records.OpenSends(ctx, delivery.OpenSend{ID: id}.Shard(), time.Now(), 10)
	require.NoError(t, err)
	assert.Equal(t, []delivery.OpenSend{{Task: now, ID: id}}, sends, "the index follows the send's task")
	at, err := e.records.Begin(ctx, id, delivery.Task{ID: old, Queue: tasks.Queue}, codes.DefaultTTL)
	require.NoError(t, err)
	assert.True(t, at.Superseded, "the orphan, run after all, mails nothing")
}

func TestLiveWorkersTaskIsLeftAlone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	release := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{
		Concurrency: 1, Queues: map[string]int{tasks.Queue: 1}, TaskCheckInterval: 20 * time.Millisecond, LogLevel: asynq.FatalLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeSendCode, func(ctx context.Context, _ *asynq.Task) error {
		select { // a send held back as the breaker holds them, for as long as the test wants
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	require.NoError(t, srv.Start(mux))
	t.Cleanup(srv.Shutdown)
	t.Cleanup(func() { close(release) })
	task := e.send(t, "held@example.com", "")
	require.Eventually(t, func() bool {
		servers, err := e.insp.Servers()
		require.NoError(t, err)
		for _, s := range servers {
			for _, w := range s.ActiveWorkers {
				if w.TaskID == task {
					return true
				}
			}
		}
		return false
	}, 15*time.Second, 50*time.Millisecond, "the worker lists the task it runs (its heartbeat, every 5 s)")

	rep := e.pass(t, reconcile.OrphanAfter+time.Minute)
	assert.Equal(t, 1, rep.Checked)
	assert.Empty(t, rep.Requeued, "a live worker runs it")
	assert.Equal(t, task, e.task(t, codes.ID{Email: "held@example.com"}))
}

// A send whose attempt began and whose task is gone waits SentGrace: the
// worker that began it may have mailed it and still be writing the record.
func TestBegunSendWaitsForItsRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	id := codes.ID{Email: "begun@example.com"}
	task := e.send(t, id.Email, "")
	_, err := e.records.Begin(ctx, id, delivery.Task{ID: task, Queue: tasks.Queue}, codes.DefaultTTL)
	require.NoError(t, err)
	require.NoError(t, e.insp.DeleteTask(tasks.Queue, task))

	assert.Empty(t, e.pass(t, reconcile.Grace+time.Second).Requeued)
	assert.Equal(t, map[string]int{reconcile.ReasonLost: 1}, e.pass(t, reconcile.SentGrace+time.Second).Requeued)
}

// A send queued again MaxRequeues times is given up, logged and counted,
// and leaves the index.
func TestSendIsGivenUp(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	id := codes.ID{Email: "again@example.com"}
	task := e.send(t, id.Email, "")
	for i := range reconcile.MaxRequeues {
		require.NoError(t, e.insp.DeleteTask(tasks.Queue, task))
		rep := e.pass(t, time.Duration(i+1)*(reconcile.Grace+time.Second))
		require.Equal(t, map[string]int{reconcile.ReasonLost: 1}, rep.Requeued, "requeue %d", i+1)
	}
	require.NoError(t, e.insp.DeleteTask(tasks.Queue, task))
	rep := e.pass(t, time.Duration(reconcile.MaxRequeues+1)*(reconcile.Grace+time.Second))
	assert.Equal(t, map[string]int{reconcile.ReasonGivenUp: 1}, rep.Requeued)
	assert.Equal(t, 1, rep.Closed)
	assert.Contains(t, e.logs.String(), "given up")
	assert.Zero(t, e.pass(t, reconcile.Grace).Checked, "it left the index")
}

// A send that ended (mailed, undeliverable) or whose code is gone leaves
// the index at the next pass, with nothing queued.
func TestEndedSendsLeaveTheIndex(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	e.send(t, "verified@example.com", "")
	e.send(t, "expired@example.com", "")
	code, err := e.rdb.Get(ctx, "code_verified@example.com").Result()
	require.NoError(t, err)
	require.NoError(t, e.parts.Store.Verify(ctx, codes.ID{Email: "verified@example.com"}, code))
	require.NoError(t, e.rdb.Del(ctx, "code_expired@example.com").Err())

	rep := e.pass(t, reconcile.Grace+time.Second)
	assert.Equal(t, 2, rep.Checked)
	assert.Equal(t, 2, rep.Closed)
	assert.Empty(t, rep.Requeued)
	assert.Zero(t, e.pass(t, reconcile.Grace+time.Second).Checked)
}

// One pass per interval across workers: the lock.
func TestOnePassPerInterval(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	other, err := reconcile.New(reconcile.Config{
		Redis: e.rdb, Records: e.records, Tasks: e.insp, Queue: e.queue, QueueShards: 1,
		TTLOf: e.parts.Store.TTLOf, Interval: time.Hour, Logger: servicetest.Discard,
	})
	require.NoError(t, err)
	ran, _, err := e.r.TryPass(context.Background())
	require.NoError(t, err)
	assert.True(t, ran)
	ran, _, err = other.TryPass(context.Background())
	require.NoError(t, err)
	assert.False(t, ran, "the other worker's reconciler waits for the next interval")
	ttl, err := e.rdb.PTTL(context.Background(), reconcile.LockKey).Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, 50*time.Minute, "the lock lasts most of the interval")
}
