package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/relay"
)

// Names of the worker's relays: in logs, metric labels and the delivery
// status (delivery.Status.Relay).
const (
	// RelayPrimary is the relay of SMTP_URL.
	RelayPrimary = "primary"
	// RelayFallback is the relay of SMTP_FALLBACK_URL.
	RelayFallback = "fallback"
)

// Relay is one SMTP relay of the worker, with its own breaker.
type Relay struct {
	// Name says which relay it is (RelayPrimary, RelayFallback).
	Name string
	// Mailer sends through the relay (relay.Client).
	Mailer Mailer
	// Breaker holds sends to this relay back while it fails, probing it
	// (its Probe is this relay's). Relays reports every send to it.
	Breaker *Breaker
}

// Relays picks the relay of each send by the state of their breakers: the
// first relay, in order, whose breaker lets a send go (closed, or
// half-open with no trial send under way). While the primary fails its
// breaker opens and the sends go through the fallback; its probes go on,
// and when a probe gets through one trial send goes to it; once that is
// accepted its breaker closes and the sends go back to it. Only while
// every breaker holds sends back does the gate (Wait) hold the task.
//
// At most one mail per send: an attempt is handed to the next relay
// within the same task only when the failure is the relay's as a whole
// (delivery.Class.Handling's RelayWide: refused or timed-out connections,
// TLS, authentication or quota refusals, the relay's 4xx) and proves that
// it did not take the mail (relay.NotAccepted). A timeout or a dropped
// connection after the message's final dot is not handed on: the task
// fails and asynq retries it, as with one relay.
//
// With one relay, Relays is that relay's Breaker: Wait is Breaker.Wait,
// Send reports every send to it. A Relays is safe for concurrent use.
type Relays struct {
	list []Relay
	log  *slog.Logger
	last atomic.Int64 // index of the relay the last send went to while closed
}

// NewRelays returns the Relays of list, the primary first. Each needs a
// distinct name, a mailer and a breaker. A nil logger discards.
func NewRelays(logger *slog.Logger, list ...Relay) (*Relays, error) {
	if len(list) == 0 {
		return nil, errors.New("tasks: no relay")
	}
	seen := map[string]bool{}
	for _, r := range list {
		if r.Name == "" || seen[r.Name] || r.Mailer == nil || r.Breaker == nil {
			return nil, errors.New("tasks: each relay needs a name of its own, a mailer and a breaker")
		}
		seen[r.Name] = true
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Relays{list: list, log: logger}, nil
}

// route is the relay the gate let a task's send go to (Relays.Wait), in
// the task's ctx (Hold puts it there) for Relays.Send.
type route struct {
	picked bool
	relay  int
}

// Wait implements Gate: it blocks until the breaker of some relay lets a
// send go, the first in order, and notes that relay in the task's route
// for Send. As Breaker.Wait: ctx's error when ctx ends first, and after
// Close ErrSMTPUnavailable (except on a task's last attempt).
func (r *Relays) Wait(ctx context.Context) (func(), error) {
	i, done, err := r.take(ctx, nil, true)
	if err != nil {
		return nil, err
	}
	if rt, ok := ctx.Value(routeKey).(*route); ok {
		rt.picked, rt.relay = true, i
	}
	r.noteRoute(ctx, i)
	return done, nil
}

// noteRoute logs when the sends move to another relay: a warning when
// they leave the primary, info when they come back to it. A trial send
// does not count.
func (r *Relays) noteRoute(ctx context.Context, i int) {
	if len(r.list) == 1 || r.list[i].Breaker.State() != BreakerClosed {
		return
	}
	prev := int(r.last.Swap(int64(i)))
	if prev == i {
		return
	}
	log := loggerOf(ctx, r.log)
	if i == 0 {
		log.InfoContext(ctx, "sends go through the "+r.list[0].Name+" relay again", "relay", r.list[0].Name, "from", r.list[prev].Name)
		return
	}
	log.WarnContext(ctx, "sends go through the "+r.list[i].Name+" relay while the ones before it fail",
		"relay", r.list[i].Name, "from", r.list[prev].Name)
}

// take returns the first relay, in order, whose breaker lets a send go
// now, skipping those skip marks, with the done func of its breaker. With
// block it waits for one (as Breaker.Wait does); without, it returns -1
// when none can go now.
func (r *Relays) take(ctx context.Context, skip []bool, block bool) (int, func(), error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())}}
		var shutErr error
		asked, shut, wake := 0, 0, time.Duration(-1)
		for i, rl := range r.list {
			if i < len(skip) && skip[i] {
				continue
			}
			asked++
			done, h, err := rl.Breaker.take(ctx)
			switch {
			case done != nil:
				return i, done, nil
			case err != nil:
				shut++
				shutErr = err
				continue
			}
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(h.changed)})
			if h.trial && (wake < 0 || h.trialLeft < wake) {
				wake = h.trialLeft
			}
		}
		switch {
		case !block || asked == 0:
			return -1, nil, nil
		case shut == asked:
			return -1, nil, shutErr
		}
		if wake >= 0 {
			timer = resetTimer(timer, wake)
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timer.C)})
		}
		if chosen, _, _ := reflect.Select(cases); chosen == 0 {
			return -1, nil, ctx.Err()
		}
	}
}

