package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/relay"
)

// Breaker thresholds. A worker's breaker opens at once when the relay
// refuses verifyq's mail as such (delivery.RelayRefused: a wrong password,
// a sender or quota refusal, a TLS failure), on BreakerUnreachable
// connection failures in a row (refused, dropped, timed out), or on
// BreakerTempReplies temporary replies of the relay in a row within
// BreakerTempWindow (delivery.RelayDeferred, delivery.Throttled: a relay
// that asks every mail to slow down holds the sends); any mail accepted
// in between starts the count again. What the relay says of one recipient
// or one message (refused, greylisted) does not count.
// While open it probes the relay every BreakerProbeInterval at first, then
// twice as long after each failed probe or trial, up to
// BreakerMaxProbeInterval: a relay that refuses verifyq's configuration is
// not asked every second for hours.
const (
	BreakerUnreachable      = 3
	BreakerTempReplies      = 5
	BreakerTempWindow       = 10 * time.Second
	BreakerProbeInterval    = time.Second
	BreakerMaxProbeInterval = 30 * time.Second
)

// ErrSMTPUnavailable is returned by a send that the breaker held back and
// then let go without sending: the worker is shutting down while the SMTP
// server is unusable. It is not a failure (IsFailure): asynq puts the task
// back without counting a retry.
var ErrSMTPUnavailable = errors.New("SMTP server unavailable, send held back")

// IsFailure is the worker's asynq.Config.IsFailure: every error but
// ErrSMTPUnavailable counts as a failed attempt.
func IsFailure(err error) bool { return !errors.Is(err, ErrSMTPUnavailable) }

// BreakerState is the state of a Breaker. The set is fixed: it is a metric
// label value.
type BreakerState string

// Breaker states.
const (
	// BreakerClosed: sends go ahead.
	BreakerClosed BreakerState = "closed"
	// BreakerOpen: the SMTP server is unusable; sends wait and the server is
	// probed every BreakerProbeInterval.
	BreakerOpen BreakerState = "open"
	// BreakerHalfOpen: a probe got through; one trial send goes ahead, the
	// others wait for its result.
	BreakerHalfOpen BreakerState = "half_open"
)

// Gate holds sends back while no SMTP relay can take mail: a Breaker for
// one relay, Relays for several. Hold calls Wait before the handler starts
// a task.
type Gate interface {
	// Wait returns nil when a send may go ahead, and then a done func that
	// the caller calls when the task ends. It blocks while the gate is
	// shut, until it opens or ctx ends.
	Wait(ctx context.Context) (done func(), err error)
}

var (
	_ Gate = (*Breaker)(nil)
	_ Gate = (*Relays)(nil)
)

// BreakerConfig configures a Breaker.
type BreakerConfig struct {
	// Probe checks that the SMTP server can take mail without sending one
	// ((*relay.Client).Probe). Required. It must honour ctx.
	Probe func(ctx context.Context) error
	// ProbeTimeout bounds one probe, and a trial send: a trial that has
	// not reported by then lets another one go. Required.
	ProbeTimeout time.Duration
	// Resume, when set, is called when a probe gets through and when the
	// breaker closes: the worker runs the retry tasks of its queues at once
	// (asynq.Inspector.RunAllRetryTasks) instead of leaving them to their
	// backoff. It returns how many tasks it moved.
	Resume func() (int, error)
	// OnChange, when set, is told every state change (metrics). It must
	// not block.
	OnChange func(BreakerState)
	// Notify, when set, is told when the breaker opens from closed and
	// when it closes again (relay.failing and relay.recovered events). It
	// runs on a goroutine of its own, which Close waits for: it may take
	// a Redis round trip.
	Notify func(Transition)
	// Logger logs every state change: a warning when the breaker opens,
	// info otherwise. Nil discards.
	Logger *slog.Logger
}

