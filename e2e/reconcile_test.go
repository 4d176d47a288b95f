package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/reconcile"
	"github.com/verifyq/verifyq/tasks"
)

// reconcileInterval is the tests' RECONCILE_INTERVAL: the least there is.
const reconcileInterval = time.Second

// Done when: deleting a queued send's task from Redis by hand leads to its
// mail within the reconciler's period (after the send stood still for
// reconcile.Grace); a sent one is not mailed again.
func TestReconcilerMailsALostTask(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{"RECONCILE_INTERVAL": reconcileInterval.String()})
	insp := asynq.NewInspectorFromRedisClient(s.redis.UniversalClient(t))
	// The worker takes no task while the queue is paused: the task stays
	// pending until it is deleted.
	require.NoError(t, insp.PauseQueue(tasks.Queue))
	status, _ := s.post(t, "/v1/codes", map[string]string{"email": "lost@example.com"})
	require.Equal(t, http.StatusAccepted, status)
	pending, err := insp.ListPendingTasks(tasks.Queue)
	require.NoError(t, err)
	require.Len(t, pending, 1)
	require.NoError(t, insp.DeleteTask(tasks.Queue, pending[0].ID))
	deleted := time.Now()
	require.NoError(t, insp.UnpauseQueue(tasks.Queue))

	msgs := s.smtp.WaitMessages(t, 1, reconcile.Grace+3*reconcileInterval+5*time.Second)
	assert.Equal(t, []string{"lost@example.com"}, msgs[0].To)
	t.Logf("mailed %v after its task was deleted (Grace %v, interval %v)", time.Since(deleted).Round(time.Millisecond),
		reconcile.Grace, reconcileInterval)
	assert.Equal(t, 1.0, metric(t, s.wrkAdmin, "verifyq_reconciled_total", map[string]string{"reason": reconcile.ReasonLost}))

	// A sent send: several passes later, still one mail.
	status, _ = s.post(t, "/v1/codes", map[string]string{"email": "sent@example.com"})
	require.Equal(t, http.StatusAccepted, status)
	s.smtp.WaitMessages(t, 2, 10*time.Second)
	time.Sleep(reconcile.Grace + 3*reconcileInterval)
	assert.Equal(t, 2, s.smtp.Count(), "a mailed send is not mailed again")
	assert.Equal(t, 1.0, metric(t, s.wrkAdmin, "verifyq_reconciled_total", map[string]string{"reason": reconcile.ReasonLost}))
	assert.Positive(t, metric(t, s.wrkAdmin, "verifyq_reconcile_checked_total", nil))
}

// steadyLoad posts a send request for a new address of prefix every
// interval, each in its own goroutine, at most limit of them, until stop is
// closed; each outcome is collected. Wait returns them, sorted by when each
// was sent, once every request has its answer.
type steadyLoad struct {
	mu       sync.Mutex
	outcomes []outcome
	wg       sync.WaitGroup
	produced chan struct{}
}

func startLoad(s *stack, prefix string, interval time.Duration, limit int, stop <-chan struct{}) *steadyLoad {
	l := &steadyLoad{produced: make(chan struct{})}
	client := &http.Client{Timeout: 10 * time.Second}
	go func() {
		defer close(l.produced)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := range limit {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				o := outcome{email: fmt.Sprintf("%s%04d@example.com", prefix, i), sent: time.Now()}
				res, err := client.Post("http://"+s.api+"/v1/codes", "application/json",
					strings.NewReader(`{"email":"`+o.email+`"}`))
				if err == nil {
					o.status = res.StatusCode
					_ = res.Body.Close()
				}
				o.done = time.Now()
				l.mu.Lock()
				l.outcomes = append(l.outcomes, o)
				l.mu.Unlock()
			}()
		}
	}()
	return l
}

// wait waits for every request's answer (after stop was closed) and
// returns the outcomes by time sent.
func (l *steadyLoad) wait() []outcome {
	<-l.produced // no wg.Add after this
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	slices.SortFunc(l.outcomes, func(a, b outcome) int { return a.sent.Compare(b.sent) })
	return slices.Clone(l.outcomes)
}

// killFigures is what one run of TestFaultSentinelKillUnderLoad counted.
type killFigures struct {
	requests, accepted, unavailable int
	// lastLag: accepted in the last replicationLag before the kill.
	lastLag int
	// lost: accepted and never mailed; twice: mailed more than once.
	lost, twice []string
	reconciled  float64 // verifyq_reconciled_total{reason="lost"} of the worker
	promotion   time.Duration
	quiescentIn time.Duration // from the end of the load until nothing could mail any more
	slowest     time.Duration
}

// The Sentinel set and the worker of TestFaultSentinelKillUnderLoad.
const (
	// replicationLag is the delay of the replica's link: the writes of the
	// last this much before the kill had not reached the replica.
	replicationLag = 200 * time.Millisecond
	// smtpLatency and killConcurrency make the worker mail 40 a second
	// (4 at once, 100 ms each) under 50 requests a second: it falls behind
	// by about half a second in the two seconds before the kill, so the
	// last sends before the kill are still waiting in the queue, as under
	// a burst or a slow relay.
	smtpLatency     = 100 * time.Millisecond
	killConcurrency = "4"
	// killDownAfter is the sentinels' down-after: the test measures one
	// failover. With the harness's 1 s, which is also the sentinels' ping
	// period, one PING of the newly promoted primary not answered within
	// its second started a second failover once, back to the restarted old
	// primary (its writes until the clients followed were lost in the
	// resync); with 3 s three pings in a row must go unanswered.
	killDownAfter = 3 * time.Second
)

