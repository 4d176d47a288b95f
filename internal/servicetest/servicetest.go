// Package servicetest builds the real service for the edges' tests: a
// codes.Store, its limits, its delivery records and an asynq client on a Redis deployment of the test's own
// (of the mode VERIFYQ_TEST_REDIS_MODE names), and
// a fake service with function fields for fault injection.
package servicetest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/returnpath"
	"github.com/verifyq/verifyq/service"
	"github.com/verifyq/verifyq/tasks"
)

// Env is a real service on a real Redis.
type Env struct {
	// Deployment is the test's own Redis, of the mode
	// VERIFYQ_TEST_REDIS_MODE names (single by default).
	Deployment redistest.Deployment
	// Redis is the server in single mode and nil in the others: a test
	// that stops it calls SingleOnly first.
	Redis   *redistest.Server
	RDB     redis.UniversalClient
	Service *service.Service
	// Records are the service's delivery records: a test writes what a
	// worker would (Records.Sent).
	Records *delivery.Records
}

// Discard is a logger that writes nothing.
var Discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// Parts are the code store, its limits and its delivery records on one
// Redis, wired as the enqueuer wires them.
type Parts struct {
	Store   *codes.Store
	Limiter *limits.Limiter
	Records *delivery.Records
}

// NewParts returns the Parts on rdb with cc (its zero KeyPrefix, TTL and
// Length are codes' defaults) and the limits lc.
func NewParts(t testing.TB, rdb redis.UniversalClient, cc codes.Config, lc limits.Config) Parts {
	t.Helper()
	if cc.KeyPrefix == "" {
		cc.KeyPrefix = codes.DefaultKeyPrefix
	}
	if cc.TTL == 0 {
		cc.TTL = codes.DefaultTTL
	}
	if cc.Length == 0 {
		cc.Length = codes.DefaultLength
	}
	store, err := codes.NewStore(rdb, cc)
	require.NoError(t, err)
	limiter, err := limits.New(rdb, lc, store)
	require.NoError(t, err)
	return Parts{Store: store, Limiter: limiter, Records: delivery.NewRecords(rdb, store.Keys, asynq.NewInspectorFromRedisClient(rdb))}
}

// New starts a Redis deployment of the mode VERIFYQ_TEST_REDIS_MODE names
// (redistest.StartMode) for the test and returns the service on it, with
// codes as verifyq makes them by default (with maxAttempts wrong codes
// allowed; 0: no cap) and the given limits.
func New(t testing.TB, l limits.Config, maxAttempts int) *Env {
	t.Helper()
	d := redistest.StartMode(t)
	rdb := d.UniversalClient(t)
	p := NewParts(t, rdb, codes.Config{MaxAttempts: maxAttempts}, l)
	srv, _ := d.(*redistest.Server)
	return &Env{Deployment: d, Redis: srv, RDB: rdb, Records: p.Records,
		Service: service.New(p.Store, p.Limiter, p.Records, asynq.NewClientFromRedisClient(rdb), Discard)}
}

// SingleOnly skips a test that needs the single deployment (it stops and
// restarts the one server) in the sentinel and cluster runs; it runs in the
// single run, which is make test.
func SingleOnly(t testing.TB) {
	t.Helper()
	if m := redistest.Mode(); m != redistest.ModeSingle {
		t.Skipf("single mode only (runs with %s unset or single), not %s", redistest.EnvMode, m)
	}
}

// Keys lists the keys matching pattern on every master.
func (e *Env) Keys(t testing.TB, pattern string) []string {
	t.Helper()
	return redistest.Keys(context.Background(), t, e.RDB, pattern)
}

// Code returns the live code of email.
func (e *Env) Code(t testing.TB, email string) string {
	t.Helper()
	code, err := e.RDB.Get(context.Background(), "code_"+email).Result()
	require.NoError(t, err, "a live code for the address")
	return code
}

// Task is the task the status of id's code names: its latest send's.
func (e *Env) Task(t testing.TB, id codes.ID) string {
	t.Helper()
	keys, err := codes.NewKeys(codes.DefaultKeyPrefix)
	require.NoError(t, err)
	task, err := e.RDB.HGet(context.Background(), keys.StatusKey(id), "task").Result()
	require.NoError(t, err, "a status that names a task")
	return task
}

// Reported sends id's code by the task its status names (a worker begins
// it and the mail server accepts it), then records rep, a bounce or a
// complaint about that mail, as the bounce intake does.
func (e *Env) Reported(t testing.TB, id codes.ID, rep delivery.Report) {
	t.Helper()
	ctx := context.Background()
	keys, err := codes.NewKeys(codes.DefaultKeyPrefix)
	require.NoError(t, err)
	records := delivery.NewRecords(e.RDB, keys, asynq.NewInspectorFromRedisClient(e.RDB))
	task := e.Task(t, id)
	_, err = records.Begin(ctx, id, delivery.Task{ID: task, Queue: tasks.Queue}, codes.DefaultTTL)
	require.NoError(t, err)
	require.NoError(t, records.Sent(ctx, id, task, delivery.Acceptance{At: time.Now()}))
	ok, err := records.Reported(ctx, id, returnpath.SendID(task), rep)
	require.NoError(t, err)
	require.True(t, ok, "the status follows the send")
}