// Transition is a breaker opening from closed, or closing.
type Transition struct {
	// Opened is true when the breaker opened, false when it closed.
	Opened bool
	// OpenedAt is when it opened (the outage's start), At when this
	// transition happened.
	OpenedAt, At time.Time
	// Err is the failure that opened it; nil when it closed.
	Err error
}

// Breaker is a circuit breaker between a worker's tasks and its SMTP
// server. When sends fail because the server is down, hangs or keeps
// answering 4xx, it opens: tasks the worker takes wait in the handler
// instead of failing, and the server is probed about once a second. When a
// probe gets through, one trial send goes ahead; when it is accepted, the
// breaker closes, the waiting sends go at once and the queues' retry tasks
// are run without waiting for their backoff.
//
// Waiting in the handler, rather than failing fast, is what keeps the queue
// pending: asynq takes a task only into a free slot, so once every slot
// waits, the worker takes no more tasks and the rest stay pending, burning
// no retry; asynq's heartbeat keeps extending the lease of the waiting
// ones. Failing fast (an error that IsFailure excuses) would instead cycle
// every task through the retry set once a second, each cycle a Redis round
// trip and a log line, for the whole outage. A waiting task leaves when its
// deadline (the code's expiry) passes, or, at shutdown, with
// ErrSMTPUnavailable, which asynq does not count as a failure.
//
// Each worker process has its own breaker per relay (Relays routes the
// sends by their states) and probes on its own. A Breaker
// is safe for concurrent use.
type Breaker struct {
	cfg BreakerConfig
	log *slog.Logger
	now func() time.Time

	ctx    context.Context // ends at Close: stops probing
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	state       BreakerState
	changed     chan struct{} // closed and replaced on each state change
	shut        bool
	probing     bool
	unreachable int       // connection failures in a row
	tempReplies int       // 4xx replies in a row ...
	tempSince   time.Time // ... since this time
	openedAt    time.Time
	interval    time.Duration // between probes, while open
	reason      string        // why it opened last
	trial       uint64        // id of the current trial send, 0 for none
	trialUntil  time.Time     // when the current trial send is given up
	nextTrial   uint64
}

// NewBreaker returns a closed Breaker. Call Close when done.
func NewBreaker(cfg BreakerConfig) (*Breaker, error) {
	if cfg.Probe == nil || cfg.ProbeTimeout <= 0 {
		return nil, errors.New("tasks: a breaker needs a probe and its timeout")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Breaker{
		cfg: cfg, log: log.With("component", "smtp.breaker"), now: time.Now,
		ctx: ctx, cancel: cancel,
		state: BreakerClosed, changed: make(chan struct{}),
	}
	if cfg.OnChange != nil {
		cfg.OnChange(BreakerClosed)
	}
	return b, nil
}

// Ready returns nil while the breaker is closed, else an error that says
// the relay fails and why the breaker opened (the worker's /readyz).
func (b *Breaker) Ready() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == BreakerClosed {
		return nil
	}
	return fmt.Errorf("smtp relay failing: breaker %s for %s (%s)", b.state, b.now().Sub(b.openedAt).Round(time.Second), b.reason)
}

