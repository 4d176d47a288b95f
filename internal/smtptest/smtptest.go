// Package smtptest provides an in-process SMTP server for tests and load
// harnesses.
//
// The server is built on github.com/emersion/go-smtp and listens on a free
// port of 127.0.0.1. It records every message it accepts (see Messages and
// WaitMessages), counts accepted connections (see Connections), can be taken
// down and brought back on the same port (Stop and Restart), and supports
// run-time fault injection (SetFault) and per-message latency (SetLatency).
//
// Optional features are enabled with options: WithAuth for AUTH PLAIN and
// LOGIN (WithAuthMechanisms to offer other sets), WithTLS for STARTTLS,
// WithImplicitTLS for implicit TLS, WithEnvelopeOnly for load runs,
// WithMaxConnections to cap the connections open at once and WithCommands
// to record the commands clients send. Both TLS options
// use a self-signed certificate generated in memory for 127.0.0.1, ::1 and
// localhost; clients trust it through RootCAs (or CertificatePEM).
//
// A typical test:
//
//	srv := smtptest.Start(t, smtptest.WithAuth("user", "pass"))
//	// ... send a mail to srv.Host(), srv.Port() ...
//	msgs := srv.WaitMessages(t, 1, 5*time.Second)
package smtptest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// ErrClosed is returned by Restart after Close.
var ErrClosed = errors.New("smtptest: server closed")

// shutdownTimeout bounds how long Stop waits for connection handlers to exit.
const shutdownTimeout = 10 * time.Second

// Option configures a Server created by Start or New.
type Option func(*config)

type config struct {
	user, pass   string
	auth         bool
	mechs        []string // WithAuthMechanisms; nil means PLAIN and LOGIN
	starttls     bool
	implicit     bool
	envelopeOnly bool
	smtputf8     bool
	maxConns     int  // WithMaxConnections; 0 means no cap
	commands     bool // WithCommands
	noPipelining bool // WithoutPipelining
}

// WithAuth makes the server offer AUTH PLAIN and LOGIN, as most relays
// do, and require a successful authentication with the given credentials
// before MAIL. Authentication is allowed on unencrypted connections, since
// the server only listens on loopback.
func WithAuth(user, pass string) Option {
	return func(c *config) {
		c.auth = true
		c.user = user
		c.pass = pass
	}
}

// WithAuthMechanisms makes a server of WithAuth offer the SASL mechanisms
// mechs, in that order, instead of PLAIN and LOGIN: sasl.Login alone, say,
// or "LOGIN XOAUTH2" as Microsoft 365 offers them. Only PLAIN and LOGIN
// can succeed; the server answers any other one offered as an unknown
// mechanism (454), and none with no mechanism at all offers no AUTH.
func WithAuthMechanisms(mechs ...string) Option {
	return func(c *config) { c.mechs = append([]string{}, mechs...) }
}

// WithTLS makes the server offer STARTTLS with an in-memory self-signed
// certificate. Clients should trust RootCAs.
func WithTLS() Option {
	return func(c *config) { c.starttls = true }
}

// WithImplicitTLS makes the server speak TLS from the first byte (as on port
// 465) with an in-memory self-signed certificate. Clients should trust
// RootCAs.
func WithImplicitTLS() Option {
	return func(c *config) { c.implicit = true }
}

// WithEnvelopeOnly makes the server record only the envelope (From, To),
// TLS and Accepted of each message: the data is read and discarded, not kept
// in Raw nor decoded. Load harnesses use it so that a long run neither holds
// every message in memory nor spends CPU decoding them.
func WithEnvelopeOnly() Option {
	return func(c *config) { c.envelopeOnly = true }
}

// WithSMTPUTF8 makes the server offer SMTPUTF8 (RFC 6531), which a client
// needs to send to a non-ASCII local part.
func WithSMTPUTF8() Option {
	return func(c *config) { c.smtputf8 = true }
}

// Server is an in-process SMTP server. All methods are safe for concurrent
// use.
type Server struct {
	cfg     config
	tlsConf *tls.Config
	roots   *x509.CertPool
	addr    string // fixed by New, reused by Restart
	port    int

	connections atomic.Int64
	peak        atomic.Int64 // PeakConnections

	mu      sync.Mutex
	cur     *run // nil while stopped
	closed  bool
	fault   Fault
	release chan struct{} // closed (and replaced) when the fault changes or the server stops
	latency time.Duration
	msgs    []Message
	msgCh   chan struct{} // closed (and replaced) when a message is recorded
	cmds    [][]string    // WithCommands: the command lines of each connection
	cmdCh   chan struct{} // closed (and replaced) when a command line is recorded
}

