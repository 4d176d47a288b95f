package e2e

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/tasks"
)

func (s *stack) inspector(t *testing.T) *asynq.Inspector {
	t.Helper()
	return asynq.NewInspectorFromRedisClient(s.redis.UniversalClient(t))
}

func archived(t *testing.T, insp *asynq.Inspector) []*asynq.TaskInfo {
	t.Helper()
	infos, err := insp.ListArchivedTasks(tasks.Queue)
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return nil
	}
	require.NoError(t, err)
	return infos
}

// A 5xx reply is permanent: the task is archived at once, never retried.
func TestSMTP550IsArchivedWithoutRetry(t *testing.T) {
	t.Parallel()
	s := startStack(t, nil)
	s.smtp.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, EnhancedCode: [3]int{5, 1, 1}})

	status, _ := s.post(t, "/v1/codes", map[string]string{"email": "nobody@example.com"})
	require.Equal(t, http.StatusAccepted, status)
	insp := s.inspector(t)
	require.Eventually(t, func() bool { return len(archived(t, insp)) == 1 }, 10*time.Second, 50*time.Millisecond)
	info := archived(t, insp)[0]
	assert.Zero(t, info.Retried, "not retried")
	assert.Contains(t, info.LastErr, "550")
	code, _ := s.code(t, "nobody@example.com")
	assert.NotContains(t, info.LastErr, code)
	assert.Zero(t, s.smtp.Count())
}

// 4xx replies and a server that never answers are retried until the mail
// goes through.
func TestTransientFaultsAreRetried(t *testing.T) {
	t.Parallel()
	tests := map[string]smtptest.Fault{
		"451 twice":       {Stage: smtptest.StageData, Code: 451, Times: 2},
		"hung at connect": {Stage: smtptest.StageConnect, Hang: true, Times: 1},
		"hung at DATA":    {Stage: smtptest.StageData, Hang: true, Times: 1},
	}
	for name, fault := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := startStack(t, nil)
			s.smtp.SetFault(fault)
			status, _ := s.post(t, "/v1/codes", map[string]string{"email": "retry@example.com"})
			require.Equal(t, http.StatusAccepted, status)
			msgs := s.smtp.WaitMessages(t, 1, 20*time.Second)
			code, _ := s.code(t, "retry@example.com")
			assert.Contains(t, msgs[0].Text, code)
			assert.Contains(t, s.worker.logs.String(), "will retry")
			assert.Empty(t, archived(t, s.inspector(t)))
		})
	}
}