// State returns the current state.
func (b *Breaker) State() BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// Wait implements Gate. While the breaker is open it blocks until it
// closes, a trial send may go, or ctx ends (ctx's error). After Close it
// returns ErrSMTPUnavailable at once, except on a task's last attempt:
// asynq archives a task whose last attempt returns any error, so that one
// keeps waiting until ctx ends (asynq puts it back on the queue at the end
// of its shutdown timeout).
func (b *Breaker) Wait(ctx context.Context) (func(), error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		done, held, err := b.take(ctx)
		if done != nil || err != nil {
			return done, err
		}
		var wake <-chan time.Time
		if held.trial {
			timer = resetTimer(timer, held.trialLeft)
			wake = timer.C
		}
		select {
		case <-held.changed:
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// held says why a send may not go yet and when to look again: at the
// breaker's next change (changed closes), or, while another trial send is
// under way (trial), when it is given up (in trialLeft).
type held struct {
	changed   <-chan struct{}
	trial     bool
	trialLeft time.Duration
}

// take is Wait without the wait: a done func when a send may go now
// (taking the trial while half-open), else when to look again, or
// ErrSMTPUnavailable after Close (see Wait).
func (b *Breaker) take(ctx context.Context) (func(), held, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.shut && b.state != BreakerClosed && !lastAttempt(ctx) {
		return nil, held{}, fmt.Errorf("send held back at shutdown: %w", ErrSMTPUnavailable)
	}
	switch b.state {
	case BreakerClosed:
		return func() {}, held{}, nil
	case BreakerHalfOpen:
		now := b.now()
		if b.trial == 0 || now.After(b.trialUntil) {
			b.nextTrial++
			id := b.nextTrial
			b.trial, b.trialUntil = id, now.Add(b.cfg.ProbeTimeout)
			return func() { b.endTrial(id) }, held{}, nil
		}
		return nil, held{changed: b.changed, trial: true, trialLeft: b.trialUntil.Sub(now)}, nil
	}
	return nil, held{changed: b.changed}, nil
}

func resetTimer(t *time.Timer, d time.Duration) *time.Timer {
	if t == nil {
		return time.NewTimer(d)
	}
	t.Reset(d)
	return t
}

// lastAttempt reports whether a failure of this attempt would archive the
// task.
func lastAttempt(ctx context.Context) bool {
	retried, ok1 := asynq.GetRetryCount(ctx)
	maxRetry, ok2 := asynq.GetMaxRetry(ctx)
	return ok1 && ok2 && retried >= maxRetry
}

// endTrial lets another trial go when trial id ended without a report that
// decided (its code was gone, Redis failed, the message was invalid).
func (b *Breaker) endTrial(id uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == BreakerHalfOpen && b.trial == id {
		b.trial = 0
		b.broadcastLocked()
	}
}

// Report tells the breaker how a send through its relay ended; ctx is the
// task's. A send that ended because its task's ctx ended
// (shutdown, deadline) says nothing about the server and is ignored.
func (b *Breaker) Report(ctx context.Context, err error) {
	if err != nil && ctx.Err() != nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if err == nil {
		// A mail got through: the relay works, whatever the state.
		b.unreachable, b.tempReplies = 0, 0
		b.closeLocked()
		return
	}
	how := delivery.ClassOf(err).Handling()
	replied := relay.ReplyError(err) != nil
	switch {
	case how.HoldAtOnce:
		b.openLocked("the relay refuses verifyq's mail", err)
	case how.RelayWide && replied:
		if b.tempReplies == 0 || now.Sub(b.tempSince) > BreakerTempWindow {
			b.tempReplies, b.tempSince = 0, now
		}
		b.tempReplies++
		if b.state == BreakerHalfOpen || (b.state == BreakerClosed && b.tempReplies >= BreakerTempReplies) {
			b.openLocked(fmt.Sprintf("%d temporary replies within %s", b.tempReplies, now.Sub(b.tempSince).Round(time.Millisecond)), err)
		}
	case how.RelayWide:
		b.unreachable++
		if b.state == BreakerHalfOpen || (b.state == BreakerClosed && b.unreachable >= BreakerUnreachable) {
			b.openLocked(fmt.Sprintf("%d connection failures in a row", b.unreachable), err)
		}
	case replied:
		// The relay answered for this recipient or this message: it is up.
		b.unreachable = 0
		b.closeLocked()
	}
}

// nextProbe is the wait before the next probe after err, a failed probe or
// trial (first: the breaker just opened): twice the last while the relay
// refuses verifyq's mail as such, up to BreakerMaxProbeInterval, else
// BreakerProbeInterval, so that a relay back from an outage is seen within
// a second.
func nextProbe(last time.Duration, first bool, err error) time.Duration {
	if first || err == nil || !delivery.ClassOf(err).Handling().HoldAtOnce {
		return BreakerProbeInterval
	}
	return min(2*last, BreakerMaxProbeInterval)
}

// openLocked opens the breaker and starts probing.
func (b *Breaker) openLocked(reason string, err error) {
	from := b.state
	if from == BreakerClosed {
		b.openedAt = b.now()
	}
	b.trial = 0
	b.interval = nextProbe(b.interval, from == BreakerClosed, err)
	b.reason = fmt.Sprintf("%s: %v", reason, err)
	b.setLocked(BreakerOpen)
	b.log.Warn("SMTP relay unusable: breaker open, sends wait while it is probed",
		"reason", reason, "from", string(from), "probe_every", b.interval.String(), "err", err)
	if from == BreakerClosed {
		b.notifyLocked(Transition{Opened: true, OpenedAt: b.openedAt, At: b.openedAt, Err: err})
	}
	if !b.probing && !b.shut {
		b.probing = true
		b.wg.Add(1)
		go b.probe()
	}
}

// closeLocked closes the breaker if it is not closed.
func (b *Breaker) closeLocked() {
	if b.state == BreakerClosed {
		return
	}
	b.trial = 0
	b.setLocked(BreakerClosed)
	b.log.Info("SMTP server back: breaker closed, sends resume",
		"open_for", b.now().Sub(b.openedAt).Round(time.Millisecond).String())
	b.notifyLocked(Transition{OpenedAt: b.openedAt, At: b.now()})
	if !b.shut {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.resume()
		}()
	}
}

// notifyLocked tells cfg.Notify about t on a goroutine of its own, unless
// the breaker is closing down.
func (b *Breaker) notifyLocked(t Transition) {
	if b.cfg.Notify == nil || b.shut {
		return
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.cfg.Notify(t)
	}()
}

func (b *Breaker) setLocked(s BreakerState) {
	b.state = s
	b.broadcastLocked()
	if b.cfg.OnChange != nil {
		b.cfg.OnChange(s)
	}
}

func (b *Breaker) broadcastLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// probe runs while the breaker is open: every BreakerProbeInterval it
// probes the server; when a probe gets through, the breaker goes half-open
// and the retry tasks are run.
func (b *Breaker) probe() {
	defer b.wg.Done()
	b.mu.Lock()
	t := time.NewTimer(b.interval)
	b.mu.Unlock()
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			b.mu.Lock()
			b.probing = false
			b.mu.Unlock()
			return
		case <-t.C:
		}
		b.mu.Lock()
		if b.state != BreakerOpen {
			b.probing = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()

		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.ProbeTimeout)
		err := b.cfg.Probe(ctx)
		cancel()
		b.mu.Lock()
		if err == nil && b.state == BreakerOpen {
			b.trial = 0
			b.setLocked(BreakerHalfOpen)
			b.log.Info("SMTP server answers a probe: breaker half-open, one trial send goes first",
				"open_for", b.now().Sub(b.openedAt).Round(time.Millisecond).String())
			b.probing = false
			b.mu.Unlock()
			b.resume()
			return
		}
		b.interval = nextProbe(b.interval, false, err)
		next := b.interval
		b.mu.Unlock()
		if err != nil {
			b.log.Debug("SMTP probe failed", "err", err, "next_in", next.String())
		}
		t.Reset(next)
	}
}

// resume runs cfg.Resume and logs what it did.
func (b *Breaker) resume() {
	if b.cfg.Resume == nil {
		return
	}
	n, err := b.cfg.Resume()
	if err != nil {
		b.log.Warn("could not run the retry tasks at once; they wait for their backoff", "err", err)
		return
	}
	if n > 0 {
		b.log.Info("retry tasks run at once", "tasks", n)
	}
}

// Close stops probing and lets every waiting send go with
// ErrSMTPUnavailable (see Wait); sends that are not held back are not
// affected. The worker calls it at shutdown, after it stopped taking
// tasks. Close waits for a probe in progress.
func (b *Breaker) Close() {
	b.mu.Lock()
	b.shut = true
	b.broadcastLocked()
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
}
