package bounce_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/bounce"
	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/events"
	"github.com/verifyq/verifyq/internal/eventstest"
	"github.com/verifyq/verifyq/internal/logtest"
)

// A bounce recorded in its send's status emits code.bounced with the DSN's
// status code and the send's task, the same report taken again the same
// webhook-id; a complaint emits code.complained; a forged report nothing.
func TestReportsEmitEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	log := &eventstest.Recorder{}
	logger, _ := logtest.New(t)
	intake, err := bounce.New(bounce.Config{Path: e.path, Purposes: []string{"login"}, Records: e.parts.Records,
		Events: log, Logger: logger, Now: func() time.Time { return e.now }})
	require.NoError(t, err)
	handle := func(rcpt string, msg []byte) []bounce.Result {
		res, err := intake.Handle(context.Background(), []string{rcpt}, bytes.NewReader(msg))
		require.NoError(t, err)
		return res
	}

	id := codes.ID{Email: "nobody@dest.test", Purpose: "login"}
	rp := e.send(t, id, "task-b")
	for range 2 {
		assert.Equal(t, []bounce.Result{bounce.ResultBounced}, handle(rp, sample(t, "postfix-user-unknown.eml", rp)))
	}
	grace := codes.ID{Email: "grace@webmail.test"}
	rp2 := e.send(t, grace, "task-c")
	assert.Equal(t, []bounce.Result{bounce.ResultComplained}, handle("bounces@bounce.test", sample(t, "arf-yahoo.eml", rp2)))
	assert.Equal(t, []bounce.Result{bounce.ResultForged}, handle(rp, sample(t, "postfix-no-domain.eml", rp)),
		"a token of another address")

	evs := log.Events()
	require.Len(t, evs, 3)
	assert.Equal(t, events.CodeBounced, evs[0].Type)
	assert.Equal(t, events.Data{Email: id.Email, Purpose: "login", TaskID: "task-b", DSN: "5.1.1"}, evs[0].Data)
	assert.Equal(t, evs[0].ID(), evs[1].ID(), "the same report again: the same webhook-id")
	assert.Equal(t, events.CodeComplained, evs[2].Type)
	assert.Equal(t, events.Data{Email: grace.Email, TaskID: "task-c"}, evs[2].Data)
}