// Pending returns the payloads of the tasks waiting in the mail queue.
func (e *Env) Pending(t testing.TB) []tasks.SendCodePayload {
	t.Helper()
	infos, err := asynq.NewInspectorFromRedisClient(e.RDB).ListPendingTasks(tasks.Queue)
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return nil
	}
	require.NoError(t, err)
	var out []tasks.SendCodePayload
	for _, info := range infos {
		var p tasks.SendCodePayload
		require.NoError(t, json.Unmarshal(info.Payload, &p))
		out = append(out, p)
	}
	return out
}

// Fake is a hand-written service whose methods call its function fields;
// a nil field succeeds.
type Fake struct {
	Send     func(ctx context.Context, req service.SendRequest) (service.Sent, error)
	Verify   func(ctx context.Context, req service.VerifyRequest) error
	StatusOf func(ctx context.Context, id codes.ID) (delivery.Status, error)
}

// Failing returns a Fake whose every call fails with err.
func Failing(err error) Fake {
	return Fake{
		Send:     func(context.Context, service.SendRequest) (service.Sent, error) { return service.Sent{}, err },
		Verify:   func(context.Context, service.VerifyRequest) error { return err },
		StatusOf: func(context.Context, codes.ID) (delivery.Status, error) { return delivery.Status{}, err },
	}
}

// SendCode calls f.Send.
func (f Fake) SendCode(ctx context.Context, req service.SendRequest) (service.Sent, error) {
	if f.Send == nil {
		return service.Sent{ExpiresIn: 10 * time.Minute, Created: true}, nil
	}
	return f.Send(ctx, req)
}

// VerifyCode calls f.Verify.
func (f Fake) VerifyCode(ctx context.Context, req service.VerifyRequest) error {
	if f.Verify == nil {
		return nil
	}
	return f.Verify(ctx, req)
}

// Status calls f.StatusOf; nil reports StateNone.
func (f Fake) Status(ctx context.Context, id codes.ID) (delivery.Status, error) {
	if f.StatusOf == nil {
		return delivery.Status{State: delivery.StateNone}, nil
	}
	return f.StatusOf(ctx, id)
}

// Observed is one request an edge reported to an Observer.
type Observed struct{ API, Route, Caller, Outcome string }

// Observer is a hand-written request observer (what metrics.Enqueuer is to
// the edges) that keeps what it is told. It is safe for concurrent use.
type Observer struct {
	mu   sync.Mutex
	seen []Observed
}

// ObserveRequest records one request; a request without a duration is a
// bug in the edge, and fails loudly.
func (o *Observer) ObserveRequest(api, route, caller, outcome string, d time.Duration) {
	if d <= 0 {
		panic("servicetest: a request observed without a duration")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen = append(o.seen, Observed{api, route, caller, outcome})
}

// All returns every request observed so far.
func (o *Observer) All() []Observed {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Observed(nil), o.seen...)
}

// Outcomes returns the outcome labels observed so far.
func (o *Observer) Outcomes() []string {
	var out []string
	for _, r := range o.All() {
		out = append(out, r.Outcome)
	}
	return out
}

// Take waits up to 5 s for a request to be observed, returns the last one
// and forgets them all.
func (o *Observer) Take(t testing.TB) Observed {
	t.Helper()
	var last Observed
	require.Eventually(t, func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		if len(o.seen) == 0 {
			return false
		}
		last, o.seen = o.seen[len(o.seen)-1], nil
		return true
	}, 5*time.Second, 5*time.Millisecond, "a request observed")
	return last
}

// EndCooldowns moves every send recorded in the hour of sends of the
// mailbox named mailboxID (delivery.MailboxID) back by d, as if d had
// passed for it: its resend cooldowns and gap, which that hour holds
// (limits.AddressKey), end when d is at least their length, while the
// sends still count toward the hour's cap.
func EndCooldowns(ctx context.Context, t testing.TB, rdb redis.Cmdable, mailboxID string, d time.Duration) {
	t.Helper()
	key := limits.AddressKey(mailboxID)
	sends, err := rdb.ZRangeWithScores(ctx, key, 0, -1).Result()
	require.NoError(t, err)
	require.NotEmpty(t, sends, "no sends recorded for the mailbox")
	for i := range sends {
		sends[i].Score -= float64(d.Milliseconds())
	}
	require.NoError(t, rdb.ZAdd(ctx, key, sends...).Err())
}