// Send implements Mailer: it sends through the relay the gate picked for
// the task (else the first that can take it, waiting as Wait does),
// reports the result to that relay's breaker, and, when the failure
// proves the relay did not take the mail and is the relay's as a whole,
// hands the mail to the next relay that can take it now. Each relay tried
// is noted in the task's SendResult (Relay, Tries); a failure names the
// relay ("primary relay: smtp connect: ..."), which the task's last error
// in the dashboard then shows.
func (r *Relays) Send(ctx context.Context, env relay.Envelope, msg io.WriterTo) error {
	res := resultOf(ctx)
	i, release := 0, func() {}
	if rt, ok := ctx.Value(routeKey).(*route); ok && rt.picked {
		i = rt.relay // its breaker's done is Hold's
	} else {
		var err error
		if i, release, err = r.take(ctx, nil, true); err != nil {
			return err
		}
	}
	tried := make([]bool, len(r.list))
	var before error
	for {
		rl := r.list[i]
		tried[i] = true
		start := time.Now()
		err := rl.Mailer.Send(ctx, env, msg)
		try := Try{Relay: rl.Name, Took: time.Since(start)}
		rl.Breaker.Report(ctx, err)
		release()
		res.Relay = rl.Name
		if err == nil {
			res.Tries = append(res.Tries, try)
			return nil
		}
		try.Failure = delivery.ClassOf(err)
		res.Tries = append(res.Tries, try)
		err = fmt.Errorf("%s relay: %w", rl.Name, err)
		if before != nil {
			// The earlier relay's failure is the text's only: what the
			// attempt's failure means (its class) is the last relay's.
			err = fmt.Errorf("%w (after %v)", err, before) //nolint:errorlint // text only, on purpose (above)
		}
		if ctx.Err() != nil || !try.Failure.Handling().RelayWide || !relay.NotAccepted(err) {
			return err
		}
		next, done, _ := r.take(ctx, tried, false)
		if next < 0 {
			return err
		}
		log := loggerOf(ctx, r.log).With("relay", rl.Name)
		logRelayRefused(ctx, log, err)
		log.WarnContext(ctx, "the "+rl.Name+" relay did not take the mail: sending it through the "+r.list[next].Name+" relay",
			append([]any{"next", r.list[next].Name}, relayFields(err)...)...)
		i, release, before = next, done, err
	}
}

// Ready says whether some relay can take mail (the worker's /readyz): an
// error while every breaker holds sends back, naming each relay's state
// ("primary: open (smtp relay failing: ...); fallback: open (...)"); else
// nil, with that text when there are several relays. With one relay it is
// that breaker's Ready, with no text.
func (r *Relays) Ready() (string, error) {
	if len(r.list) == 1 {
		return "", r.list[0].Breaker.Ready()
	}
	parts := make([]string, len(r.list))
	ready := false
	for i, rl := range r.list {
		err := rl.Breaker.Ready()
		if err == nil {
			ready = true
			parts[i] = rl.Name + ": " + string(BreakerClosed)
			continue
		}
		parts[i] = fmt.Sprintf("%s: %s (%v)", rl.Name, rl.Breaker.State(), err)
	}
	text := strings.Join(parts, "; ")
	if !ready {
		return "", errors.New("every smtp relay failing: " + text)
	}
	return text, nil
}

// Close closes every relay's breaker (Breaker.Close): the sends they hold
// back go with ErrSMTPUnavailable.
func (r *Relays) Close() {
	for _, rl := range r.list {
		rl.Breaker.Close()
	}
}
