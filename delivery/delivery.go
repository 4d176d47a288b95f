// Package delivery keeps the record of each code's mail and the
// suppression list: what became of a send (queued, sending, retrying,
// sent, undeliverable, expired, and after it was sent bounced or
// complained of), the classes of SMTP failures it records, and the
// addresses refused new sends after a permanent failure.
//
// verifyq's status hash (codes.Keys.StatusKey, in the code's slot) is the
// source of the state, the attempts, the last failure's class and reply
// code and the time the mail was sent, and names the task that is to mail
// the code (the send step writes it); asynq is the source of when the
// next attempt runs: Status asks asynq about the task the status names.
// The index of open sends (open.go) lists the sends whose task has not
// ended, for the reconciler.
package delivery

import (
	"context"
	_ "embed" // the scripts
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/script"
)

// States of a delivery, as Status reports them.
const (
	StateNone          = "none"          // no code was asked for lately
	StateQueued        = "queued"        // the send is queued for a worker
	StateSending       = "sending"       // a worker is sending it
	StateRetrying      = "retrying"      // an attempt failed; another follows
	StateSent          = "sent"          // the mail server accepted the mail
	StateUndeliverable = "undeliverable" // the mail server refused it for good
	StateExpired       = "expired"       // the code expired before it was used
	StateBounced       = "bounced"       // accepted, then a DSN said it failed
	StateComplained    = "complained"    // the recipient reported it as spam
)

// final reports whether state is an end that a gone code does not turn
// into expired: what the status says stays true.
func final(state string) bool {
	return state == StateUndeliverable || state == StateBounced || state == StateComplained
}

// StatusLinger is how long a delivery status outlives its code
// (codes.StatusLinger).
const StatusLinger = codes.StatusLinger

// Status is what became of the mail of an address's code. It never holds
// the code.
type Status struct {
	// State is one of the State constants.
	State string
	// Attempts is the number of send attempts so far.
	Attempts int
	// NextAttemptIn is when the next attempt is due, while retrying, as
	// asynq has it scheduled.
	NextAttemptIn time.Duration
	// LastFailure is the class of the last failed attempt, while retrying
	// or undeliverable.
	LastFailure Class
	// Reply is the SMTP reply code of the last failure (e.g. 451, 550), or
	// 0; never the server's text.
	Reply int
	// SentAt is when the mail server accepted the mail.
	SentAt time.Time
	// DSN is the status code (RFC 3463) of the delivery status
	// notification of a bounced mail, e.g. "5.1.1"; "" when none.
	DSN string
	// Diagnostic is the bounce's diagnostic, masked and bounded
	// (Diagnostic); "" when none.
	Diagnostic string
	// Relay names the relay that accepted it ("primary" or "fallback",
	// tasks.RelayPrimary and tasks.RelayFallback); empty before.
	Relay string
	// SentAfter is the time from the send request to the relay accepting
	// the mail (queue wait, retries and SMTP); zero when not known.
	SentAfter time.Duration
	// ExpiresIn is the code's remaining lifetime; zero when it is gone.
	ExpiresIn time.Duration
}

// Tasks finds a task in asynq (asynq.Inspector).
type Tasks interface {
	GetTaskInfo(queue, id string) (*asynq.TaskInfo, error)
}

var _ Tasks = (*asynq.Inspector)(nil)

// Records reads and writes the delivery status of codes, and the index of
// open sends.
type Records struct {
	rdb   redis.UniversalClient
	keys  codes.Keys
	tasks Tasks
	// Now is the clock of the attempts' start; tests replace it.
	Now func() time.Time
}

// NewRecords returns the records of the codes keys names in rdb; tasks
// answers when a retrying send's next attempt runs.
func NewRecords(rdb redis.UniversalClient, keys codes.Keys, tasks Tasks) *Records {
	return &Records{rdb: rdb, keys: keys, tasks: tasks, Now: time.Now}
}

var (
	//go:embed status.lua
	statusSrc string
	//go:embed begin.lua
	beginSrc string
	//go:embed record.lua
	recordSrc string
	//go:embed report.lua
	reportSrc string
	//go:embed requeue.lua
	requeueSrc string

	readStatus = redis.NewScript(statusSrc)
	begin      = redis.NewScript(beginSrc)
	record     = redis.NewScript(recordSrc)
	report     = redis.NewScript(reportSrc)
	requeue    = redis.NewScript(requeueSrc)
)

