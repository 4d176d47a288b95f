package mail

import (
	"context"
	"errors"

	"crypto/tls"
	"log/slog"
	"net"
	"net/smtp"
	"slices"
	"time"
)

// get returns an idle connection (reused = true) or dials a new one.
func (s *Sender) get(ctx context.Context) (c *conn, reused bool, err error) {
	now := time.Now()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, false, ErrSenderClosed
	}
	// s.idle is ordered by idleSince, so the expired ones are a prefix.
	n := 0
	for n < len(s.idle) && now.Sub(s.idle[n].idleSince) > s.cfg.IdleTimeout {
		n++
	}
	expired := slices.Clone(s.idle[:n])
	s.idle = slices.Delete(s.idle, 0, n)
	if last := len(s.idle) - 1; last >= 0 {
		c = s.idle[last]
		s.idle[last] = nil
		s.idle = s.idle[:last]
	}
	s.mu.Unlock()

	for _, e := range expired {
		e.abandon()
	}
	if c != nil {
		return c, true, nil
	}
	c, err = s.dial(ctx)
	return c, false, err
}

// put returns a healthy connection to the pool, or ends it if the pool is
// full or closed. It never waits for the server.
func (s *Sender) put(c *conn) {
	if c.poisoned {
		c.close()
		return
	}
	c.idleSince = time.Now()
	s.mu.Lock()
	if !s.closed && len(s.idle) < s.cfg.MaxIdle {
		s.idle = append(s.idle, c)
		c = nil
	}
	s.mu.Unlock()
	if c != nil {
		c.abandon()
	}
}

// dial opens, secures and authenticates a new connection, all within ctx.
func (s *Sender) dial(ctx context.Context) (*conn, error) {
	nc, err := s.dialer.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, s.wrap(ctx, "dial", err)
	}
	stop := watch(ctx, nc)
	c, err := s.handshake(ctx, nc)
	if !stop() && err == nil {
		c.poisoned = true
	}
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	s.log.DebugContext(ctx, "smtp connection opened", slog.String("addr", s.addr), slog.Bool("tls", c.tls))
	return c, nil
}

// handshake reads the greeting, sends EHLO and negotiates TLS and AUTH.
func (s *Sender) handshake(ctx context.Context, nc net.Conn) (*conn, error) {
	c := &conn{nc: nc}
	if s.implicit {
		tc := tls.Client(nc, s.tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, s.wrap(ctx, "TLS handshake", err)
		}
		c.nc, c.tls = tc, true
	}
	cl, err := smtp.NewClient(c.nc, s.cfg.Host)
	if err != nil {
		return nil, s.wrap(ctx, "greeting", err)
	}
	c.c = cl
	if err := cl.Hello(helloName); err != nil {
		return nil, s.wrap(ctx, "EHLO", err)
	}
	if !c.tls && s.cfg.TLS != TLSNone {
		offered, _ := cl.Extension("STARTTLS")
		switch {
		case offered:
			if err := cl.StartTLS(s.tlsConf); err != nil {
				return nil, s.wrap(ctx, "STARTTLS", err)
			}
			c.tls = true
		case s.cfg.TLS == TLSStartTLS:
			return nil, errNoStartTLS
		}
	}
	if s.cfg.Username != "" {
		ok, params := cl.Extension("AUTH")
		if !ok || !offersPlain(params) {
			return nil, errNoAuthPlain
		}
		if err := cl.Auth(&plainAuth{user: s.cfg.Username, pass: s.cfg.Password, host: s.cfg.Host}); err != nil {
			return nil, s.wrap(ctx, "AUTH", err)
		}
	}
	return c, nil
}

// helloName is the name sent with EHLO.
const helloName = "localhost"

var (
	errNoStartTLS  = errors.New("mail: STARTTLS required but not offered by the SMTP server")
	errNoAuthPlain = errors.New("mail: SMTP server does not offer AUTH PLAIN")
)

// close drops the connection without QUIT.
func (c *conn) close() { _ = c.nc.Close() }

// abandon sends QUIT without waiting for the reply and closes the
// connection, so that Send never waits on a connection it gives up.
func (c *conn) abandon() {
	_ = c.nc.SetDeadline(time.Now().Add(100 * time.Millisecond))
	_ = c.c.Text.PrintfLine("QUIT")
	_ = c.nc.Close()
}

// quit ends the session politely (QUIT and its reply), waiting at most
// timeout, and closes the connection.
func (c *conn) quit(timeout time.Duration) {
	_ = c.nc.SetDeadline(time.Now().Add(timeout))
	if err := c.c.Quit(); err != nil {
		_ = c.nc.Close()
	}
}
