package relay

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Pool timing.
const (
	// throttleFor is how long the pool keeps to fewer connections after
	// the relay refused one at its greeting (421); then it tries one more
	// connection, again after each such period, up to the cap.
	throttleFor = 30 * time.Second
	// quitTimeout bounds the wait for the reply to QUIT.
	quitTimeout = 2 * time.Second
)

// pool holds a Client's sessions: at most limit open at once, idle or in
// use. limit is the configured cap, or less for a while after the relay
// refused a connection at its greeting (421): the relay's own cap is lower
// than verifyq's, and the sends wait for a connection in use instead of
// failing.
type pool struct {
	max         int
	idleTimeout time.Duration
	log         *slog.Logger

	mu        sync.Mutex
	idle      []*session // oldest first
	open      int        // sessions open or being opened
	limit     int
	restoreAt time.Time     // when limit < max: when to raise it by one
	freed     chan struct{} // closed and replaced when a session or a slot frees
	closed    bool
	quitting  sync.WaitGroup
}

func newPool(most int, idleTimeout time.Duration, log *slog.Logger) *pool {
	return &pool{max: most, limit: most, idleTimeout: idleTimeout, log: log, freed: make(chan struct{})}
}

// get returns an idle session (reused), or a new one from dial when fewer
// than limit are open, or waits for one of these until ctx ends. fresh
// asks for a new session: an idle one is ended to make room if need be.
func (p *pool) get(ctx context.Context, dial func(context.Context) (*session, error), fresh bool) (s *session, reused bool, err error) {
	for {
		now := time.Now()
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, false, &Error{Stage: StageConnect, Err: ErrClosed}
		}
		if p.limit < p.max && now.After(p.restoreAt) {
			p.limit++
			p.restoreAt = now.Add(throttleFor)
		}
		// p.idle is ordered by idleSince, so the expired ones are a prefix.
		n := 0
		for n < len(p.idle) && (now.Sub(p.idle[n].idleSince) > p.idleTimeout || (fresh && n == 0 && p.open >= p.limit)) {
			n++
		}
		for _, e := range p.idle[:n] {
			p.endLocked(e, true)
		}
		p.idle = slices.Delete(p.idle, 0, n)
		if last := len(p.idle) - 1; last >= 0 && !fresh {
			s = p.idle[last]
			p.idle[last] = nil
			p.idle = p.idle[:last]
			p.mu.Unlock()
			return s, true, nil
		}
		if p.open < p.limit {
			p.open++
			p.mu.Unlock()
			s, err := dial(ctx)
			if err == nil {
				return s, false, nil
			}
			if p.release(err) && ctx.Err() == nil {
				continue // wait for a session in use
			}
			return nil, false, err
		}
		freed, limit := p.freed, p.limit
		p.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return nil, false, &Error{Stage: StageConnect, Err: fmt.Errorf("waiting for one of %d connections: %w", limit, ctx.Err())}
		}
	}
}

// release gives back the slot of a dial that failed with err. When the
// relay refused the connection at its greeting (421) while others are
// open, it lowers limit to those, and reports true: the caller waits for
// one of them.
func (p *pool) release(err error) (throttled bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open--
	p.signalLocked()
	e := ReplyError(err)
	if e == nil || e.Stage != StageGreeting || e.Code != 421 || p.open == 0 {
		return false
	}
	if p.open < p.limit {
		p.log.Warn("relay refused a connection at its greeting: keeping to fewer connections for a while",
			"reply", e.Code, "enhanced", e.Enhanced, "connections", p.open, "cap", p.max, "for", throttleFor.String())
		p.limit = p.open
	}
	p.restoreAt = time.Now().Add(throttleFor)
	return true
}

// put returns a session to the idle list, or ends it when it cannot be
// reused or more are open than limit allows now.
func (p *pool) put(s *session) {
	if s.poisoned {
		p.drop(s, false)
		return
	}
	s.idleSince = time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.open > p.limit {
		p.endLocked(s, true)
		return
	}
	p.idle = append(p.idle, s)
	p.signalLocked()
}

// drop ends a session that is not coming back: with QUIT when it is still
// in step (polite), else by closing it.
func (p *pool) drop(s *session, polite bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endLocked(s, polite && !s.poisoned)
}

// endLocked ends s. Closed at once (impolite, or the pool closed, so that
// nothing is left behind a closed pool), its slot frees at once; ended
// with QUIT in the background, its slot frees only when the relay has
// answered, since until then the relay counts the connection against its
// own cap (close waits for those).
func (p *pool) endLocked(s *session, polite bool) {
	if !polite || p.closed {
		p.open--
		p.signalLocked()
		if polite {
			// Sends still in flight after close end their own sessions.
			_ = s.g.Conn.SetDeadline(time.Now().Add(quitTimeout))
			_, _ = s.g.Conn.Write([]byte("QUIT\r\n"))
		}
		_ = s.g.Conn.Close()
		return
	}
	p.quitting.Add(1)
	go func() {
		defer p.quitting.Done()
		s.quit(quitTimeout)
		p.mu.Lock()
		p.open--
		p.signalLocked()
		p.mu.Unlock()
	}()
}

func (p *pool) signalLocked() {
	close(p.freed)
	p.freed = make(chan struct{})
}

// close ends the idle sessions with QUIT and waits for every QUIT under
// way.
func (p *pool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	for _, s := range idle {
		p.endLocked(s, true) // still open: in the background, waited for below
	}
	p.closed = true
	p.mu.Unlock()
	p.quitting.Wait()
}
