// Package relay hands verifyq's mails to its SMTP relay: a small pool of
// connections, capped as the relay allows, each greeted with a proper name,
// secured and authenticated as configured, kept in step after a refused
// transaction (RSET) until the server has refused too much on it, and
// ended with QUIT. emersion/go-smtp greets, says EHLO, starts TLS and
// authenticates; the transaction is verifyq's own, pipelined where the
// server offers it (transaction.go). Every failure is an *Error that
// names the stage of the conversation it came at and the server's reply,
// which is what delivery.ClassOf reads to decide what the failure means.
package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"go.opentelemetry.io/otel/trace"

	"github.com/verifyq/verifyq/mail"
)

// Envelope is what MAIL FROM and RCPT TO say: bare addresses.
type Envelope struct {
	From, To string
}

// Client sends mails to one SMTP relay. It is safe for concurrent use.
type Client struct {
	cfg      Config
	addr     string // host:port
	implicit bool   // implicit TLS
	tlsConf  *tls.Config
	log      *slog.Logger
	dialer   net.Dialer
	pool     *pool
	tracer   trace.Tracer // nil: no spans
}

// NewClient validates cfg with Validate, applies defaults and returns a
// Client. It does not connect. A nil logger discards logs.
func NewClient(cfg Config, logger *slog.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.TLS, _ = ParseTLSMode(string(cfg.TLS))
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	tc := &tls.Config{}
	if cfg.TLSConfig != nil {
		tc = cfg.TLSConfig.Clone()
	}
	if cfg.RootCAs != nil {
		tc.RootCAs = cfg.RootCAs
	}
	switch {
	case cfg.ServerName != "":
		tc.ServerName = cfg.ServerName
	case tc.ServerName == "":
		tc.ServerName = cfg.Host
	}
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	cfg.TLSConfig = tc
	log := logger.With(slog.String("component", "relay"))
	var tracer trace.Tracer
	if cfg.TracerProvider != nil {
		tracer = cfg.TracerProvider.Tracer(TracerName)
	}
	return &Client{
		tracer:   tracer,
		cfg:      cfg,
		addr:     net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)),
		implicit: cfg.TLS == TLSImplicit || (cfg.TLS == TLSAuto && cfg.Port == portSMTPS),
		tlsConf:  tc,
		log:      log,
		pool:     newPool(cfg.MaxConns, cfg.IdleTimeout, log),
	}, nil
}

// Send delivers msg, the whole message as DATA carries it, to env.To. It
// returns within the configured Timeout (or earlier, when ctx ends),
// including the wait for a free connection. A pooled connection found dead
// on its first command is replaced once by a fresh one; nothing is retried
// once the server could have accepted the message. SMTPUTF8 is asked for
// only when an address needs it.
//
// A failure is an *Error naming the stage and the server's reply, if any.
//
// With a TracerProvider, each Send is a client span (SpanSend) naming the
// relay, with an event per stage of the transaction and, on failure, the
// stage and the reply's codes (never its text, never an address).
func (c *Client) Send(ctx context.Context, env Envelope, msg io.WriterTo) (err error) {
	if c.tracer != nil {
		var span trace.Span
		ctx, span = c.startSpan(ctx)
		defer func() { endSpan(span, err) }()
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	to := mail.ASCIIDomain(env.To)
	needUTF8 := !mail.IsASCII(to) || !mail.IsASCII(env.From)
	logTo := slog.Any("to", mail.Masked(env.To)) // masked only on a line that is logged
	start := time.Now()
	for fresh := false; ; fresh = true {
		s, reused, err := c.pool.get(ctx, c.dial, false)
		if err != nil {
			c.log.DebugContext(ctx, "smtp connect failed", logTo, slog.Any("error", err))
			return err
		}
		c.connected(ctx, reused, s.tls)
		inStep, sent, err := c.transaction(ctx, s, env.From, to, needUTF8, msg)
		if err == nil {
			c.pool.put(s)
			c.log.DebugContext(ctx, "mail sent", logTo,
				slog.Bool("reused_conn", reused), slog.Bool("tls", s.tls), slog.Duration("elapsed", time.Since(start)))
			return nil
		}
		if reused && !fresh && StageOf(err) == StageMail && isDeadConn(err) && ctx.Err() == nil {
			// The server closed the idle connection (restart, idle
			// timeout): nothing was sent yet, so one retry on a fresh
			// connection is safe.
			c.log.DebugContext(ctx, "pooled smtp connection was dead, retrying on a new one", logTo, slog.Any("error", err))
			c.pool.drop(s, false)
			continue
		}
		// After a refused transaction the session is still in step: RSET
		// keeps it for the next mail instead of a new handshake, unless
		// the server has refused enough on it to start slowing it down.
		if inStep && ctx.Err() == nil && s.refusals < maxRefusals && (!sent || s.reset() == nil) {
			c.pool.put(s)
		} else {
			c.pool.drop(s, inStep)
		}
		c.log.DebugContext(ctx, "mail send failed", logTo,
			slog.Bool("reused_conn", reused), slog.Duration("elapsed", time.Since(start)), slog.Any("error", err))
		return err
	}
}

// Probe checks that the relay can take mail, without sending any: it opens
// a new connection as Send would (greeting, EHLO, STARTTLS and AUTH as
// configured), within the configured Timeout or ctx, whichever ends first,
// and within the connection cap (closing an idle connection for it when
// the cap is reached). The connection then joins the idle pool, so the
// next Send reuses it. It returns what Send would have returned for a
// failed connection.
func (c *Client) Probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	s, _, err := c.pool.get(ctx, c.dial, true)
	if err != nil {
		return err
	}
	c.pool.put(s)
	return nil
}

