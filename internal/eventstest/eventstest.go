// Package eventstest holds tests' recorder of events: it takes the place
// of events.Emitter where a package emits events (tasks.Events,
// service.Events, the bounce intake's) and keeps what it is told.
package eventstest

import (
	"context"
	"sync"
	"time"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/events"
)

// Recorder records the events it is told and the expiry checks it is
// asked to schedule. Its zero value is ready; it is safe for concurrent
// use.
type Recorder struct {
	mu      sync.Mutex
	events  []events.Event
	expiry  []string // the tasks whose expiry check was scheduled
	expires []time.Time
}

// Emit records ev.
func (r *Recorder) Emit(_ context.Context, ev events.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	return nil
}

// ScheduleExpiry records the check of task's code's expiry at at.
func (r *Recorder) ScheduleExpiry(_ context.Context, _ codes.ID, task string, at time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expiry = append(r.expiry, task)
	r.expires = append(r.expires, at)
	return nil
}

// Events returns the events recorded, in order.
func (r *Recorder) Events() []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]events.Event(nil), r.events...)
}

// Types returns the types of the events recorded, in order.
func (r *Recorder) Types() []events.Type {
	var out []events.Type
	for _, e := range r.Events() {
		out = append(out, e.Type)
	}
	return out
}

// Scheduled returns the tasks whose expiry check was scheduled and when.
func (r *Recorder) Scheduled() (tasks []string, at []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.expiry...), append([]time.Time(nil), r.expires...)
}
