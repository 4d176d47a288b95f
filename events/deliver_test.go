package events_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/events"
	"github.com/verifyq/verifyq/internal/logtest"
	"github.com/verifyq/verifyq/internal/redistest"
)

// Two secrets, as during a rotation: the new one first.
var (
	newKey    = []byte("0123456789abcdef0123456789abcdef")
	oldKey    = []byte("fedcba9876543210fedcba98")
	newSecret = events.SecretPrefix + base64.StdEncoding.EncodeToString(newKey)
	oldSecret = events.SecretPrefix + base64.StdEncoding.EncodeToString(oldKey)
)

// The signature is Standard Webhooks': the reference library verifies it
// with either secret of a rotation, and refuses it with another secret, a
// changed body or an old timestamp.
func TestSignVerifiesWithTheReferenceLibrary(t *testing.T) {
	t.Parallel()
	body := []byte(`{"type":"code.sent","timestamp":"2025-01-01T00:00:00.000Z","data":{"email":"a@example.com"}}`)
	now := time.Now()
	header := http.Header{}
	header.Set("webhook-id", "msg_1")
	header.Set("webhook-timestamp", itoa(now.Unix()))
	header.Set("webhook-signature", events.Sign([][]byte{newKey, oldKey}, "msg_1", now, body))
	assert.Len(t, strings.Fields(header.Get("webhook-signature")), 2, "one signature per secret")
	for _, secret := range []string{newSecret, oldSecret} {
		wh, err := standardwebhooks.NewWebhook(secret)
		require.NoError(t, err)
		assert.NoError(t, wh.Verify(body, header), "either secret verifies")
		assert.Error(t, wh.Verify(append(body, ' '), header), "a changed body does not")
	}
	other, err := standardwebhooks.NewWebhook(events.SecretPrefix + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("z", 32))))
	require.NoError(t, err)
	assert.ErrorIs(t, other.Verify(body, header), standardwebhooks.ErrNoMatchingSignature)

	old := http.Header{}
	for k, v := range header {
		old[k] = v
	}
	then := now.Add(-10 * time.Minute)
	old.Set("webhook-timestamp", itoa(then.Unix()))
	old.Set("webhook-signature", events.Sign([][]byte{newKey}, "msg_1", then, body))
	wh, err := standardwebhooks.NewWebhook(newSecret)
	require.NoError(t, err)
	assert.ErrorIs(t, wh.Verify(body, old), standardwebhooks.ErrMessageTooOld)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// receiver is an endpoint that verifies each delivery with the reference
// library and answers with its status function.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	status func(id string, n int) int // n: deliveries of id so far, from 1

	mu     sync.Mutex
	counts map[string]int
	bodies map[string]string
	bad    []string
}

