package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/smtp"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"gopkg.in/gomail.v2"

	"github.com/verifyq/verifyq/internal/field"
)

// TLSMode selects how the Sender secures its SMTP connections.
type TLSMode string

// TLS modes.
const (
	// TLSAuto uses implicit TLS on port 465 and otherwise STARTTLS when the
	// server offers it, plain text when it does not. A failed STARTTLS
	// handshake fails the send; there is no fallback to plain text.
	TLSAuto TLSMode = "auto"
	// TLSNone never uses TLS.
	TLSNone TLSMode = "none"
	// TLSStartTLS requires STARTTLS; a server that does not offer it fails
	// the send.
	TLSStartTLS TLSMode = "starttls"
	// TLSImplicit speaks TLS from the first byte (SMTPS).
	TLSImplicit TLSMode = "tls"
)

// ParseTLSMode parses "auto", "none", "starttls" or "tls", case-insensitively.
// The empty string yields TLSAuto.
func ParseTLSMode(s string) (TLSMode, error) {
	switch m := TLSMode(strings.ToLower(strings.TrimSpace(s))); m {
	case "":
		return TLSAuto, nil
	case TLSAuto, TLSNone, TLSStartTLS, TLSImplicit:
		return m, nil
	}
	return "", fmt.Errorf("%q: want auto, none, starttls or tls", s)
}

// Defaults applied by NewSender to zero SMTPConfig fields.
const (
	DefaultTimeout     = 30 * time.Second
	DefaultMaxIdle     = 4
	DefaultIdleTimeout = 30 * time.Second
)

// SMTPConfig configures a Sender.
type SMTPConfig struct {
	// Host is the SMTP server's host name or IP address.
	Host string
	// Port is the SMTP server's TCP port, e.g. 587 or 465.
	Port int
	// Username and Password enable AUTH PLAIN when Username is set. The
	// credentials are only sent over TLS or to a loopback host.
	Username, Password string
	// TLS is the TLS mode; empty means TLSAuto.
	TLS TLSMode
	// From is the sender, a bare address or "Name <address>".
	From string
	// ReplyTo, when set, is the Reply-To address, in the same forms as
	// From.
	ReplyTo string
	// Templates make the mails; nil means DefaultTemplates (see
	// LoadTemplates).
	Templates *Templates
	// Timeout bounds every Send, including dial, TLS, auth and the whole
	// transaction. Zero means DefaultTimeout.
	Timeout time.Duration
	// MaxIdle is how many idle connections are kept for reuse. Zero means
	// DefaultMaxIdle; a negative value disables reuse.
	MaxIdle int
	// IdleTimeout drops idle connections unused for longer than this. Zero
	// means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// TLSConfig is optional (tests set RootCAs). It is cloned; ServerName
	// defaults to Host and MinVersion to TLS 1.2.
	TLSConfig *tls.Config
}

// Sender delivers verification mails over SMTP. It keeps a small pool of
// idle connections and is safe for concurrent use.
type Sender struct {
	cfg      SMTPConfig
	envFrom  string // envelope sender (MAIL FROM)
	addr     string // host:port
	implicit bool   // implicit TLS
	tlsConf  *tls.Config
	log      *slog.Logger
	dialer   net.Dialer

	mu     sync.Mutex
	idle   []*conn // oldest first
	closed bool
}

// conn is one SMTP connection, authenticated and ready for MAIL.
type conn struct {
	nc        net.Conn // outermost connection (TLS or TCP)
	c         *smtp.Client
	tls       bool
	idleSince time.Time
	poisoned  bool // ctx ended during use: the deadline is unusable
}

