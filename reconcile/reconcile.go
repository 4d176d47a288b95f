// Package reconcile finds sends whose code lives but whose mail is neither
// sent nor on its way, and queues them again, within the code's lifetime
// and without a second mail where the first went out.
//
// A send can lose its task between its admission and its mail: the
// enqueuer dies between the two (or its enqueue times out after the
// admission), a Redis failover drops the task with the writes the replica
// had not received, someone deletes it by hand, or asynq holds it active
// with its lease gone and no worker on it, which asynq never recovers
// (hibiken/asynq#1144). The code's status names the task that is to mail
// it, with all a task needs to be made again (codes.Send), and every
// admitted send is an entry of the index of open sends until its task
// ends it (delivery.OpenSend): a run reads the index, not the keyspace.
//
// For each open send a run asks the status, then asynq:
//
//   - the code is gone, the status names another task (a later send of the
//     code, which has an entry of its own), or it says sent, undeliverable
//     or expired: nothing to do, the entry goes;
//   - the code expires within MinLeft: too late for a mail, the entry goes;
//   - the send moved (admitted, begun, requeued) within Grace: it is left
//     for the next run, its enqueue may still be on its way;
//   - asynq holds the task pending, scheduled or retrying, or active on a
//     live worker: it is on its way;
//   - asynq holds it archived or completed: it ended, the entry goes;
//   - asynq has no such task: it is lost; it is queued again under the
//     same ID (asynq refuses a second task of an ID, and the worker's
//     record of a sent task, sent:<id>, stops a second mail), unless its
//     last attempt began within SentGrace: a worker that sent its mail may
//     still be writing that record;
//   - asynq holds it active, no live worker runs it (asynq's list of
//     servers and their tasks), and the send has not moved for
//     OrphanAfter: it is orphaned; a new task is queued in its place, and
//     the status names the new one and marks the old one replaced, so that
//     the old one, should asynq ever run it, finds itself superseded and
//     mails nothing.
//
// Queuing a send again is a compare-and-set on its status
// (delivery.Records.Requeue): nothing is written when a worker or a later
// send changed it since it was read, and a send is queued again at most
// MaxRequeues times. Runs of several workers at once would be safe for the
// same reasons; a lock in Redis makes it one run per interval across them.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/tasks"
)

// Bounds of a run. Each is a fact of the system it guards, not a setting.
const (
	// DefaultInterval is the time between two runs (RECONCILE_INTERVAL): a
	// lost send is mailed within about this much (plus Grace) of its loss,
	// well inside a code's 10 minutes.
	DefaultInterval = 30 * time.Second
	// Grace is how long after a send moved a run leaves it alone: more than
	// the enqueuer may take between a send's admission and its enqueue
	// and replicas (service.EnqueueTimeout each).
	Grace = 10 * time.Second
	// SentGrace is how long after its last attempt began a send whose task
	// asynq no longer has is left alone: a worker that sent the mail keeps
	// trying to record it that long (tasks.MarkTimeout), and a task queued
	// before the record is written would mail again.
	SentGrace = tasks.MarkTimeout
	// OrphanAfter is how long a send whose task asynq holds active with no
	// live worker on it must have stood still: longer than a live worker
	// goes unlisted (asynq's heartbeat writes the list every 5 s), and
	// than an attempt lasts without a status write (an SMTP timeout).
	OrphanAfter = time.Minute
	// MinLeft is the least lifetime a code must have left to be mailed
	// again: less is not enough to read the mail and type the code.
	MinLeft = 30 * time.Second
	// MaxRequeues bounds how many times one send is queued again: a send
	// whose task keeps ending without a mail or a record (a worker whose
	// CODE_SECRET opens nothing) is given up, and logged.
	MaxRequeues = 3
	// MaxPerShard bounds the entries of one shard of the index a run
	// reads; the rest wait for the next run.
	MaxPerShard = 1000
	// batch is the number of statuses read in one round trip.
	batch = 200
)