// Done when: on a real Sentinel set whose replica lags (its link holds the
// primary's stream replicationLag, and the kill drops what it holds), the
// primary is SIGKILLed in the middle of a steady load; the sentinels
// (down-after killDownAfter) promote the replica, once and only once, and
// the old primary comes back as its replica (for
// REDIS_MIN_REPLICAS=1 to accept sends again); after the reconciler had
// time, the accepted (202) requests whose mail never reached the SMTP sink
// are counted: none with REDIS_MIN_REPLICAS=1, and the number without,
// logged for OPERATIONS.md.
func TestFaultSentinelKillUnderLoad(t *testing.T) {
	slowFault(t)
	var off, on killFigures
	t.Run("REDIS_MIN_REPLICAS=0", func(t *testing.T) { off = sentinelKillRun(t, 0) })
	t.Run("REDIS_MIN_REPLICAS=1", func(t *testing.T) { on = sentinelKillRun(t, 1) })
	for _, r := range []struct {
		name string
		f    killFigures
	}{{"REDIS_MIN_REPLICAS=0", off}, {"REDIS_MIN_REPLICAS=1", on}} {
		t.Logf("%s: %d requests, %d accepted (%d in the last %v before the kill), %d answered 503; accepted and never mailed: %d %v; "+
			"mailed twice: %d; queued again by the reconciler: %.0f; promotion %v after the kill; nothing left to mail %v after the load; "+
			"slowest reply %v",
			r.name, r.f.requests, r.f.accepted, r.f.lastLag, replicationLag, r.f.unavailable, len(r.f.lost), r.f.lost,
			len(r.f.twice), r.f.reconciled, r.f.promotion.Round(time.Millisecond), r.f.quiescentIn.Round(time.Millisecond),
			r.f.slowest.Round(time.Millisecond))
	}
	assert.Empty(t, on.lost, "with REDIS_MIN_REPLICAS=1 every accepted request is mailed")
}

// sentinelKillRun is one run of TestFaultSentinelKillUnderLoad with
// REDIS_MIN_REPLICAS=minReplicas.
func sentinelKillRun(t *testing.T, minReplicas int) killFigures {
	t.Helper()
	sen := redistest.StartSentinel(t, redistest.WithReplicationDelay(replicationLag), redistest.WithDownAfter(killDownAfter))
	s := startStackOn(t, sen, behindGateway(mergeEnv(noLimits, map[string]string{
		"REDIS_MIN_REPLICAS":         fmt.Sprint(minReplicas),
		"REDIS_MIN_REPLICAS_TIMEOUT": "1s",
		"RECONCILE_INTERVAL":         reconcileInterval.String(),
		"WORKER_CONCURRENCY":         killConcurrency,
		"LOG_LEVEL":                  "info",
	})))
	s.smtp.SetLatency(smtpLatency)
	const (
		interval = 20 * time.Millisecond // 50 requests a second
		maxSends = 1000
	)
	stop := make(chan struct{})
	load := startLoad(s, fmt.Sprintf("kill%d-", minReplicas), interval, maxSends, stop)
	time.Sleep(2 * time.Second) // a steady stream before the kill
	killedAt := time.Now()
	old, err := sen.KillPrimary()
	require.NoError(t, err)
	_, err = sen.WaitFailover(30 * time.Second)
	require.NoError(t, err)
	f := killFigures{promotion: time.Since(killedAt)}
	require.NoError(t, sen.Restart(old))
	require.NoError(t, sen.WaitHealthy(30*time.Second))
	time.Sleep(failoverGrace + 2*time.Second)
	close(stop)
	outcomes := load.wait()
	loadEnded := time.Now()

	var accepted []string
	for _, o := range outcomes {
		f.slowest = max(f.slowest, o.done.Sub(o.sent))
		switch o.status {
		case http.StatusAccepted:
			accepted = append(accepted, o.email)
			if o.done.Before(killedAt) && killedAt.Sub(o.done) <= replicationLag {
				f.lastLag++
			}
		case http.StatusServiceUnavailable:
			f.unavailable++
		default:
			t.Errorf("%s: status %d (0: no reply), want 202 or 503", o.email, o.status)
		}
	}
	f.requests, f.accepted = len(outcomes), len(accepted)

	// Nothing left that could mail: no task waiting or running, no send in
	// the index of open sends, for long enough that the reconciler made
	// passes (and its Grace passed) since.
	rdb := sen.Client(t)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	ctx := context.Background()
	var quietSince time.Time
	require.Eventually(t, func() bool {
		pending, active, retry, _ := queueState(t, insp)
		open := int64(0)
		for n := range delivery.OpenShards {
			c, err := rdb.ZCard(ctx, delivery.OpenKey(n)).Result()
			if err != nil {
				return false
			}
			open += c
		}
		if pending+active+retry > 0 || open > 0 {
			quietSince = time.Time{}
			return false
		}
		if quietSince.IsZero() {
			quietSince = time.Now()
		}
		return time.Since(quietSince) > reconcile.Grace+3*reconcileInterval
	}, 4*time.Minute, 250*time.Millisecond, "the queue and the index of open sends empty")
	f.quiescentIn = quietSince.Sub(loadEnded)

	mailed := map[string]int{}
	for _, m := range s.smtp.Messages() {
		for _, to := range m.To {
			mailed[to]++
		}
	}
	for _, email := range accepted {
		switch mailed[email] {
		case 0:
			f.lost = append(f.lost, email)
		case 1:
		default:
			f.twice = append(f.twice, email)
		}
	}
	f.reconciled = metric(t, s.wrkAdmin, "verifyq_reconciled_total", map[string]string{"reason": reconcile.ReasonLost})
	log, err := sen.FailoverLog()
	require.NoError(t, err)
	require.Len(t, redistest.Switches(log), 1, "one failover, the kill's; the sentinels logged:\n%s", strings.Join(log, "\n"))
	return f
}