// run is one listening period of the server, between a listen and a Stop.
type run struct {
	srv       *smtp.Server
	ln        *trackingListener
	done      chan struct{} // closed when this run is stopped
	serveDone chan struct{} // closed when Serve returned
}

// Start starts a server for the duration of a test. It fails the test if the
// server cannot start and closes it in t.Cleanup.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	s, err := New(opts...)
	if err != nil {
		tb.Fatalf("smtptest: start: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("smtptest: close: %v", err)
		}
	})
	return s
}

// New starts a server outside of a test. The caller must call Close.
func New(opts ...Option) (*Server, error) {
	s := &Server{
		release: make(chan struct{}),
		msgCh:   make(chan struct{}),
		cmdCh:   make(chan struct{}),
	}
	for _, o := range opts {
		o(&s.cfg)
	}
	if s.cfg.starttls || s.cfg.implicit {
		conf, roots, err := selfSignedTLS()
		if err != nil {
			return nil, fmt.Errorf("smtptest: generate certificate: %w", err)
		}
		s.tlsConf, s.roots = conf, roots
	}
	addr, err := s.listen("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.addr = addr.String()
	s.port = addr.(*net.TCPAddr).Port
	return s, nil
}

// Addr returns the host:port the server listens on.
func (s *Server) Addr() string { return s.addr }

// Host returns the host the server listens on ("127.0.0.1").
func (s *Server) Host() string {
	h, _, _ := net.SplitHostPort(s.addr)
	return h
}

// Port returns the TCP port the server listens on. It does not change across
// Stop and Restart.
func (s *Server) Port() int { return s.port }

// RootCAs returns a pool holding the server's self-signed certificate, or nil
// when neither WithTLS nor WithImplicitTLS was given.
func (s *Server) RootCAs() *x509.CertPool { return s.roots }

// Connections returns the number of TCP connections accepted since the
// server was created, across restarts.
func (s *Server) Connections() int { return int(s.connections.Load()) }

// SetLatency makes the server wait d after receiving each message's data
// before answering the end of DATA. Zero disables the delay. The wait ends
// early when the server stops.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// Stop takes the server down: it closes the listener and every open
// connection and releases hung commands. Messages and counters are kept.
// Stop is a no-op on a stopped server.
func (s *Server) Stop() error {
	s.mu.Lock()
	r := s.cur
	s.cur = nil
	if r != nil {
		// Mark the run done before waking hung commands, so that they see
		// the stop and do not carry on.
		close(r.done)
	}
	s.releaseLocked()
	s.mu.Unlock()
	if r == nil {
		return nil
	}
	return r.shutdown()
}

// Restart listens again on the same address after Stop. It returns an error
// if the server is running, closed, or the port cannot be bound again.
func (s *Server) Restart() error {
	_, err := s.listen(s.addr)
	return err
}

// Close stops the server for good and waits for its goroutines to exit.
// Close is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return s.Stop()
}

// listen starts a new run on addr and returns the address it listens on.
func (s *Server) listen(addr string) (net.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.cur != nil {
		return nil, errors.New("smtptest: server already running")
	}

	inner, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("smtptest: listen: %w", err)
	}

	r := &run{
		done:      make(chan struct{}),
		serveDone: make(chan struct{}),
	}
	r.ln = &trackingListener{Listener: inner, s: s, conns: make(map[*trackedConn]struct{})}

	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return s.newSession(r, c), nil
	}))
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.EnableSMTPUTF8 = s.cfg.smtputf8
	srv.ErrorLog = log.New(io.Discard, "", 0)
	var ln net.Listener = r.ln
	if s.tlsConf != nil {
		srv.TLSConfig = s.tlsConf
		if s.cfg.implicit {
			ln = tls.NewListener(r.ln, s.tlsConf)
		}
	}
	r.srv = srv
	s.cur = r

	go func() {
		defer close(r.serveDone)
		_ = srv.Serve(ln)
	}()
	return inner.Addr(), nil
}

