package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/grpctest"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/tasks"
)

// failoverGrace is how long after the sentinels promote the replica the
// enqueuer may still answer 503: its failover client learns of the new
// primary on the next error and dials it.
const failoverGrace = 5 * time.Second

// outcome is one request of a steady stream.
type outcome struct {
	email      string
	status     int // 0: no HTTP reply
	sent, done time.Time
}

// Sentinel failover under load: requests arrive over HTTP at a steady,
// bounded rate while the primary is killed. The enqueuer answers 202 or
// 503, 503 only between the kill and shortly after the promotion; it
// resumes on the promoted replica; the worker keeps running; every
// accepted request's mail arrives, once.
func TestSentinelFailoverEndToEnd(t *testing.T) {
	modeOnly(t, redistest.ModeSentinel)
	t.Parallel()
	sen := redistest.StartSentinel(t) // its own: the test kills its primary
	// Up to 250 requests in flight (5 s each at 50 a second) from one
	// gateway: bounded by MAX_CONNECTIONS alone.
	s := startStackOn(t, sen, behindGateway(noLimits))

	const (
		interval = 20 * time.Millisecond // 50 requests a second
		maxSends = 1000                  // the bound of the stream: 20 s
	)
	stop := make(chan struct{})
	load := startLoad(s, "failover", interval, maxSends, stop)

	time.Sleep(time.Second) // a steady stream before the kill
	killedAt := time.Now()
	old, err := sen.KillPrimary()
	require.NoError(t, err)
	promoted, err := sen.WaitFailover(30 * time.Second)
	require.NoError(t, err)
	promotedAt := time.Now()
	t.Logf("killed the primary %s; the sentinels promoted %s after %v", old, promoted, promotedAt.Sub(killedAt).Round(time.Millisecond))
	time.Sleep(failoverGrace + 2*time.Second) // the grace, then a stretch that must be all 202
	close(stop)
	outcomes := load.wait()

	var accepted []string
	var first503, last503 time.Time // when sent
	var slowest time.Duration
	n503 := 0
	for _, o := range outcomes {
		slowest = max(slowest, o.done.Sub(o.sent))
		switch o.status {
		case http.StatusAccepted:
			accepted = append(accepted, o.email)
		case http.StatusServiceUnavailable:
			n503++
			if first503.IsZero() {
				first503 = o.sent
			}
			last503 = o.sent
			assert.False(t, o.done.Before(killedAt), "%s: 503 before the kill", o.email)
			assert.True(t, o.sent.Before(promotedAt.Add(failoverGrace)),
				"%s: 503 for a request sent %v after the promotion", o.email, o.sent.Sub(promotedAt))
		default:
			t.Errorf("%s: status %d (0: no reply), want 202 or 503", o.email, o.status)
		}
	}
	if n503 > 0 {
		t.Logf("%d requests, %d accepted, %d answered 503: those sent from %v to %v after the kill (promotion at %v); slowest reply %v",
			len(outcomes), len(accepted), n503, first503.Sub(killedAt).Round(time.Millisecond),
			last503.Sub(killedAt).Round(time.Millisecond), promotedAt.Sub(killedAt).Round(time.Millisecond),
			slowest.Round(time.Millisecond))
	} else {
		t.Logf("%d requests, all accepted (promotion at %v); slowest reply %v", len(outcomes),
			promotedAt.Sub(killedAt).Round(time.Millisecond), slowest.Round(time.Millisecond))
	}
	// Resumed: everything sent from the end of the grace on was accepted,
	// and that is a stretch of requests, not none.
	after := 0
	for _, o := range outcomes {
		if o.sent.After(promotedAt.Add(failoverGrace)) {
			after++
			assert.Equal(t, http.StatusAccepted, o.status, "%s, sent %v after the promotion", o.email, o.sent.Sub(promotedAt))
		}
	}
	assert.Greater(t, after, 50, "requests after the failover")

	// Both binaries kept running, and every accepted request is mailed once.
	for _, p := range []*proc{s.enqueuer, s.worker} {
		select {
		case <-p.exited:
			t.Fatalf("%s exited during the failover: %v", p.cmd.Path, p.err)
		default:
		}
	}
	s.smtp.WaitMessages(t, len(accepted), 60*time.Second)
	time.Sleep(time.Second) // a repeat would arrive now
	mailed := map[string]int{}
	for _, m := range s.smtp.Messages() {
		for _, to := range m.To {
			mailed[to]++
		}
	}
	for _, email := range accepted {
		assert.Equal(t, 1, mailed[email], "%s: accepted, mailed once", email)
	}
}

