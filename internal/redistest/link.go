package redistest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// link is a TCP relay on a loopback port of its own in front of a data
// node (its target): what connects to the link is connected to the node.
// On a connection that speaks as a replica (it sent REPLCONF), every byte
// the node sends is held delay before it is passed on: the replica
// receives the node's replication stream delay late, as over a distant or
// busy link. Other connections (clients, sentinels) pass at once both
// ways, and so does what the replica sends (its acknowledgements). Cut
// closes the link and every connection through it, dropping the bytes it
// holds: the bytes in flight that the crash of the node's host would lose.
type link struct {
	target string
	port   int
	delay  time.Duration

	mu    sync.Mutex
	ln    net.Listener // nil while cut
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// replicaMark is what a replica sends first on its link to a primary.
var replicaMark = []byte("REPLCONF")

// scanLimit bounds how much of a connection's first bytes a link reads for
// replicaMark.
const scanLimit = 4096

// newLink opens a link on port in front of target.
func newLink(port int, target string, delay time.Duration) (*link, error) {
	l := &link{target: target, port: port, delay: delay, conns: map[net.Conn]struct{}{}}
	return l, l.open()
}

func (l *link) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(l.port)) }

// open listens on the link's port and serves in the background.
func (l *link) open() error {
	ln, err := net.Listen("tcp", l.addr())
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("link %s: %w", l.addr(), errPortTaken)
	}
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	l.wg.Add(1)
	go l.serve(ln)
	return nil
}

func (l *link) serve(ln net.Listener) {
	defer l.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", l.target, probeTimeout)
		if err != nil {
			_ = c.Close() // the node is down: as a refused connection, at once
			continue
		}
		if !l.track(c, up) {
			return
		}
		replica := &atomic.Bool{}
		l.wg.Add(2)
		go l.forward(c, up, replica)
		go l.backward(up, c, replica)
	}
}

// track registers a connection's two ends; false (both closed) when the
// link was cut meanwhile.
func (l *link) track(conns ...net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln == nil {
		for _, c := range conns {
			_ = c.Close()
		}
		return false
	}
	for _, c := range conns {
		l.conns[c] = struct{}{}
	}
	return true
}

func (l *link) drop(conns ...net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
		delete(l.conns, c)
	}
}

// forward passes what the client sends to the node, at once, and marks
// the connection a replica's when it sends replicaMark.
func (l *link) forward(c, up net.Conn, replica *atomic.Bool) {
	defer l.wg.Done()
	defer l.drop(c, up)
	var seen []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if !replica.Load() && len(seen) < scanLimit {
				seen = append(seen, bytes.ToUpper(buf[:n])...)
				if bytes.Contains(seen, replicaMark) {
					replica.Store(true)
				}
			}
			if _, werr := up.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// chunk is bytes the node sent, and when they may be passed on.
type chunk struct {
	b  []byte
	at time.Time
}

// backward passes what the node sends to the client, a replica's delay
// late. One writer keeps the order; what it holds when the node's side
// ends is dropped.
func (l *link) backward(up, c net.Conn, replica *atomic.Bool) {
	defer l.wg.Done()
	defer l.drop(c, up)
	queue := make(chan chunk, 4096)
	done := make(chan struct{})
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			select {
			case <-done:
				return
			case ch := <-queue:
				if wait := time.Until(ch.at); wait > 0 {
					select {
					case <-done:
						return
					case <-time.After(wait):
					}
				}
				if _, err := c.Write(ch.b); err != nil {
					l.drop(c, up)
					return
				}
			}
		}
	}()
	defer close(done)
	buf := make([]byte, 32<<10)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			at := time.Now()
			if replica.Load() {
				at = at.Add(l.delay)
			}
			select {
			case queue <- chunk{b: bytes.Clone(buf[:n]), at: at}:
			case <-done:
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// cut closes the link's listener and every connection through it,
// dropping what it holds, and waits for its goroutines.
func (l *link) cut() {
	l.mu.Lock()
	if l.ln != nil {
		_ = l.ln.Close()
		l.ln = nil
	}
	for c := range l.conns {
		_ = c.Close()
		delete(l.conns, c)
	}
	l.mu.Unlock()
	l.wg.Wait()
}
