package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/verifyq/verifyq/internal/grpctest"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/internal/smtptest"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
	"github.com/verifyq/verifyq/tasks"
)

// statusOf reads GET /v1/codes/status.
func (s *stack) statusOf(t *testing.T, email string) map[string]any {
	t.Helper()
	res, err := http.Get("http://" + s.api + "/v1/codes/status?email=" + url.QueryEscape(email))
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	var m map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&m))
	return m
}

// A send shows queued or sent right after; with the mail server answering
// 550 the status turns undeliverable, the next send to that address (its
// domain in any case) is refused on every edge without a mail, and lifting
// the suppression lets a send through.
func TestUndeliverableEndToEnd(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{"RESEND_COOLDOWN": "0", "MAILBOX_GAP": "0"})
	status, body := s.post(t, "/v1/codes", map[string]string{"email": "ok@example.com"})
	require.Equal(t, http.StatusAccepted, status, body)
	assert.Contains(t, []any{"queued", "sending", "sent"}, s.statusOf(t, "ok@example.com")["state"])
	s.smtp.WaitMessages(t, 1, 10*time.Second)
	require.Eventually(t, func() bool { return s.statusOf(t, "ok@example.com")["state"] == "sent" }, 5*time.Second, 50*time.Millisecond)

	s.smtp.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, EnhancedCode: [3]int{5, 1, 1}})
	status, body = s.post(t, "/v1/codes", map[string]string{"email": "dead@example.com"})
	require.Equal(t, http.StatusAccepted, status, body)
	var st map[string]any
	require.Eventually(t, func() bool {
		st = s.statusOf(t, "dead@example.com")
		return st["state"] == "undeliverable"
	}, 10*time.Second, 50*time.Millisecond)
	assert.EqualValues(t, 550, st["reply"])
	assert.Equal(t, "recipient_refused", st["last_failure"])
	s.smtp.ClearFault()

	status, body = s.post(t, "/v1/codes", map[string]string{"email": "dead@example.com"})
	assert.Equal(t, http.StatusUnprocessableEntity, status)
	assert.Equal(t, "undeliverable", body["error"].(map[string]any)["code"])
	conn := grpctest.Dial(t, s.grpc)
	rsp, err := grpctest.GetVarifyCode(context.Background(), t, conn, "dead@example.com")
	require.NoError(t, err)
	assert.Equal(t, int32(5), rsp.Error)
	_, err = verifyqv1.NewCodeServiceClient(conn).SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "dead@Example.COM"})
	st2 := grpcstatus.Convert(err)
	assert.Equal(t, codes.FailedPrecondition, st2.Code())
	var reason string
	for _, d := range st2.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			reason = info.GetReason()
		}
	}
	assert.Equal(t, "UNDELIVERABLE", reason)
	time.Sleep(300 * time.Millisecond)
	assert.Equal(t, 1, s.smtp.Count(), "nothing more was mailed")

	req, err := http.NewRequest(http.MethodDelete, "http://"+s.enqAdmin+"/suppressions?email=dead@example.com", nil)
	require.NoError(t, err)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	status, body = s.post(t, "/v1/codes", map[string]string{"email": "dead@example.com"})
	require.Equal(t, http.StatusAccepted, status, body)
	msgs := s.smtp.WaitMessages(t, 2, 10*time.Second)
	assert.Equal(t, []string{"dead@example.com"}, msgs[1].To)
}

// Redis restarts (with its append-only file) while mails are in flight:
// every accepted request is mailed, and none twice, although the queue
// loses the acknowledgement of the sends that finished while Redis was down
// and runs those tasks again once their lease runs out.
func TestFaultRedisRestartRepeatsNoMail(t *testing.T) {
	slowFault(t)
	singleOnly(t)
	s := startStack(t, mergeEnv(noLimits, map[string]string{"WORKER_CONCURRENCY": "10"}), redistest.WithAOF())
	s.smtp.SetLatency(700 * time.Millisecond)
	const n = 20
	for i := range n {
		status, body := s.post(t, "/v1/codes", map[string]string{"email": fmt.Sprintf("blip%d@example.com", i)})
		require.Equal(t, http.StatusAccepted, status, body)
	}
	time.Sleep(300 * time.Millisecond) // the first ten are in flight
	s.server(t).Stop()
	// Longer than asynq's 30 s lease: the queue gives up acknowledging the
	// sends that finished meanwhile, and runs those tasks again later.
	time.Sleep(35 * time.Second)
	require.NoError(t, s.server(t).Restart())
	t.Log("Redis restarted")

	s.smtp.WaitMessages(t, n, 60*time.Second)
	insp := asynq.NewInspectorFromRedisClient(s.redis.UniversalClient(t))
	require.Eventually(t, func() bool {
		q, err := insp.GetQueueInfo(tasks.Queue)
		return err == nil && q.Active == 0 && q.Pending == 0 && q.Retry == 0 && q.Scheduled == 0
	}, 3*time.Minute, time.Second, "every task done, re-runs after a lost acknowledgement included")
	time.Sleep(time.Second)

	perAddress := map[string]int{}
	for _, m := range s.smtp.Messages() {
		for _, to := range m.To {
			perAddress[to]++
		}
	}
	assert.Len(t, perAddress, n, "no accepted request lost its mail")
	for to, c := range perAddress {
		assert.Equal(t, 1, c, "%s mailed once", to)
	}
	dups := metric(t, s.wrkAdmin, "verifyq_sends_total", map[string]string{"outcome": "duplicate"})
	t.Logf("tasks that ran again after their mail was accepted, and mailed nothing: %v", dups)
	assert.Positive(t, dups, "the restart made the queue run sent tasks again (else this test shows nothing)")
}

// mergeEnv returns the union of envs, later ones winning.
func mergeEnv(envs ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, e := range envs {
		for k, v := range e {
			out[k] = v
		}
	}
	return out
}

// QUEUE_SHARDS spreads the tasks over mail-0..mail-N-1; the workers take
// every shard, and every mail arrives.
func TestQueueShardsEndToEnd(t *testing.T) {
	t.Parallel()
	s := startStack(t, mergeEnv(noLimits, map[string]string{"QUEUE_SHARDS": "3"}))
	s.worker.stop(t) // let the tasks pile up, to see where they went
	for i := range 30 {
		status, body := s.post(t, "/v1/codes", map[string]string{"email": fmt.Sprintf("shard%d@example.com", i)})
		require.Equal(t, http.StatusAccepted, status, body)
	}
	insp := asynq.NewInspectorFromRedisClient(s.redis.UniversalClient(t))
	for _, q := range tasks.Queues(3) {
		info, err := insp.GetQueueInfo(q)
		require.NoError(t, err, q)
		assert.Positive(t, info.Pending, "tasks on %s", q)
	}
	s.startWorker(t, s.wrkEnv)
	s.smtp.WaitMessages(t, 30, 20*time.Second)
}