// shutdown closes the listener and all connections of r, then waits for the
// Serve loop and all connection handlers to return. r.done must be closed.
func (r *run) shutdown() error {
	r.ln.closeAll()
	<-r.serveDone
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	// Listeners are already closed, so Shutdown only waits for the handlers,
	// which exit because their connections are closed.
	if err := r.srv.Shutdown(ctx); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("smtptest: shutdown: %w", err)
	}
	return nil
}

// Messages returns a copy of all messages accepted so far, in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// Count returns the number of messages accepted so far.
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// ClearMessages forgets all recorded messages (useful for long load runs).
func (s *Server) ClearMessages() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = nil
}

// WaitMessages waits until at least n messages have been accepted and
// returns all recorded messages. It fails the test with t.Fatalf if that does
// not happen within timeout.
func (s *Server) WaitMessages(tb testing.TB, n int, timeout time.Duration) []Message {
	tb.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if len(s.msgs) >= n {
			msgs := slices.Clone(s.msgs)
			s.mu.Unlock()
			return msgs
		}
		got, ch := len(s.msgs), s.msgCh
		s.mu.Unlock()

		select {
		case <-ch:
		case <-timer.C:
			tb.Fatalf("smtptest: got %d messages after %s, want %d", got, timeout, n)
			return nil
		}
	}
}

func (s *Server) record(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	close(s.msgCh)
	s.msgCh = make(chan struct{})
}

// trackingListener counts and remembers accepted connections so that Stop can
// close them all, and applies StageConnect faults.
type trackingListener struct {
	net.Listener
	s *Server

	mu     sync.Mutex
	closed bool
	conns  map[*trackedConn]struct{}
}

func (l *trackingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.s.connections.Add(1)

		hang, reply, release := l.s.fire(StageConnect)
		if reply != nil {
			// Answer the greeting with the fault and hang up. The line is tiny,
			// so the write does not block on a fresh socket.
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(c, line(reply))
			_ = c.Close()
			continue
		}

		tc := &trackedConn{Conn: c, l: l, closing: make(chan struct{})}
		if hang {
			tc.hold = release
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = c.Close()
			return nil, net.ErrClosed
		}
		if most := l.s.cfg.maxConns; most > 0 && len(l.conns) >= most {
			l.mu.Unlock()
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(c, line(errTooMany))
			_ = c.Close()
			continue
		}
		l.conns[tc] = struct{}{}
		l.s.notePeak(len(l.conns))
		l.mu.Unlock()
		if l.s.cfg.commands && !l.s.cfg.implicit {
			tc.rec = l.s.newTranscript()
		}
		return tc, nil
	}
}

// closeAll closes the listener and every tracked connection.
func (l *trackingListener) closeAll() {
	l.mu.Lock()
	l.closed = true
	conns := make([]*trackedConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	_ = l.Listener.Close()
	for _, c := range conns {
		_ = c.Close()
	}
}

func (l *trackingListener) forget(c *trackedConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// trackedConn is a server-side connection. When hold is set (a StageConnect
// hang), its first write (the greeting, or the TLS handshake) blocks until
// the fault is released or the connection is closed.
type trackedConn struct {
	net.Conn
	l    *trackingListener
	hold <-chan struct{}
	rec  *transcript // WithCommands; nil when not recorded

	holdOnce  sync.Once
	closeOnce sync.Once
	closing   chan struct{}
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.rec != nil {
		c.rec.read(p[:n])
	}
	return n, err
}

func (c *trackedConn) Write(p []byte) (int, error) {
	if c.l.s.cfg.noPipelining {
		if i := bytes.Index(p, pipeliningLine); i >= 0 {
			q := slices.Concat(p[:i], p[i+len(pipeliningLine):])
			if _, err := c.Write(q); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	if c.rec != nil {
		c.rec.wrote(p)
	}
	if c.hold != nil {
		var err error
		c.holdOnce.Do(func() {
			select {
			case <-c.hold:
			case <-c.closing:
				err = net.ErrClosed
			}
		})
		if err != nil {
			return 0, err
		}
	}
	return c.Conn.Write(p)
}

func (c *trackedConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		close(c.closing)
		c.l.forget(c)
		err = c.Conn.Close()
	})
	return err
}