func newReceiver(t *testing.T, secret string, status func(id string, n int) int) *receiver {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	require.NoError(t, err)
	r := &receiver{t: t, status: status, counts: map[string]int{}, bodies: map[string]string{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		id := req.Header.Get("webhook-id")
		r.mu.Lock()
		if err := wh.Verify(body, req.Header); err != nil {
			r.bad = append(r.bad, id+": "+err.Error())
		}
		r.counts[id]++
		r.bodies[id] = string(body)
		n := r.counts[id]
		r.mu.Unlock()
		w.WriteHeader(r.status(id, n))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) snapshot() (map[string]int, map[string]string, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	counts, bodies := map[string]int{}, map[string]string{}
	for k, v := range r.counts {
		counts[k] = v
	}
	for k, v := range r.bodies {
		bodies[k] = v
	}
	return counts, bodies, append([]string(nil), r.bad...)
}

// results is an events.Observer that counts.
type results struct {
	mu        sync.Mutex
	emitted   map[events.Type]int
	delivered map[events.Result]int
}

func newResults() *results {
	return &results{emitted: map[events.Type]int{}, delivered: map[events.Result]int{}}
}

func (r *results) Emitted(t events.Type, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ok {
		r.emitted[t]++
	}
}

func (r *results) Delivered(_ events.Type, res events.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delivered[res]++
}

func (r *results) get(res events.Result) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.delivered[res]
}

// startDeliveries runs a Deliverer to urls with secrets on an asynq
// server of rdb's queue, as the worker does, with retries at once.
func startDeliveries(t *testing.T, d redistest.Deployment, urls []string, secrets [][]byte, obs events.Observer) {
	t.Helper()
	logger, _ := logtest.New(t)
	del, err := events.NewDeliverer(urls, secrets, obs, logger)
	require.NoError(t, err)
	srv := asynq.NewServerFromRedisClient(d.UniversalClient(t), asynq.Config{
		Concurrency: 4, Queues: map[string]int{events.Queue: 1}, LogLevel: asynq.FatalLevel,
		TaskCheckInterval: 20 * time.Millisecond, DelayedTaskCheckInterval: 50 * time.Millisecond,
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return 10 * time.Millisecond },
	})
	mux := asynq.NewServeMux()
	mux.Handle(events.TypeDeliver, del)
	require.NoError(t, srv.Start(mux))
	t.Cleanup(srv.Shutdown)
}