// Close ends the idle connections (with QUIT) and makes later Sends fail
// with ErrClosed. Sends in flight finish normally and end their connection
// afterwards. Close waits for every QUIT it starts and is idempotent.
func (c *Client) Close() error {
	c.pool.close()
	return nil
}

// Timeout is the bound on one Send or Probe: Config.Timeout, or
// DefaultTimeout when that was zero.
func (c *Client) Timeout() time.Duration { return c.cfg.Timeout }

// session is one SMTP connection, greeted, secured and authenticated as
// configured, ready for MAIL.
type session struct {
	c          *smtp.Client    // the handshake's: greeting, EHLO, STARTTLS, AUTH
	text       *textproto.Conn // everything after it (transaction.go)
	g          *guard
	tls        bool
	utf8       bool // the server offers SMTPUTF8
	eightBit   bool // the server offers 8BITMIME
	pipelining bool // the server offers PIPELINING
	idleSince  time.Time
	poisoned   bool // ctx ended during use: the deadline is unusable
	refusals   int  // refusals since the last mail the session delivered
}

// dial opens, greets, secures and authenticates a new connection, all
// within ctx.
func (c *Client) dial(ctx context.Context) (*session, error) {
	c.stage(ctx, StageConnect)
	nc, err := c.dialer.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, fail(ctx, StageConnect, err)
	}
	stop := watch(ctx, nc)
	s, err := c.handshake(ctx, nc)
	if !stop() && err == nil {
		s.poisoned = true
	}
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	c.log.DebugContext(ctx, "smtp connection opened", slog.String("addr", c.addr), slog.Bool("tls", s.tls))
	return s, nil
}

// handshake reads the greeting, sends EHLO and negotiates TLS and AUTH.
// verifyq reads the greeting itself (so that a refusal there is told from
// one at EHLO) and, for STARTTLS, runs the STARTTLS command itself, so that
// the guard under the SMTP client sits above TLS (see guard).
func (c *Client) handshake(ctx context.Context, nc net.Conn) (*session, error) {
	name := c.cfg.HelloName
	if name == "" {
		name = addressLiteral(nc.LocalAddr())
	}
	conn, secure := nc, false
	if c.implicit {
		tc := tls.Client(nc, c.tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fail(ctx, StageTLS, err)
		}
		conn, secure = tc, true
	}
	greeting, err := readGreeting(conn)
	if err != nil {
		if !secure && c.cfg.TLS == TLSAuto && IsTimeout(err) {
			err = fmt.Errorf("%w: %w", ErrNoGreeting, err)
		}
		return nil, fail(ctx, StageGreeting, err)
	}
	s, err := c.hello(ctx, conn, greeting, name)
	if err != nil {
		return nil, err
	}
	s.tls = secure
	if !secure && c.cfg.TLS != TLSNone {
		offered, _ := s.c.Extension("STARTTLS")
		switch {
		case offered:
			tc, err := startTLS(ctx, conn, c.tlsConf)
			if err != nil {
				return nil, err
			}
			if s, err = c.hello(ctx, tc, greeting, name); err != nil {
				return nil, err
			}
			s.tls = true
		case c.cfg.TLS == TLSStartTLS:
			return nil, &Error{Stage: StageHello, Err: ErrNoStartTLS}
		}
	}
	s.utf8, _ = s.c.Extension("SMTPUTF8")
	s.eightBit, _ = s.c.Extension("8BITMIME")
	s.pipelining, _ = s.c.Extension("PIPELINING")
	if c.cfg.Username != "" {
		if err := c.auth(ctx, s); err != nil {
			return nil, err
		}
	}
	s.text = newText(s.g)
	return s, nil
}

// hello starts the SMTP client on conn, replaying the greeting read
// before, and sends EHLO.
func (c *Client) hello(ctx context.Context, conn net.Conn, greeting []byte, name string) (*session, error) {
	g := &guard{Conn: conn, greeting: greeting}
	cl := smtp.NewClient(g)
	if err := cl.Hello(name); err != nil {
		return nil, fail(ctx, StageHello, err)
	}
	return &session{c: cl, g: g}, nil
}