// Validate reports every problem with cfg at once, each a *field.Error
// named after its field (Host, Port, TLS, From, ReplyTo, Password,
// Timeout, IdleTimeout), so a binary can report it under its environment variable.
// It never repeats the password.
func (cfg SMTPConfig) Validate() error {
	var errs []error
	if !validHost(cfg.Host) {
		errs = append(errs, field.Errorf("Host", "empty or malformed"))
	}
	if !validPort(cfg.Port) {
		errs = append(errs, field.Errorf("Port", "%d is not in 1..65535", cfg.Port))
	}
	if _, err := ParseTLSMode(string(cfg.TLS)); err != nil {
		errs = append(errs, &field.Error{Field: "TLS", Err: err})
	}
	if _, err := parseFrom(cfg.From); err != nil {
		errs = append(errs, &field.Error{Field: "From", Err: err})
	}
	if cfg.ReplyTo != "" {
		if _, err := parseFrom(cfg.ReplyTo); err != nil {
			errs = append(errs, &field.Error{Field: "ReplyTo", Err: err})
		}
	}
	if cfg.Username == "" && cfg.Password != "" {
		errs = append(errs, field.Errorf("Password", "set without a username"))
	}
	if cfg.Timeout < 0 {
		errs = append(errs, field.Errorf("Timeout", "%s is negative", cfg.Timeout))
	}
	if cfg.IdleTimeout < 0 {
		errs = append(errs, field.Errorf("IdleTimeout", "%s is negative", cfg.IdleTimeout))
	}
	return errors.Join(errs...)
}

// String shows the server, the user and the TLS mode, never the password.
func (cfg SMTPConfig) String() string {
	user := ""
	if cfg.Username != "" {
		user = cfg.Username + ":[redacted]@"
	}
	return fmt.Sprintf("smtp %s%s tls=%s timeout=%s", user, net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)), cfg.TLS, cfg.Timeout)
}

// GoString is String: %#v never shows the password either.
func (cfg SMTPConfig) GoString() string { return cfg.String() }

// validHost reports whether host is a host name or IP address: not empty,
// no space, control character or slash.
func validHost(host string) bool {
	return host != "" && !strings.ContainsFunc(host, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || r == '/'
	})
}

func validPort(port int) bool { return port >= 1 && port <= 65535 }

// Default ports of an SMTP URL without one.
const (
	portSMTP  = 25
	portSMTPS = 465
)

// ParseSMTPURL parses an SMTP server URL into the SMTPConfig fields it
// sets: Host, Port, Username, Password, TLS and Timeout.
//
//	smtp://[user[:password]@]host[:port][?tls=auto|starttls|none][&timeout=10s]
//	smtps://[user[:password]@]host[:port][?timeout=10s]
//
// smtp:// takes the TLS mode of its tls parameter (TLSAuto when absent),
// smtps:// is TLSImplicit; the port defaults to 25 and 465. The user and
// password are URL-decoded (percent-encode "@", ":", "/" and "%" in them).
// A timeout absent leaves Timeout zero. Every problem is reported at once;
// no error repeats the URL or any part of it.
func ParseSMTPURL(s string) (SMTPConfig, error) {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" {
		return SMTPConfig{}, errors.New("not a valid URL: smtp://user:password@host:port, " +
			"with special characters of the user and password percent-encoded")
	}
	var cfg SMTPConfig
	var errs []error
	defaultPort := portSMTP
	switch u.Scheme {
	case "smtp":
		cfg.TLS = TLSAuto
	case "smtps":
		cfg.TLS, defaultPort = TLSImplicit, portSMTPS
	default:
		errs = append(errs, errors.New("want the scheme smtp:// or smtps:// (implicit TLS)"))
	}
	cfg.Host = u.Hostname()
	if !validHost(cfg.Host) {
		errs = append(errs, errors.New("the host is empty or malformed"))
	}
	cfg.Port = defaultPort
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || !validPort(n) {
			errs = append(errs, errors.New("the port is not in 1..65535"))
		}
		cfg.Port = n
	}
	if u.User != nil {
		cfg.Username = u.User.Username()
		cfg.Password, _ = u.User.Password()
		if cfg.Username == "" && cfg.Password != "" {
			errs = append(errs, errors.New("a password without a user"))
		}
	}
	if (u.Path != "" && u.Path != "/") || u.Fragment != "" {
		errs = append(errs, errors.New("want no path and no fragment"))
	}
	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		errs = append(errs, errors.New("the query is malformed"))
	}
	for _, name := range slices.Sorted(maps.Keys(query)) {
		values := query[name]
		if name != "tls" && name != "timeout" {
			errs = append(errs, errors.New("an unknown parameter: want only tls and timeout"))
			continue
		}
		if len(values) > 1 {
			errs = append(errs, fmt.Errorf("%s: given twice", name))
			continue
		}
		switch v := values[0]; name {
		case "tls":
			mode, err := ParseTLSMode(v)
			switch {
			case err != nil || mode == TLSImplicit:
				errs = append(errs, errors.New("tls: want auto, starttls or none (smtps:// for implicit TLS)"))
			case cfg.TLS == TLSImplicit:
				errs = append(errs, errors.New("tls: smtps:// is always implicit TLS: use smtp:// with tls"))
			default:
				cfg.TLS = mode
			}
		default: // timeout
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				errs = append(errs, errors.New("timeout: want a positive duration such as 10s"))
			}
			cfg.Timeout = d
		}
	}
	if err := errors.Join(errs...); err != nil {
		return SMTPConfig{}, err
	}
	return cfg, nil
}