// Events emitted to two endpoints reach each, signed, once per
// webhook-id when the endpoint answers 2xx; an endpoint that answers 503
// at first gets the event again, under the same webhook-id, until it
// answers 2xx.
func TestDeliveryThroughTheQueue(t *testing.T) {
	t.Parallel()
	d := redistest.Shared(t)
	rdb := d.UniversalClient(t)
	ok := newReceiver(t, newSecret, func(string, int) int { return http.StatusNoContent })
	flaky := newReceiver(t, oldSecret, func(_ string, n int) int {
		if n < 3 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	urls := []string{ok.srv.URL + "/hook", flaky.srv.URL + "/hook?token=x"}
	obs := newResults()
	logger, logs := logtest.New(t)
	em := events.NewEmitter(asynq.NewClientFromRedisClient(rdb), urls, obs, logger)
	startDeliveries(t, d, urls, [][]byte{newKey, oldKey}, obs)

	ctx := context.Background()
	evs := []events.Event{
		{Type: events.CodeSent, Fact: "task-a", Data: events.Data{Email: "a@example.com", TaskID: "task-a", Attempt: 1}},
		{Type: events.CodeVerified, Fact: "task-a", Data: events.Data{Email: "a@example.com", TaskID: "task-a"}},
	}
	for _, ev := range evs {
		require.NoError(t, em.Emit(ctx, ev))
	}
	require.Eventually(t, func() bool {
		c1, _, _ := ok.snapshot()
		c2, _, _ := flaky.snapshot()
		return len(c1) == 2 && len(c2) == 2 && c2[evs[0].ID()] == 3 && c2[evs[1].ID()] == 3
	}, 10*time.Second, 20*time.Millisecond)
	for _, r := range []*receiver{ok, flaky} {
		counts, bodies, bad := r.snapshot()
		assert.Empty(t, bad, "every signature verifies")
		for _, ev := range evs {
			want, err := ev.Body()
			require.NoError(t, err)
			var got, wantMap map[string]any
			require.NoError(t, json.Unmarshal([]byte(bodies[ev.ID()]), &got))
			require.NoError(t, json.Unmarshal(want, &wantMap))
			assert.Equal(t, wantMap["type"], got["type"])
			assert.Equal(t, wantMap["data"], got["data"])
			assert.NotZero(t, counts[ev.ID()])
		}
	}
	c1, _, _ := ok.snapshot()
	assert.Equal(t, map[string]int{evs[0].ID(): 1, evs[1].ID(): 1}, c1, "once each at the endpoint that answers")
	assert.Equal(t, 4, obs.get(events.ResultRetried))
	assert.Equal(t, 4, obs.get(events.ResultDelivered))
	assert.NotContains(t, logs.String(), "token=x", "no endpoint's path or query in a log line")
	assert.NotContains(t, logs.String(), "a@example.com", "no address in a log line")
}

// The same fact emitted again while its delivery waits is queued once per
// endpoint: the task ID is the webhook-id's.
func TestEmitDedupes(t *testing.T) {
	t.Parallel()
	d := redistest.Shared(t)
	rdb := d.UniversalClient(t)
	em := events.NewEmitter(asynq.NewClientFromRedisClient(rdb), []string{"https://a.example/h", "https://b.example/h"}, nil, nil)
	ev := events.Event{Type: events.CodeBounced, Fact: "task-b", Data: events.Data{DSN: "5.1.1"}}
	require.NoError(t, em.Emit(context.Background(), ev))
	require.NoError(t, em.Emit(context.Background(), ev))
	require.NoError(t, em.Emit(context.Background(), events.Event{Type: events.CodeComplained, Fact: "task-b"}))
	tasks, err := asynq.NewInspectorFromRedisClient(rdb).ListPendingTasks(events.Queue)
	require.NoError(t, err)
	assert.Len(t, tasks, 4, "two facts, two endpoints")
	assert.Nil(t, events.NewEmitter(nil, nil, nil, nil), "no endpoint: no emitter")
}

// Events with no fact (a send with no task ID) are not taken for one
// another: each is queued under a webhook-id of its own.
func TestEmitWithoutAFact(t *testing.T) {
	t.Parallel()
	rdb := redistest.Shared(t).UniversalClient(t)
	em := events.NewEmitter(asynq.NewClientFromRedisClient(rdb), []string{"https://a.example/h"}, nil, nil)
	for range 2 {
		require.NoError(t, em.Emit(context.Background(), events.Event{Type: events.CodeBounced, Data: events.Data{DSN: "5.1.1"}}))
	}
	tasks, err := asynq.NewInspectorFromRedisClient(rdb).ListPendingTasks(events.Queue)
	require.NoError(t, err)
	assert.Len(t, tasks, 2, "two events, two webhook-ids")
}

// A delivery follows no redirect, gives up a request after its timeout,
// and drops an endpoint that is no longer configured; none of these is
// delivered.
func TestDeliveryBounds(t *testing.T) {
	t.Parallel()
	redirect := httptest.NewServer(http.RedirectHandler("https://elsewhere.example/", http.StatusFound))
	t.Cleanup(redirect.Close)
	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-hang }))
	t.Cleanup(func() { close(hang); slow.Close() })
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("x", 1<<20)))
	}))
	t.Cleanup(big.Close)
	logger, _ := logtest.New(t)
	obs := newResults()
	del, err := events.NewDeliverer([]string{redirect.URL, slow.URL, big.URL}, [][]byte{newKey}, obs, logger)
	require.NoError(t, err)
	events.SetTimeout(del, 300*time.Millisecond)
	task := func(url string) *asynq.Task {
		b, err := json.Marshal(map[string]any{"id": "msg_x", "type": events.CodeSent, "url": url, "body": json.RawMessage(`{}`)})
		require.NoError(t, err)
		return asynq.NewTask(events.TypeDeliver, b)
	}
	err = del.ProcessTask(t.Context(), task(redirect.URL))
	assert.ErrorContains(t, err, "endpoint answered 302")
	err = del.ProcessTask(t.Context(), task(slow.URL))
	assert.ErrorContains(t, err, "post to 127.0.0.1")
	assert.NoError(t, del.ProcessTask(t.Context(), task(big.URL)), "a 200 with a large body is delivered")
	err = del.ProcessTask(t.Context(), task("https://not-configured.example/"))
	assert.ErrorIs(t, err, asynq.SkipRetry)
	assert.Equal(t, 1, obs.get(events.ResultDropped))
	assert.Equal(t, 1, obs.get(events.ResultDelivered))
}