// auth authenticates s with AUTH PLAIN, or AUTH LOGIN when the server
// offers LOGIN and not PLAIN, only over TLS or to a loopback host. After a
// refusal it ends the session with QUIT itself: the client cannot (see
// guard).
func (c *Client) auth(ctx context.Context, s *session) error {
	if !s.tls && !isLoopback(c.cfg.Host) {
		return &Error{Stage: StageAuth, Err: ErrInsecureAuth}
	}
	_, params := s.c.Extension("AUTH")
	mech := mechanism(params)
	if mech == "" {
		return &Error{Stage: StageAuth, Err: ErrNoAuthMechanism}
	}
	s.g.arm(true)
	err := s.c.Auth(counted{Client: saslClient(mech, c.cfg), g: s.g})
	s.g.arm(false)
	if err != nil {
		_, _ = s.g.Conn.Write([]byte("QUIT\r\n"))
		return fail(ctx, StageAuth, err)
	}
	return nil
}

// maxGreeting bounds the greeting read, in bytes.
const maxGreeting = 4096

// readGreeting reads the server's greeting on conn and returns a reply
// for the SMTP client to read in its place. A refusal is a *smtp.SMTPError
// as the client would have returned it.
func readGreeting(conn net.Conn) ([]byte, error) {
	r := textproto.NewReader(bufio.NewReaderSize(io.LimitReader(conn, maxGreeting), 512))
	code, msg, err := r.ReadResponse(220)
	if err != nil {
		var te *textproto.Error
		if errors.As(err, &te) {
			return nil, replyOf(code, msg)
		}
		return nil, err
	}
	return []byte("220 greeted\r\n"), nil
}

// startTLS runs STARTTLS on conn, which the SMTP client above it has left
// with nothing unread, and the TLS handshake.
func startTLS(ctx context.Context, conn net.Conn, conf *tls.Config) (*tls.Conn, error) {
	if _, err := conn.Write([]byte("STARTTLS\r\n")); err != nil {
		return nil, fail(ctx, StageHello, err)
	}
	r := textproto.NewReader(bufio.NewReaderSize(io.LimitReader(conn, maxGreeting), 512))
	code, msg, err := r.ReadResponse(220)
	if err != nil {
		var te *textproto.Error
		if errors.As(err, &te) {
			return nil, fail(ctx, StageHello, replyOf(code, msg))
		}
		return nil, fail(ctx, StageHello, err)
	}
	tc := tls.Client(conn, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fail(ctx, StageTLS, err)
	}
	return tc, nil
}

// replyOf is a reply as go-smtp's client reports it.
func replyOf(code int, msg string) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: code, Message: msg}
	if ec, rest, ok := cutEnhanced(msg); ok {
		e.EnhancedCode, e.Message = ec, rest
	}
	return e
}

// cutEnhanced splits an enhanced status code ("4.7.0") off a reply text.
// The code ends at any white space: a multi-line reply's lines come joined
// by "\n", and a server may put the code alone on the first line
// ("550-5.7.1", then "550 5.7.1 Relaying denied"). RFC 2034 repeats the
// code on every line; the rest keeps it on none.
func cutEnhanced(msg string) (smtp.EnhancedCode, string, bool) {
	var ec smtp.EnhancedCode
	word, _, _ := cutWord(msg)
	n, err := fmt.Sscanf(word, "%d.%d.%d", &ec[0], &ec[1], &ec[2])
	if err != nil || n != 3 || (ec[0] != 2 && ec[0] != 4 && ec[0] != 5) ||
		ec[1] < 0 || ec[1] > 999 || ec[2] < 0 || ec[2] > 999 ||
		word != fmt.Sprintf("%d.%d.%d", ec[0], ec[1], ec[2]) {
		return smtp.EnhancedCode{}, msg, false
	}
	lines := strings.Split(msg, "\n")
	for i, l := range lines {
		if w, rest, _ := cutWord(l); w == word {
			lines[i] = rest
		}
	}
	if lines[0] == "" && len(lines) > 1 {
		lines = lines[1:] // the code alone on the first line
	}
	return ec, strings.Join(lines, "\n"), true
}

// cutWord cuts s at its first white space (a space, a tab, a line break).
func cutWord(s string) (word, rest string, found bool) {
	i := strings.IndexAny(s, " \t\r\n\v\f")
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

// watch bounds I/O on nc by ctx: it sets nc's deadline to ctx's deadline and
// moves it to the past as soon as ctx ends, so a blocked read or write
// returns at once. The returned stop reports false if ctx ended first, in
// which case nc must not be reused.
func watch(ctx context.Context, nc net.Conn) (stop func() bool) {
	deadline, _ := ctx.Deadline() // always set: Send adds the Timeout
	_ = nc.SetDeadline(deadline)
	return context.AfterFunc(ctx, func() {
		_ = nc.SetDeadline(aLongTimeAgo)
	})
}

// aLongTimeAgo is a deadline that has already passed.
var aLongTimeAgo = time.Unix(1, 0)

// IsTimeout reports whether err is a timeout: of a context, a deadline or
// the network.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
