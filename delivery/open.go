package delivery

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/script"
)

// The index of open sends: every admitted send is an entry from its
// admission until its task ends it (mailed, or given up), so that a send
// whose task was lost can be found without reading the whole keyspace
// (package reconcile reads it). It is OpenShards sorted sets, each in a
// Redis Cluster slot of its own (tag open:<n>), so that the index spreads
// over a cluster's primaries and no key of it grows with all sends. A
// send's entry is in the shard of its code (OpenSend.Shard), scored by
// the time after which its code is surely gone (its admission plus the
// purpose's lifetime): the entries past it are dropped unread.

// OpenShards is the number of shards of the index of open sends: enough
// to spread it over a cluster's primaries, few enough for a reader to
// visit every shard each run.
const OpenShards = 16

// OpenKey is the key of shard n (0 to OpenShards-1) of the index.
func OpenKey(n int) string { return "verifyq:{open:" + strconv.Itoa(n) + "}:sends" }

// OpenSend is one entry of the index: the task that is to mail a code.
type OpenSend struct {
	Task string
	ID   codes.ID
}

// Shard is the shard of s: by its code, so that every send of a code is
// in one shard.
func (s OpenSend) Shard() int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(s.ID.Purpose + ":" + s.ID.Email))
	return int(h.Sum32() % OpenShards)
}

// Key is the key of s's shard.
func (s OpenSend) Key() string { return OpenKey(s.Shard()) }

// member is s as the index holds it: "<task>:<purpose>:<email>". No task
// ID of verifyq's (hex) and no purpose (codes.ValidatePurpose) holds a
// colon.
func (s OpenSend) member() string { return s.Task + ":" + s.ID.Purpose + ":" + s.ID.Email }

// parseOpenSend reads a member of the index; ok is false for anything that
// is not one.
func parseOpenSend(m string) (OpenSend, bool) {
	task, rest, ok1 := strings.Cut(m, ":")
	purpose, email, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 || task == "" || email == "" || codes.ValidatePurpose(purpose) != nil {
		return OpenSend{}, false
	}
	return OpenSend{Task: task, ID: codes.ID{Purpose: purpose, Email: email}}, true
}

// Add is the command that enters s into the index until until, a plain
// ZADD to run in the pipeline of the send's admission.
func (s OpenSend) Add(until time.Time) script.Call {
	return script.Call{Command: []any{"ZADD", s.Key(), until.UnixMilli(), s.member()}}
}

// Remove is the command that takes s out of the index.
func (s OpenSend) Remove() script.Call {
	return script.Call{Command: []any{"ZREM", s.Key(), s.member()}}
}

// OpenSends returns up to limit entries of shard n of the index, those
// that may still be open at now, after dropping those whose code is surely
// gone; an entry that is not one (written by hand) is dropped too. One
// round trip, two with such an entry.
func (r *Records) OpenSends(ctx context.Context, n int, now time.Time, limit int) ([]OpenSend, error) {
	key := OpenKey(n)
	var members *redis.StringSliceCmd
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRemRangeByScore(ctx, key, "-inf", strconv.FormatInt(now.UnixMilli(), 10))
		members = p.ZRange(ctx, key, 0, int64(limit)-1)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read open sends: %w", err)
	}
	var out []OpenSend
	var bad []any
	for _, m := range members.Val() {
		if s, ok := parseOpenSend(m); ok {
			out = append(out, s)
		} else {
			bad = append(bad, m)
		}
	}
	if len(bad) > 0 {
		if err := r.rdb.ZRem(ctx, key, bad...).Err(); err != nil {
			return nil, fmt.Errorf("drop malformed open sends: %w", err)
		}
	}
	return out, nil
}

// CloseSends takes sends out of the index, in one round trip.
func (r *Records) CloseSends(ctx context.Context, sends ...OpenSend) error {
	if len(sends) == 0 {
		return nil
	}
	calls := make([]script.Call, len(sends))
	for i, s := range sends {
		calls[i] = s.Remove()
	}
	if _, err := script.Run(ctx, r.rdb, calls...); err != nil {
		return fmt.Errorf("close open sends: %w", err)
	}
	return nil
}