// Redis Cluster: 1,000 sends over HTTP, distinct addresses and the limits
// off, with QUEUE_SHARDS=3. Every one is mailed; the codes live on all
// three masters; the old gateway's cluster-aware read, redis-cli -c GET
// code_<email>, finds each code that was mailed; verify works; the old
// gRPC call works.
func TestClusterEndToEnd(t *testing.T) {
	modeOnly(t, redistest.ModeCluster)
	t.Parallel()
	cl := redistest.StartCluster(t) // its own: the test counts keys per master
	s := startStackOn(t, cl, mergeEnv(noLimits, map[string]string{"QUEUE_SHARDS": "3", "WORKER_CONCURRENCY": "20"}))
	ctx := context.Background()
	rdb := cl.Client(t)
	for _, q := range tasks.Queues(3) {
		slot, err := rdb.ClusterKeySlot(ctx, "{"+q+"}").Result()
		require.NoError(t, err)
		t.Logf("queue %s: slot %d", q, slot)
	}

	const n = 1000
	emails := make([]string, n)
	for i := range emails {
		emails[i] = fmt.Sprintf("spread%04d@example.com", i)
	}
	work := make(chan string)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// assert, not s.post's require: this is not the test's
			// goroutine.
			for email := range work {
				res, err := http.Post("http://"+s.api+"/v1/codes", "application/json", strings.NewReader(`{"email":"`+email+`"}`))
				if !assert.NoError(t, err, email) {
					continue
				}
				body, _ := io.ReadAll(res.Body)
				_ = res.Body.Close()
				assert.Equal(t, http.StatusAccepted, res.StatusCode, "%s: %s", email, body)
			}
		}()
	}
	began := time.Now()
	for _, e := range emails {
		work <- e
	}
	close(work)
	wg.Wait()
	t.Logf("%d sends accepted in %v", n, time.Since(began).Round(time.Millisecond))
	msgs := s.smtp.WaitMessages(t, n, 120*time.Second)
	t.Logf("%d mails delivered %v after the first send", n, time.Since(began).Round(time.Millisecond))
	text := map[string]string{}
	for _, m := range msgs {
		require.Len(t, m.To, 1)
		_, dup := text[m.To[0]]
		assert.False(t, dup, "%s mailed once", m.To[0])
		text[m.To[0]] = m.Text
	}
	for _, e := range emails {
		assert.Contains(t, text, e, "mailed")
	}

	// The codes on every master: each master's own count of code keys.
	masters, err := cl.Masters()
	require.NoError(t, err)
	require.Len(t, masters, redistest.ClusterMasters)
	total := 0
	for _, addr := range masters {
		keys := redisCLI(t, addr, "--scan", "--pattern", "code_*")
		count := len(strings.Fields(keys))
		t.Logf("master %s: %d code keys", addr, count)
		assert.Positive(t, count, "codes on master %s", addr)
		total += count
	}
	assert.Equal(t, n, total, "one code key per address")

	// The old gateway's read: redis-cli -c follows the MOVED reply to the
	// master of the key's slot, as a cluster-aware client does.
	for i := 0; i < n; i += n / 40 {
		code := strings.TrimSpace(redisCLI(t, masters[0], "-c", "GET", "code_"+emails[i]))
		require.NotEmpty(t, code, "code_%s", emails[i])
		assert.Contains(t, text[emails[i]], code, "the code the gateway reads is the one mailed to %s", emails[i])
	}

	// Verify works, and a code is single use.
	for _, e := range emails[:5] {
		code := strings.TrimSpace(redisCLI(t, masters[0], "-c", "GET", "code_"+e))
		status, body := s.post(t, "/v1/codes/verify", map[string]string{"email": e, "code": code})
		assert.Equal(t, http.StatusOK, status, "%s: %v", e, body)
		assert.Empty(t, strings.TrimSpace(redisCLI(t, masters[0], "-c", "GET", "code_"+e)), "used up")
	}

	// The old gateway's gRPC call.
	conn := grpctest.Dial(t, s.grpc)
	const legacy = "Legacy.Gate@Example.com"
	rsp, err := grpctest.GetVarifyCode(ctx, t, conn, legacy)
	require.NoError(t, err)
	assert.Equal(t, grpctest.LegacyReply{Error: 0, Email: legacy}, rsp)
	all := s.smtp.WaitMessages(t, n+1, 15*time.Second)
	code := strings.TrimSpace(redisCLI(t, masters[0], "-c", "GET", "code_"+legacy))
	require.NotEmpty(t, code)
	assert.Equal(t, []string{legacy}, all[n].To)
	assert.Contains(t, all[n].Text, code)
}

// redisCLI runs the real redis-cli against the node at addr with args and
// returns its output.
func redisCLI(t *testing.T, addr string, args ...string) string {
	t.Helper()
	host, port, ok := strings.Cut(addr, ":")
	require.True(t, ok, addr)
	_, err := strconv.Atoi(port)
	require.NoError(t, err, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "redis-cli", append([]string{"-h", host, "-p", port}, args...)...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	require.NoError(t, cmd.Run(), "redis-cli %v: %s", args, stderr.String())
	return out.String()
}