// NewSender validates cfg with Validate, applies defaults and returns a
// Sender. It does not connect. A nil logger discards logs.
func NewSender(cfg SMTPConfig, logger *slog.Logger) (*Sender, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.TLS, _ = ParseTLSMode(string(cfg.TLS))
	from, _ := parseFrom(cfg.From)
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	switch {
	case cfg.MaxIdle < 0:
		cfg.MaxIdle = 0
	case cfg.MaxIdle == 0:
		cfg.MaxIdle = DefaultMaxIdle
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.Templates == nil {
		cfg.Templates = DefaultTemplates()
	}

	var tc *tls.Config
	if cfg.TLSConfig != nil {
		tc = cfg.TLSConfig.Clone()
	} else {
		tc = &tls.Config{}
	}
	if tc.ServerName == "" {
		tc.ServerName = cfg.Host
	}
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	cfg.TLSConfig = tc

	return &Sender{
		cfg:      cfg,
		envFrom:  from.Address,
		addr:     net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)),
		implicit: cfg.TLS == TLSImplicit || (cfg.TLS == TLSAuto && cfg.Port == 465),
		tlsConf:  tc,
		log:      logger.With(slog.String("component", "mail.sender")),
	}, nil
}

// Send composes m and delivers it. It returns within the configured Timeout
// (or earlier, when ctx ends). A pooled connection found dead on its first
// command is replaced once by a fresh one; nothing is retried once the
// server could have accepted the message.
//
// A 4xx or 5xx reply is returned as a wrapped *SMTPError; use IsPermanent to
// decide whether to retry. Other errors (network, timeout, ctx) are
// temporary.
func (s *Sender) Send(ctx context.Context, m Message) error {
	msg, err := s.cfg.Templates.Compose(s.cfg.From, s.cfg.ReplyTo, m)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()

	start := time.Now()
	to := slog.Any("to", Masked(m.To)) // masked only on a line that is logged

	c, reused, err := s.get(ctx)
	if err != nil {
		s.log.DebugContext(ctx, "smtp connect failed", to, slog.Any("error", err))
		return err
	}
	atMail, err := s.deliver(ctx, c, m.To, msg)
	if err != nil && reused && atMail && isDeadConn(err) && ctx.Err() == nil {
		// The server closed the idle connection (restart, idle timeout):
		// nothing was sent yet, so one retry on a fresh connection is safe.
		s.log.DebugContext(ctx, "pooled smtp connection was dead, retrying on a new one", to, slog.Any("error", err))
		c.close()
		if c, err = s.dial(ctx); err != nil {
			s.log.DebugContext(ctx, "smtp connect failed", to, slog.Any("error", err))
			return err
		}
		reused = false
		_, err = s.deliver(ctx, c, m.To, msg)
	}
	if err != nil {
		c.close()
		s.log.DebugContext(ctx, "mail send failed", to,
			slog.Bool("reused_conn", reused), slog.Duration("elapsed", time.Since(start)), slog.Any("error", err))
		return err
	}
	s.put(c)
	s.log.DebugContext(ctx, "mail sent", to,
		slog.Bool("reused_conn", reused), slog.Bool("tls", c.tls), slog.Duration("elapsed", time.Since(start)))
	return nil
}