// Reasons a send was queued again, as Observer.Reconciled is told them.
const (
	// ReasonLost: asynq had no task of the ID the status names.
	ReasonLost = "lost"
	// ReasonOrphaned: asynq held the task active and no live worker ran it.
	ReasonOrphaned = "orphaned"
	// ReasonGivenUp: the send was not queued again, having been queued
	// again MaxRequeues times already.
	ReasonGivenUp = "given_up"
)

// Reasons lists every reason, for metrics that pre-create their series.
var Reasons = []string{ReasonLost, ReasonOrphaned, ReasonGivenUp}

// LockKey is the key of the lock that makes one run per interval across
// workers.
const LockKey = "verifyq:{reconcile}:lock"

// Records reads the index of open sends and the statuses of their codes,
// and queues a send again (delivery.Records).
type Records interface {
	OpenSends(ctx context.Context, shard int, now time.Time, limit int) ([]delivery.OpenSend, error)
	Look(ctx context.Context, sends []delivery.OpenSend) ([]delivery.Record, error)
	Requeue(ctx context.Context, send delivery.OpenSend, seen delivery.Record, task, queue string, now time.Time, most int) (int64, error)
	MoveOpen(ctx context.Context, old, to delivery.OpenSend, until time.Time) error
	CloseSends(ctx context.Context, sends ...delivery.OpenSend) error
}

// Tasks finds a task and the live workers' tasks (asynq.Inspector).
type Tasks interface {
	GetTaskInfo(queue, id string) (*asynq.TaskInfo, error)
	Servers() ([]*asynq.ServerInfo, error)
}

// Enqueuer puts tasks on the queue (asynq.Client).
type Enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// Observer is told what the runs do, for metrics. It must be safe for
// concurrent use.
type Observer interface {
	// Checked is called after each run with the number of open sends it
	// read.
	Checked(n int)
	// Reconciled is called for each send queued again (or given up), with
	// one of Reasons.
	Reconciled(reason string)
}

var (
	_ Records  = (*delivery.Records)(nil)
	_ Tasks    = (*asynq.Inspector)(nil)
	_ Enqueuer = (*asynq.Client)(nil)
)

// Config is what a Reconciler needs; all but Observer are required.
type Config struct {
	// Redis holds the lock.
	Redis   redis.UniversalClient
	Records Records
	Tasks   Tasks
	Queue   Enqueuer
	// QueueShards is QUEUE_SHARDS: a send is queued again on its shard.
	QueueShards int
	// TTLOf is the lifetime of purpose's codes, for a code whose key has
	// no expiry (the deadline of its task).
	TTLOf func(purpose string) time.Duration
	// Interval is the time between two runs (RECONCILE_INTERVAL).
	Interval time.Duration
	Observer Observer
	Logger   *slog.Logger
}

// Reconciler queues lost sends again.
type Reconciler struct {
	cfg   Config
	owner string // the lock's value: who holds it
	// Now is the clock; tests replace it.
	Now func() time.Time
}