// Record is an open send's status as the reconciler reads it.
type Record struct {
	// State is the status's state; empty when there is no status.
	State string
	// Task and Queue name the task that is to mail the code.
	Task, Queue string
	// Locale and Sealed are the send's (codes.Send), for a task made
	// again.
	Locale, Sealed string
	// Attempts is the number of attempts begun, as the status counts
	// them.
	Attempts string
	// QueuedAt is when the send was admitted; BeganAt when its last
	// attempt began; RequeuedAt when the reconciler last queued it again
	// (zero: never).
	QueuedAt, BeganAt, RequeuedAt time.Time
	// Requeued is how many times the reconciler queued the send again.
	Requeued int
	// Left is the code's remaining lifetime as PTTL reports it: -2 gone,
	// -1 no expiry, else milliseconds.
	Left int64
}

// Changed is the latest of QueuedAt, BeganAt and RequeuedAt: when the
// send last moved.
func (r Record) Changed() time.Time {
	t := r.QueuedAt
	for _, u := range []time.Time{r.BeganAt, r.RequeuedAt} {
		if u.After(t) {
			t = u
		}
	}
	return t
}

// Look reads the status of each send's code and the code's remaining
// lifetime, in one round trip.
func (r *Records) Look(ctx context.Context, sends []OpenSend) ([]Record, error) {
	if len(sends) == 0 {
		return nil, nil
	}
	calls := make([]script.Call, len(sends))
	for i, s := range sends {
		calls[i] = script.Call{Script: readStatus, Keys: []string{r.keys.Key(s.ID), r.keys.StatusKey(s.ID)}}
	}
	cmds, err := script.Run(ctx, r.rdb, calls...)
	if err != nil {
		return nil, fmt.Errorf("read open sends' status: %w", err)
	}
	replies, err := script.Replies(cmds)
	if err != nil {
		return nil, fmt.Errorf("read open sends' status: %w", err)
	}
	out := make([]Record, len(sends))
	for i, res := range replies {
		if len(res) != 2 {
			return nil, fmt.Errorf("read open sends' status: unexpected reply of %d values", len(res))
		}
		h := fields(res[0])
		left, _ := res[1].(int64)
		out[i] = Record{State: h["state"], Task: h["task"], Queue: h["queue"], Locale: h["locale"], Sealed: h["sealed"],
			Attempts: h["attempts"], QueuedAt: msTime(h["queued_at"]), BeganAt: msTime(h["began_at"]),
			RequeuedAt: msTime(h["requeued_at"]), Requeued: atoi(h["requeued"]), Left: left}
	}
	return out, nil
}

// msTime reads a time the status keeps in Unix milliseconds; zero when
// absent.
func msTime(s string) time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// Requeue results.
var (
	// ErrChanged: the status is no longer as read (a worker began the
	// send, or a later send took the code over); nothing was written.
	ErrChanged = errors.New("the send's status changed since it was read")
	// ErrGivenUp: the send was queued again MaxRequeues times already.
	ErrGivenUp = errors.New("the send was queued again too many times")
)

// Requeue makes task (of queue) the one to mail send's code, in one round
// trip: task is send.Task again for a task asynq lost, or a new one in the
// place of a task no worker will run. It checks that the status still
// names send.Task with the attempts seen, and that the code lives
// (codes.ErrNotFound); it counts the send's requeues, refusing (ErrGivenUp)
// once there were most; and it marks the status queued. It returns the code's
// remaining lifetime (-1: no expiry) in ms.
func (r *Records) Requeue(ctx context.Context, send OpenSend, seen Record, task, queue string, now time.Time, most int) (int64, error) {
	res, err := requeue.Run(ctx, r.rdb, []string{r.keys.Key(send.ID), r.keys.StatusKey(send.ID)},
		send.Task, seen.Attempts, task, queue, now.UnixMilli(), most).Slice()
	if err != nil {
		return 0, fmt.Errorf("requeue send: %w", err)
	}
	switch {
	case len(res) == 2 && res[0] == "ok":
		left, _ := res[1].(int64)
		return left, nil
	case len(res) == 1 && res[0] == "changed":
		return 0, ErrChanged
	case len(res) == 1 && res[0] == "gone":
		return 0, codes.ErrNotFound
	case len(res) == 1 && res[0] == "given_up":
		return 0, ErrGivenUp
	}
	return 0, fmt.Errorf("requeue send: unexpected reply %v", res)
}

// MoveOpen puts to in old's place in the index of open sends, until until,
// in one round trip: the task the reconciler queued in the place of one
// no worker will run.
func (r *Records) MoveOpen(ctx context.Context, old, to OpenSend, until time.Time) error {
	if _, err := script.Run(ctx, r.rdb, to.Add(until), old.Remove()); err != nil {
		return fmt.Errorf("move open send: %w", err)
	}
	return nil
}
