package relay

import (
	"errors"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
)

// mechanism picks the SASL mechanism to authenticate with from an EHLO
// "AUTH" parameter list: PLAIN when offered, else LOGIN (which relays such
// as Microsoft 365 offer without PLAIN; it sends the same credentials, in
// two steps), else "" for neither.
func mechanism(params string) string {
	offered := strings.Fields(params)
	for _, want := range []string{sasl.Plain, sasl.Login} {
		for _, m := range offered {
			if strings.EqualFold(m, want) {
				return want
			}
		}
	}
	return ""
}

// saslClient returns the SASL client of mech (sasl.Plain or sasl.Login)
// with the credentials of cfg.
func saslClient(mech string, cfg Config) sasl.Client {
	if mech == sasl.Login {
		return sasl.NewLoginClient(cfg.Username, cfg.Password)
	}
	return sasl.NewPlainClient("", cfg.Username, cfg.Password)
}

// isLoopback reports whether host is "localhost" or a loopback IP.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// guard is the connection right under the SMTP client, above any TLS. It
// does two things go-smtp's client cannot be told to do:
//
//   - It keeps the client from cancelling an AUTH exchange that the server
//     has already ended. go-smtp's Client.Auth answers every failed AUTH with
//     "*", the cancel of RFC 4954, even after the server's final reply (535)
//     (emersion/go-smtp#316): the server then reads "*" as a command, and
//     Postfix logs "non-SMTP command" and drops the session. While AUTH
//     runs, guard lets through one write for each response the SASL
//     mechanism makes (the AUTH command, then each answer to a challenge)
//     and refuses any further one, which can only be that "*". The failed
//     Auth then returns the server's reply, the session is still in step,
//     and quit ends it with QUIT.
//   - It replays a greeting: verifyq reads the server's itself (see
//     handshake), and the client still expects one.
//   - It keeps the deadlines to verifyq. go-smtp's client sets a deadline
//     of its own around each command and clears it afterwards, which
//     would undo the one that bounds a send by its context (watch); the
//     guard ignores the client's, and verifyq sets them on the connection
//     under it.
type guard struct {
	net.Conn

	greeting []byte // read before the connection's own bytes

	mu     sync.Mutex
	armed  bool
	writes int // writes AUTH may still make while armed
}

// errCancelHeld is the refused write's error.
var errCancelHeld = errors.New("relay: AUTH cancel held back")

// Read implements net.Conn.
func (g *guard) Read(p []byte) (int, error) {
	if len(g.greeting) > 0 {
		n := copy(p, g.greeting)
		g.greeting = g.greeting[n:]
		return n, nil
	}
	return g.Conn.Read(p)
}

// SetDeadline implements net.Conn: it does nothing (see guard).
func (g *guard) SetDeadline(time.Time) error { return nil }

// SetReadDeadline implements net.Conn: it does nothing (see guard).
func (g *guard) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline implements net.Conn: it does nothing (see guard).
func (g *guard) SetWriteDeadline(time.Time) error { return nil }

// Write implements net.Conn.
func (g *guard) Write(p []byte) (int, error) {
	g.mu.Lock()
	if g.armed {
		if g.writes == 0 {
			g.mu.Unlock()
			return 0, errCancelHeld
		}
		g.writes--
	}
	g.mu.Unlock()
	return g.Conn.Write(p)
}

// arm starts (on) or ends (off) the AUTH exchange.
func (g *guard) arm(on bool) {
	g.mu.Lock()
	g.armed, g.writes = on, 0
	g.mu.Unlock()
}

// allow lets one more write through while armed.
func (g *guard) allow() {
	g.mu.Lock()
	g.writes++
	g.mu.Unlock()
}

// counted is a SASL mechanism that tells its guard of every response it
// makes, each of which the client writes.
type counted struct {
	sasl.Client
	g *guard
}

// Start implements sasl.Client.
func (c counted) Start() (string, []byte, error) {
	mech, ir, err := c.Client.Start()
	if err == nil {
		c.g.allow()
	}
	return mech, ir, err
}

// Next implements sasl.Client.
func (c counted) Next(challenge []byte) ([]byte, error) {
	resp, err := c.Client.Next(challenge)
	if err == nil && resp != nil {
		c.g.allow()
	}
	return resp, err
}