// Status reads the delivery status of id's code in one round trip, and
// while it is retrying asks asynq when the next attempt runs.
func (r *Records) Status(ctx context.Context, id codes.ID, now time.Time) (Status, error) {
	res, err := readStatus.Run(ctx, r.rdb, []string{r.keys.Key(id), r.keys.StatusKey(id)}).Slice()
	if err != nil {
		return Status{}, fmt.Errorf("read status: %w", err)
	}
	if len(res) != 2 {
		return Status{}, fmt.Errorf("read status: unexpected reply of %d values", len(res))
	}
	h := fields(res[0])
	ms, _ := res[1].(int64)
	st := Status{
		State: h["state"], Reply: atoi(h["reply"]), Attempts: atoi(h["attempts"]), LastFailure: Class(h["failure"]),
		DSN: h["dsn"], Diagnostic: h["diagnostic"],
	}
	if ms, _ := strconv.ParseInt(h["sent_at"], 10, 64); ms > 0 {
		st.SentAt = time.UnixMilli(ms)
	}
	st.Relay = h["relay"]
	if ms, err := strconv.ParseInt(h["sent_after_ms"], 10, 64); err == nil && ms >= 0 {
		st.SentAfter = time.Duration(ms) * time.Millisecond
	}
	if st.State == StateRetrying && h["task"] != "" {
		if st.NextAttemptIn, err = r.nextAttemptIn(h["queue"], h["task"], now); err != nil {
			return Status{}, err
		}
	}
	switch {
	case ms > 0:
		st.ExpiresIn = time.Duration(ms) * time.Millisecond
	case ms == -1: // a key without expiry: alive
	default: // the code is gone
		if st.State != "" && !final(st.State) {
			st.State = StateExpired
		}
	}
	if st.State == "" {
		st.State = StateNone
	}
	return st, nil
}

// fields reads a flat field, value list (HGETALL's reply) as a map.
func fields(reply any) map[string]string {
	flat, _ := reply.([]any)
	h := make(map[string]string, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		k, _ := flat[i].(string)
		v, _ := flat[i+1].(string)
		h[k] = v
	}
	return h
}

// nextAttemptIn is how long until asynq runs task id of queue again; zero
// when it is due, running, or no longer asynq's to run.
func (r *Records) nextAttemptIn(queue, id string, now time.Time) (time.Duration, error) {
	info, err := r.tasks.GetTaskInfo(queue, id)
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read status: next attempt: %w", err)
	}
	if info.NextProcessAt.IsZero() {
		return 0, nil
	}
	return max(info.NextProcessAt.Sub(now), 0), nil
}

// Task names an asynq task: its ID and its queue.
type Task struct {
	ID, Queue string
}

// Attempt is the start of one send attempt.
type Attempt struct {
	// Live is the code to mail, unless Done.
	Live codes.Live
	// Done is true when there is nothing to mail: the task already sent
	// its mail (AlreadySent), another task mails it in its place
	// (Superseded), or the code is gone.
	Done bool
	// AlreadySent is true when this task's mail was accepted before.
	AlreadySent bool
	// Superseded is true when the reconciler queued another task in this
	// one's place (Requeue), having found it held active by asynq with no
	// worker on it. That one mails the code.
	Superseded bool
}

// Begin starts an attempt of task (empty ID: no dedup) to mail id's code,
// in one round trip: it finds whether the task already sent its mail or
// was replaced by another, reads the code, and marks the status sending by
// task. ttl is the configured lifetime, for a status key that
// has none yet.
func (r *Records) Begin(ctx context.Context, id codes.ID, task Task, ttl time.Duration) (Attempt, error) {
	res, err := begin.Run(ctx, r.rdb, []string{r.keys.Key(id), r.keys.StatusKey(id)},
		task.ID, task.Queue, (ttl + StatusLinger).Milliseconds(), r.Now().UnixMilli()).Slice()
	if err != nil {
		return Attempt{}, fmt.Errorf("begin send: %w", err)
	}
	switch {
	case len(res) == 1 && res[0] == "sent":
		return Attempt{Done: true, AlreadySent: true}, nil
	case len(res) == 1 && res[0] == "superseded":
		return Attempt{Done: true, Superseded: true}, nil
	case len(res) == 1:
		return Attempt{Done: true}, nil
	case len(res) != 3:
		return Attempt{}, fmt.Errorf("begin send: unexpected reply of %d values", len(res))
	}
	code, _ := res[1].(string)
	left, _ := res[2].(int64)
	return Attempt{Live: codes.LiveOf(code, left)}, nil
}

// Acceptance is a relay taking a mail: when, which relay, and how long
// after the send request.
type Acceptance struct {
	At time.Time
	// Relay names the relay (Status.Relay); empty for none known.
	Relay string
	// SinceRequest is the time from the send request to At; zero when not
	// known (a task queued without its request time).
	SinceRequest time.Duration
}

// Sent records that a relay accepted task taskID's mail as a says, in the
// one script of every record: the status says sent, by which relay and
// how long after the request (unless a later send owns the status), a
// re-run of the task will not mail again, and the send leaves the index
// of open sends in the same round trip.
func (r *Records) Sent(ctx context.Context, id codes.ID, taskID string, a Acceptance) error {
	after := ""
	if a.SinceRequest > 0 {
		after = strconv.FormatInt(a.SinceRequest.Milliseconds(), 10)
	}
	own := ""
	if taskID != "" {
		own = "sent:" + taskID
	}
	return r.record(ctx, id, taskID, own, true,
		"state", StateSent, "sent_at", a.At.UnixMilli(), "relay", a.Relay, "sent_after_ms", after, "failure", "", "reply", "")
}