// New returns the Reconciler of cfg.
func New(cfg Config) (*Reconciler, error) {
	if cfg.Redis == nil || cfg.Records == nil || cfg.Tasks == nil || cfg.Queue == nil || cfg.TTLOf == nil || cfg.Logger == nil {
		return nil, errors.New("reconcile: a reconciler needs Redis, records, tasks, a queue, TTLOf and a logger")
	}
	if cfg.Interval <= 0 {
		return nil, errors.New("reconcile: the interval must be positive")
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	host, _ := os.Hostname()
	return &Reconciler{cfg: cfg, owner: host + ":" + strconv.Itoa(os.Getpid()) + ":" + tasks.NewTaskID()[:8], Now: time.Now}, nil
}

// Run tries a pass (TryPass) at once and then every Interval, until ctx
// ends. A pass that fails is logged; the next one tries again.
func (r *Reconciler) Run(ctx context.Context) {
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	for {
		if _, _, err := r.TryPass(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Logger.WarnContext(ctx, "reconcile: pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// TryPass takes the lock and, when it got it, makes a Pass; ran says
// whether it did. The lock is taken for most of an interval, so that the
// next run of any worker, an interval later, finds it free; it is never
// released, so that the workers' passes are an interval apart.
func (r *Reconciler) TryPass(ctx context.Context) (ran bool, rep Report, err error) {
	ok, err := r.cfg.Redis.SetNX(ctx, LockKey, r.owner, r.cfg.Interval*9/10).Result()
	if err != nil || !ok {
		if err != nil {
			err = fmt.Errorf("reconcile: take the lock: %w", err)
		}
		return false, Report{}, err
	}
	rep, err = r.Pass(ctx)
	return true, rep, err
}

// Report is what one pass did.
type Report struct {
	// Checked is the number of open sends read; Closed of them the entries
	// that went (their sends ended, or will not be mailed).
	Checked, Closed int
	// Requeued counts the sends queued again, by reason.
	Requeued map[string]int
}

// Pass reads every shard of the index once and queues the lost sends
// again. It stops at the first Redis error.
func (r *Reconciler) Pass(ctx context.Context) (Report, error) {
	rep := Report{Requeued: map[string]int{}}
	p := &pass{r: r, now: r.Now(), rep: &rep}
	defer func() { r.cfg.Observer.Checked(rep.Checked) }()
	for shard := range delivery.OpenShards {
		sends, err := r.cfg.Records.OpenSends(ctx, shard, p.now, MaxPerShard)
		if err != nil {
			return rep, err
		}
		for len(sends) > 0 {
			n := min(batch, len(sends))
			if err := p.check(ctx, sends[:n]); err != nil {
				return rep, err
			}
			sends = sends[n:]
		}
	}
	return rep, nil
}

// pass is the state of one Pass.
type pass struct {
	r       *Reconciler
	now     time.Time
	rep     *Report
	running map[string]bool // the tasks live workers run; nil until asked
}

// check judges a batch of open sends and acts.
func (p *pass) check(ctx context.Context, sends []delivery.OpenSend) error {
	recs, err := p.r.cfg.Records.Look(ctx, sends)
	if err != nil {
		return err
	}
	p.rep.Checked += len(sends)
	var closed []delivery.OpenSend
	for i, s := range sends {
		v, err := p.judge(s, recs[i])
		if err != nil {
			return err
		}
		switch v {
		case closeEntry:
			closed = append(closed, s)
		case requeueLost, requeueOrphan:
			done, err := p.requeue(ctx, s, recs[i], v)
			if err != nil {
				return err
			}
			if done {
				closed = append(closed, s)
			}
		}
	}
	p.rep.Closed += len(closed)
	return p.r.cfg.Records.CloseSends(ctx, closed...)
}

// verdict is what a pass does with one open send.
type verdict int

const (
	keep          verdict = iota // on its way, or to look at again next run
	closeEntry                   // ended, or will not be mailed: the entry goes
	requeueLost                  // queue the same task again
	requeueOrphan                // queue a new task in its place
)

// judge decides what to do with send s whose status is rec.
func (p *pass) judge(s delivery.OpenSend, rec delivery.Record) (verdict, error) {
	switch {
	case rec.State == "" || rec.Left == -2 || rec.Task != s.Task:
		return closeEntry, nil
	case rec.State != delivery.StateQueued && rec.State != delivery.StateSending && rec.State != delivery.StateRetrying:
		return closeEntry, nil
	case rec.Left >= 0 && time.Duration(rec.Left)*time.Millisecond < MinLeft:
		return closeEntry, nil
	case p.now.Sub(rec.Changed()) < Grace:
		return keep, nil
	}
	queue := rec.Queue
	if queue == "" {
		queue = tasks.QueueFor(s.ID.Email, p.r.cfg.QueueShards)
	}
	info, err := p.r.cfg.Tasks.GetTaskInfo(queue, s.Task)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound):
		if rec.State == delivery.StateSending && p.now.Sub(rec.BeganAt) < SentGrace {
			return keep, nil
		}
		return requeueLost, nil
	case err != nil:
		return keep, fmt.Errorf("reconcile: task of %s: %w", mail.MaskAddress(s.ID.Email), err)
	}
	switch info.State {
	case asynq.TaskStateArchived, asynq.TaskStateCompleted:
		return closeEntry, nil
	case asynq.TaskStateActive:
		running, err := p.runningTasks()
		if err != nil {
			return keep, err
		}
		if running[s.Task] || p.now.Sub(rec.Changed()) < OrphanAfter {
			return keep, nil
		}
		return requeueOrphan, nil
	default: // pending, scheduled, retry, aggregating: asynq will run it
		return keep, nil
	}
}

// runningTasks is the set of the tasks live workers run, asked of asynq
// once a pass.
func (p *pass) runningTasks() (map[string]bool, error) {
	if p.running != nil {
		return p.running, nil
	}
	servers, err := p.r.cfg.Tasks.Servers()
	if err != nil {
		return nil, fmt.Errorf("reconcile: list workers: %w", err)
	}
	p.running = map[string]bool{}
	for _, srv := range servers {
		for _, w := range srv.ActiveWorkers {
			p.running[w.TaskID] = true
		}
	}
	return p.running, nil
}

// requeue queues send s again as v says; done is true when its entry is to
// go (the code is gone, or the send is given up, or a new task took its
// place).
func (p *pass) requeue(ctx context.Context, s delivery.OpenSend, rec delivery.Record, v verdict) (done bool, err error) {
	cfg := p.r.cfg
	task, reason := s.Task, ReasonLost
	if v == requeueOrphan {
		task, reason = tasks.NewTaskID(), ReasonOrphaned
	}
	queue := tasks.QueueFor(s.ID.Email, cfg.QueueShards)
	log := cfg.Logger.With("email", mail.MaskAddress(s.ID.Email), "task_id", s.Task, "reason", reason)
	if s.ID.Purpose != "" {
		log = log.With("purpose", s.ID.Purpose)
	}
	left, err := cfg.Records.Requeue(ctx, s, rec, task, queue, p.now, MaxRequeues)
	switch {
	case errors.Is(err, delivery.ErrChanged):
		return false, nil
	case errors.Is(err, codes.ErrNotFound):
		return true, nil
	case errors.Is(err, delivery.ErrGivenUp):
		log.ErrorContext(ctx, "reconcile: a send queued again too many times is given up, its mail not sent", "requeued", rec.Requeued)
		cfg.Observer.Reconciled(ReasonGivenUp)
		p.rep.Requeued[ReasonGivenUp]++
		return true, nil
	case err != nil:
		return false, err
	}
	expires := p.now.Add(time.Duration(left) * time.Millisecond)
	if left == -1 {
		expires = p.now.Add(cfg.TTLOf(s.ID.Purpose))
	}
	if task != s.Task {
		if err := cfg.Records.MoveOpen(ctx, s, delivery.OpenSend{Task: task, ID: s.ID}, expires); err != nil {
			return false, err
		}
	}
	t, err := tasks.NewSendCodeTask(tasks.SendCodePayload{
		Email: s.ID.Email, Purpose: s.ID.Purpose, Locale: rec.Locale, SealedCode: rec.Sealed,
		RequestedAt: rec.QueuedAt, ExpiresAt: expires,
	}, asynq.Queue(queue), asynq.TaskID(task))
	if err != nil {
		return false, err
	}
	if _, err := cfg.Queue.EnqueueContext(ctx, t); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		// The status names the task; the next run finds it missing and
		// queues it then.
		return false, fmt.Errorf("reconcile: enqueue: %w", err)
	}
	log.InfoContext(ctx, "reconcile: send queued again", "new_task_id", task, "expires_in", time.Duration(left)*time.Millisecond)
	cfg.Observer.Reconciled(reason)
	p.rep.Requeued[reason]++
	return false, nil
}

type nopObserver struct{}

func (nopObserver) Checked(int)       {}
func (nopObserver) Reconciled(string) {}