// Close closes the idle connections (with QUIT) and makes later Sends fail
// with ErrSenderClosed. Sends in flight finish normally and close their
// connection afterwards. Close is idempotent.
func (s *Sender) Close() error {
	s.mu.Lock()
	s.closed = true
	idle := s.idle
	s.idle = nil
	s.mu.Unlock()

	var wg sync.WaitGroup
	for _, c := range idle {
		wg.Go(func() { c.quit(s.cfg.Timeout) })
	}
	wg.Wait()
	return nil
}

// deliver runs one mail transaction (MAIL, RCPT, DATA) on c. atMail reports
// that the error came from the first command (MAIL), before anything of the
// message was sent, which is the only point where a retry cannot duplicate
// the mail. After an error c must be closed.
func (s *Sender) deliver(ctx context.Context, c *conn, to string, msg *gomail.Message) (atMail bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("mail: send: %w", err)
	}
	stop := watch(ctx, c.nc)
	atMail, err = s.transaction(ctx, c, to, msg)
	if !stop() {
		// ctx ended meanwhile and poisoned the connection's deadline; the
		// transaction's own result still stands.
		c.poisoned = true
	}
	return atMail, err
}

func (s *Sender) transaction(ctx context.Context, c *conn, to string, msg *gomail.Message) (atMail bool, err error) {
	if err := c.c.Mail(s.envFrom); err != nil {
		return true, s.wrap(ctx, "MAIL FROM", err)
	}
	return false, s.send(ctx, c, to, msg)
}

// send runs RCPT and DATA after a successful MAIL.
func (s *Sender) send(ctx context.Context, c *conn, to string, msg *gomail.Message) error {
	to = ASCIIDomain(to)
	if ok, _ := c.c.Extension("SMTPUTF8"); !ok && !isASCII(to) {
		return fmt.Errorf("mail: RCPT TO: %w: a non-ASCII local part needs SMTPUTF8, which the server does not offer", ErrInvalidAddress)
	}
	if err := c.c.Rcpt(to); err != nil {
		return s.wrap(ctx, "RCPT TO", err)
	}
	w, err := c.c.Data()
	if err != nil {
		return s.wrap(ctx, "DATA", err)
	}
	if _, err := msg.WriteTo(w); err != nil {
		_ = w.Close()
		return s.wrap(ctx, "DATA write", err)
	}
	if err := w.Close(); err != nil {
		return s.wrap(ctx, "end of DATA", err)
	}
	return nil
}

// wrap converts a reply error into *SMTPError and names the failed step.
// For other errors it prefers ctx's error, since an expired or cancelled ctx
// is what turns into the i/o timeout seen on the connection.
func (s *Sender) wrap(ctx context.Context, op string, err error) error {
	err = asSMTPError(err)
	var se *SMTPError
	if errors.As(err, &se) {
		return fmt.Errorf("mail: %s: %w", op, err)
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("mail: %s: %w (%w)", op, cerr, err)
	}
	return fmt.Errorf("mail: %s: %w", op, err)
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

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// Probe checks that the SMTP server can take mail, without sending any: it
// opens a connection as Send would (greeting, EHLO, STARTTLS and AUTH as
// configured), within the configured Timeout or ctx, whichever ends first.
// The connection then joins the idle pool, so the next Send reuses it. It
// returns what Send would have returned for a failed connection.
func (s *Sender) Probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrSenderClosed
	}
	c, err := s.dial(ctx)
	if err != nil {
		return err
	}
	s.put(c)
	return nil
}

// Timeout is the bound on one Send or Probe: SMTPConfig.Timeout, or
// DefaultTimeout when that was zero.
func (s *Sender) Timeout() time.Duration { return s.cfg.Timeout }