// Retrying records a failed attempt of task taskID that asynq will retry
// (when: see Status).
func (r *Records) Retrying(ctx context.Context, id codes.ID, taskID string, failure error) error {
	return r.record(ctx, id, taskID, "", false, "state", StateRetrying, "failure", string(ClassOf(failure)), "reply", replyField(failure))
}

// Failed records a failed attempt of task taskID after which the task is
// given up: the status says undeliverable when the failure's class is
// (Handling), else keeps its state; the send leaves the index of open
// sends.
func (r *Records) Failed(ctx context.Context, id codes.ID, taskID string, failure error) error {
	class := ClassOf(failure)
	if !class.Handling().Undeliverable {
		return r.record(ctx, id, taskID, "", true, "failure", string(class), "reply", replyField(failure))
	}
	return r.record(ctx, id, taskID, "", true, "state", StateUndeliverable, "failure", string(class), "reply", replyField(failure))
}

// Report is what came back about a mail after it was sent: a bounce (a
// delivery status notification that says it failed) or a complaint (a
// feedback report).
type Report struct {
	// State is StateBounced or StateComplained.
	State string
	// DSN is the notification's status code, e.g. "5.1.1" ("": none).
	DSN string
	// Diagnostic is its diagnostic text; Reported keeps it as Diagnostic
	// has it.
	Diagnostic string
}

// Reported records rep in the status of id's code, if the status still
// follows the send sendID names (returnpath.SendID of its task) and
// reports whether it did: a status that is gone, or that a later send
// took over, is left as it is.
func (r *Records) Reported(ctx context.Context, id codes.ID, sendID string, rep Report) (bool, error) {
	task, err := r.ReportedTask(ctx, id, sendID, rep)
	return task != "", err
}

// ReportedTask is Reported that names the task of the send it recorded
// rep for ("" when it did not), for the events.
func (r *Records) ReportedTask(ctx context.Context, id codes.ID, sendID string, rep Report) (string, error) {
	if rep.State != StateBounced && rep.State != StateComplained {
		return "", fmt.Errorf("record report: %q is not a state of a report", rep.State)
	}
	if rep.DSN != "" && !enhancedCodeRE.MatchString(rep.DSN) {
		return "", fmt.Errorf("record report: %q is no enhanced status code", rep.DSN)
	}
	task, err := report.Run(ctx, r.rdb, []string{r.keys.StatusKey(id)}, sendID, rep.State, rep.DSN, Diagnostic(rep.Diagnostic)).Text()
	if err != nil {
		return "", fmt.Errorf("record report: %w", err)
	}
	return task, nil
}

// record writes the end of an attempt of task taskID (record.lua): the
// task's own field own ("" none) set to 1, and pairs; when the task ends
// with it, it takes the send out of the index of open sends, in the same
// pipeline.
func (r *Records) record(ctx context.Context, id codes.ID, taskID, own string, ends bool, pairs ...any) error {
	calls := []script.Call{{Script: record, Keys: []string{r.keys.StatusKey(id)}, Args: append([]any{taskID, own, "1"}, pairs...)}}
	if ends && taskID != "" {
		calls = append(calls, OpenSend{Task: taskID, ID: id}.Remove())
	}
	if _, err := script.Run(ctx, r.rdb, calls...); err != nil {
		return fmt.Errorf("record delivery status: %w", err)
	}
	return nil
}

func replyField(err error) string {
	if c := ReplyCode(err); c > 0 {
		return strconv.Itoa(c)
	}
	return ""
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// ExpiredUnused reports, for id's code mailed by task (events'
// expiry check): the delivery state its status holds, whether the code
// expired unused, and how long it has left while it lives. Unused means
// gone while its status still names task and says no wrong code used up
// its attempts: a verified code's status is deleted with it, and a later
// send takes the status over. The time left is reported only while the
// status names task. One round trip.
func (r *Records) ExpiredUnused(ctx context.Context, id codes.ID, task string) (string, bool, time.Duration, error) {
	res, err := readStatus.Run(ctx, r.rdb, []string{r.keys.Key(id), r.keys.StatusKey(id)}).Slice()
	if err != nil {
		return "", false, 0, fmt.Errorf("read status: %w", err)
	}
	if len(res) != 2 {
		return "", false, 0, fmt.Errorf("read status: unexpected reply of %d values", len(res))
	}
	h := fields(res[0])
	ms, _ := res[1].(int64)
	switch {
	case h["task"] != task, ms == -1, h[codes.ExhaustedField] != "":
		return h["state"], false, 0, nil
	case ms > 0:
		return h["state"], false, time.Duration(ms) * time.Millisecond, nil
	}
	return h["state"], true, 0, nil
}
