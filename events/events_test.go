package events_test

import (
	"bufio"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/events"
)

// Every type is declared once, carries only fields Data has, and Data
// has no field no type carries, nor any for a code.
func TestTypesAreDeclaredOnce(t *testing.T) {
	t.Parallel()
	tags := map[string]bool{}
	dt := reflect.TypeFor[events.Data]()
	for i := range dt.NumField() {
		name, _, _ := strings.Cut(dt.Field(i).Tag.Get("json"), ",")
		assert.NotContains(t, strings.ToLower(name), "code", "no field for a code")
		tags[name] = true
	}
	used := map[string]bool{}
	seen := map[events.Type]bool{}
	for _, s := range events.Types {
		assert.False(t, seen[s.Type], "%s declared twice", s.Type)
		seen[s.Type] = true
		assert.Contains(t, []string{"enqueuer", "worker"}, s.By)
		assert.NotEmpty(t, s.When)
		for _, f := range s.Data {
			assert.True(t, tags[f], "%s: %s is no field of Data", s.Type, f)
			used[f] = true
		}
	}
	for f := range tags {
		assert.True(t, used[f], "Data's %s is carried by no type", f)
	}
	assert.Len(t, events.Types, 10)
}

// docs/API.md's table of events has a row for every type, naming each
// field it carries, and no other type.
func TestEveryTypeIsInTheAPIReference(t *testing.T) {
	t.Parallel()
	f, err := os.Open("../docs/API.md")
	require.NoError(t, err)
	defer f.Close()
	rows := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "| `code."); ok {
			rows["code."+rest[:strings.Index(rest, "`")]] = line
		}
		if rest, ok := strings.CutPrefix(line, "| `relay."); ok {
			rows["relay."+rest[:strings.Index(rest, "`")]] = line
		}
	}
	for _, s := range events.Types {
		row, ok := rows[string(s.Type)]
		if !assert.True(t, ok, "no row for %s", s.Type) {
			continue
		}
		for _, field := range s.Data {
			assert.Contains(t, row, "`"+field+"`", "%s's row names %s", s.Type, field)
		}
		delete(rows, string(s.Type))
	}
	assert.Empty(t, rows, "rows for types that do not exist")
}

// The webhook-id is the fact's: the same type and fact give the same id,
// another of either another.
func TestIDIsTheFacts(t *testing.T) {
	t.Parallel()
	a := events.Event{Type: events.CodeSent, Fact: "task-1", At: time.Now()}
	b := events.Event{Type: events.CodeSent, Fact: "task-1", At: time.Now().Add(time.Hour), Data: events.Data{Relay: "fallback"}}
	assert.Equal(t, a.ID(), b.ID())
	assert.Regexp(t, `^msg_[0-9a-f]{32}$`, a.ID())
	assert.NotEqual(t, a.ID(), events.Event{Type: events.CodeVerified, Fact: "task-1"}.ID())
	assert.NotEqual(t, a.ID(), events.Event{Type: events.CodeSent, Fact: "task-2"}.ID())
}

func TestBody(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 3, 4, 5, 6, 7, 891_000_000, time.FixedZone("x", 3600))
	b, err := events.Event{Type: events.CodeBounced, Fact: "t", At: at,
		Data: events.Data{Email: "a@example.com", TaskID: "t", DSN: "5.1.1"}}.Body()
	require.NoError(t, err)
	assert.JSONEq(t, `{"type":"code.bounced","timestamp":"2025-03-04T04:06:07.891Z",
		"data":{"email":"a@example.com","task_id":"t","dsn":"5.1.1"}}`, string(b))
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	assert.Len(t, m, 3, "type, timestamp and data, as Standard Webhooks has them")
}

// The retries back off from 10 s to 4 h, within ±10 %, and span
// RetryWindow.
func TestRetryDelay(t *testing.T) {
	t.Parallel()
	mid := func() float64 { return 0.5 }
	var total time.Duration
	for n := range events.MaxRetry {
		d := events.RetryDelayWith(n, mid)
		total += d
		if n > 0 {
			assert.GreaterOrEqual(t, d, events.RetryDelayWith(n-1, mid))
		}
		assert.Equal(t, time.Duration(float64(d)*0.9), events.RetryDelayWith(n, func() float64 { return 0 }))
	}
	assert.Equal(t, events.RetryBase, events.RetryDelayWith(0, mid))
	assert.Equal(t, events.RetryCap, events.RetryDelayWith(events.MaxRetry-1, mid))
	assert.Equal(t, events.RetryCap, events.RetryDelayWith(100, mid), "no overflow")
	assert.Equal(t, events.RetryWindow, total)
	assert.True(t, total > 24*time.Hour && total < 3*24*time.Hour, "%s", total)
	assert.True(t, slices.Contains(events.Results, events.ResultDelivered))
}
