package platform

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/events"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/tasks"
)

// Common is the configuration both binaries share; each binary's Config
// embeds it, so both read the same variables with the same defaults. Its
// fields tagged ignored are ready values that Resolve builds from the
// variables, once.
type Common struct {
	RedisMode string `envconfig:"REDIS_MODE" default:"single"`
	RedisURL  Secret `envconfig:"REDIS_URL" default:"redis://127.0.0.1:6379/0"`
	// Redis is REDIS_MODE and REDIS_URL, parsed.
	Redis Redis `ignored:"true"`

	LogLevel LogLevel `envconfig:"LOG_LEVEL" default:"info"`
	// KeyPrefix starts the code key (codes.Config.KeyPrefix).
	KeyPrefix string `envconfig:"CODE_KEY_PREFIX" default:"code_"`
	// TTL is the lifetime of a code: the enqueuer gives it to new codes of
	// a purpose without its own, the worker states it in the mail of a
	// code whose key has no expiry.
	TTL time.Duration `envconfig:"CODE_TTL" default:"10m"`
	// Purposes are the purposes a code may be asked for besides the
	// default one (codes.ID), each with its own lifetime or zero for TTL.
	Purposes        Purposes      `envconfig:"PURPOSES" default:"register,login,reset_password,change_email"`
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"25s"`

	// The secret of sealed codes, and the one before it during a rotation:
	// CODE_SECRET as text or CODE_SECRET_FILE as files. Either one set
	// seals the codes (Seal); neither keeps them plain, as the old gateway
	// reads them.
	CodeSecret     CodeSecret     `envconfig:"CODE_SECRET"`
	CodeSecretFile CodeSecretFile `envconfig:"CODE_SECRET_FILE"`
	// Seal is the codes.Seal of CODE_SECRET or CODE_SECRET_FILE; nil keeps
	// codes plain.
	Seal *codes.Seal `ignored:"true"`

	// TagSeparators start a tag in a local part ("+" makes user+tag@x one
	// mailbox with user@x); empty turns tags off. The enqueuer's limits
	// and both binaries' suppression list key on the mailbox (Identity).
	TagSeparators string `envconfig:"ADDRESS_TAG_SEPARATORS" default:"+"`
	// MailboxRules are the providers' rules of the mailbox identity
	// (mail.ParseMailboxRules; mail.DefaultMailboxRules).
	MailboxRules MailboxRules `envconfig:"MAILBOX_RULES" default:"gmail.com:dots,googlemail.com=gmail.com"`
	// QueueShards spreads the send tasks over this many queues (mail-0,
	// mail-1, ...), which Redis Cluster keeps on different slots; 1 is the
	// one queue "mail". Both binaries must agree.
	QueueShards int `envconfig:"QUEUE_SHARDS" default:"1"`

	// WebhookURLs are the endpoints the events are POSTed to
	// (events.ParseURLs); none turns events off: nothing is emitted.
	// The enqueuer queues the verify path's events for them, the workers
	// the others, and deliver them all.
	WebhookURLs WebhookURLs `envconfig:"WEBHOOK_URLS"`

	// DashboardAuth guards the admin server's dashboard and pprof with
	// basic auth when set.
	DashboardAuth Credentials `envconfig:"DASHBOARD_AUTH"`
	// DashboardHosts are the names, besides the host of ADMIN_ADDR,
	// "localhost" and IP addresses, that the dashboard and pprof answer to
	// in the Host header (see Hosts).
	DashboardHosts HostNames `envconfig:"DASHBOARD_HOSTS"`
}

// Resolve checks the rules of c's variables that the codes and mail
// packages own and those across variables, and builds Redis and Seal. Each
// problem names its variable and never repeats a secret.
func (c *Common) Resolve() error {
	var errs []error
	r, err := ParseRedis(c.RedisMode, string(c.RedisURL))
	errs = append(errs, err)
	c.Redis = r
	errs = append(errs, Name(errors.Join(codes.ValidateKeyPrefix(c.KeyPrefix), codes.ValidateTTL(c.TTL), c.Identity().Validate()), c))
	c.Seal, err = c.seal()
	errs = append(errs, err)
	if c.QueueShards < 1 || c.QueueShards > tasks.MaxQueueShards {
		errs = append(errs, fmt.Errorf("QUEUE_SHARDS: %d is outside 1..%d", c.QueueShards, tasks.MaxQueueShards))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("SHUTDOWN_TIMEOUT: must be positive"))
	}
	return errors.Join(errs...)
}

// seal returns the codes.Seal of CODE_SECRET or CODE_SECRET_FILE, nil when
// neither is set.
func (c *Common) seal() (*codes.Seal, error) {
	switch {
	case c.CodeSecret.current != nil && c.CodeSecretFile.current != nil:
		return nil, errors.New("CODE_SECRET: set only one of CODE_SECRET and CODE_SECRET_FILE")
	case c.CodeSecret.current != nil:
		s, err := codes.NewSeal(c.CodeSecret.current, c.CodeSecret.previous)
		if err != nil {
			return nil, fmt.Errorf("CODE_SECRET: %w", err)
		}
		return s, nil
	case c.CodeSecretFile.current != nil:
		s, err := codes.NewSeal(c.CodeSecretFile.current, c.CodeSecretFile.previous)
		if err != nil {
			return nil, fmt.Errorf("CODE_SECRET_FILE: %w", err)
		}
		return s, nil
	}
	return nil, nil
}

// TTLOf is the lifetime of purpose's new codes: its own in PURPOSES, else
// CODE_TTL (codes.Config.TTLOf).
func (c *Common) TTLOf(purpose string) time.Duration {
	return codes.Config{TTL: c.TTL, Purposes: c.Purposes}.TTLOf(purpose)
}

// common is how Load reaches the Common a binary's Config embeds.
func (c *Common) common() *Common { return c }

// Identity is the mailbox identity of ADDRESS_TAG_SEPARATORS and
// MAILBOX_RULES.
func (c *Common) Identity() mail.Identity {
	return mail.Identity{TagSeparators: c.TagSeparators, Rules: mail.MailboxRules(c.MailboxRules)}
}

// MailboxRules are MAILBOX_RULES, parsed.
type MailboxRules mail.MailboxRules

// Decode parses MAILBOX_RULES (mail.ParseMailboxRules).
func (r *MailboxRules) Decode(s string) error {
	rules, err := mail.ParseMailboxRules(s)
	if err != nil {
		return err
	}
	*r = MailboxRules(rules)
	return nil
}

// AdminHosts returns the names the admin server on adminAddr answers to:
// its host, and DASHBOARD_HOSTS.
func (c *Common) AdminHosts(adminAddr string) Hosts { return AdminHosts(adminAddr, c.DashboardHosts) }

// SetupLogging returns the process's JSON logger at LOG_LEVEL and routes
// go-redis's messages and the standard log package (which some libraries
// use) through it, so every line is JSON.
func (c *Common) SetupLogging(w io.Writer) *slog.Logger {
	logger := NewLogger(w, c.LogLevel.Level())
	redis.SetLogger(RedisLogger{L: logger})
	slog.SetDefault(logger)
	return logger
}

// retired are the variables of earlier releases, each with what replaces
// it: set, each stops start-up, so that a setting is never silently lost.
var retired = []struct{ name, use string }{
	{"SMTP_HOST", "SMTP_URL (smtp://user:password@host:port)"},
	{"SMTP_PORT", "SMTP_URL (smtp://user:password@host:port)"},
	{"SMTP_USERNAME", "SMTP_URL (smtp://user:password@host:port, both URL-encoded)"},
	{"SMTP_PASSWORD", "SMTP_URL (smtp://user:password@host:port, both URL-encoded)"},
	{"SMTP_TLS", "SMTP_URL (?tls=auto|starttls|none, or smtps:// for implicit TLS)"},
	{"SMTP_TIMEOUT", "SMTP_URL (?timeout=10s)"},
	{"CODE_STORAGE", "CODE_SECRET or CODE_SECRET_FILE: either one set seals the codes, neither keeps them plain"},
	{"CODE_SECRET_PREVIOUS", "CODE_SECRET=current,previous (or CODE_SECRET_FILE=file,previous-file)"},
	{"DASHBOARD_USER", "DASHBOARD_AUTH=user:password"},
	{"DASHBOARD_PASSWORD", "DASHBOARD_AUTH=user:password"},
	{"HTTP_REQUEST_TIMEOUT", "REQUEST_TIMEOUT"},
	{"GRPC_CALL_TIMEOUT", "REQUEST_TIMEOUT"},
	{"HTTP_MAX_CONNECTIONS", "MAX_CONNECTIONS (each public listener)"},
	{"GRPC_MAX_CONNECTIONS", "MAX_CONNECTIONS (each public listener)"},
	{"GRPC_MAX_CONCURRENT_STREAMS", "nothing: the gRPC server's bound is fixed at 100 per connection"},
	{"GRPC_MAX_WATCH_STREAMS", "nothing: the gRPC server's bound is fixed at 1024"},
}

// purposeTTLPrefix started the retired variables of a purpose's own
// lifetime (CODE_TTL_RESET_PASSWORD=15m), now part of PURPOSES.
const purposeTTLPrefix = "CODE_TTL_"

// retiredSet reports each retired variable that is set, and each
// CODE_TTL_<PURPOSE> of a purpose of PURPOSES or of the default ones.
// Their values are never repeated.
func retiredSet(purposes Purposes) []error {
	var errs []error
	for _, r := range retired {
		if _, set := os.LookupEnv(r.name); set {
			errs = append(errs, fmt.Errorf("%s: no longer read: use %s", r.name, r.use))
		}
	}
	names := append([]string(nil), codes.DefaultPurposes...)
	for p := range purposes {
		if !slices.Contains(names, p) {
			names = append(names, p)
		}
	}
	for _, p := range names {
		name := purposeTTLPrefix + strings.ToUpper(p)
		if _, set := os.LookupEnv(name); set {
			errs = append(errs, fmt.Errorf("%s: no longer read: give the lifetime in PURPOSES (%s:15m)", name, p))
		}
	}
	return errs
}

// maxSecretFile bounds each file of CODE_SECRET_FILE.
const maxSecretFile = 4 << 10

// CodeSecret is CODE_SECRET: "current[,previous]", each secret hex or
// base64 (codes.ParseSecret). %v prints it redacted.
type CodeSecret struct{ current, previous []byte }

// Decode parses CODE_SECRET; the empty string leaves it unset. Errors never
// hold a secret.
func (s *CodeSecret) Decode(text string) error {
	return s.decode(text, func(part string) ([]byte, error) { return codes.ParseSecret(part) })
}

// decode splits "current[,previous]" and reads each part with read.
func (s *CodeSecret) decode(text string, read func(string) ([]byte, error)) error {
	if strings.TrimSpace(text) == "" {
		return nil
	}
	parts := strings.Split(text, ",")
	if len(parts) > 2 {
		return errors.New("want the secret, and at most one previous secret after a comma")
	}
	var errs []error
	keys := make([][]byte, len(parts))
	for i, part := range parts {
		b, err := read(strings.TrimSpace(part))
		if err != nil {
			which := "the secret"
			if i == 1 {
				which = "the previous secret"
			}
			errs = append(errs, fmt.Errorf("%s: %w", which, err))
		}
		keys[i] = b
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s.current = keys[0]
	if len(keys) == 2 {
		s.previous = keys[1]
	}
	return nil
}

// String hides the secret.
func (CodeSecret) String() string { return "[redacted]" }

// GoString hides the secret.
func (CodeSecret) GoString() string { return "[redacted]" }

// RotatedSecret is a secret other than CODE_SECRET read as CODE_SECRET
// is (BOUNCE_SECRET): "current[,previous]", each secret hex or base64,
// checked by codes.ParseSecret. %v prints it redacted.
type RotatedSecret struct{ CodeSecret }

// Secrets returns the secret, then the previous one if set; none when
// unset.
func (s RotatedSecret) Secrets() [][]byte {
	var out [][]byte
	for _, k := range [][]byte{s.current, s.previous} {
		if k != nil {
			out = append(out, k)
		}
	}
	return out
}

// CodeSecretFile is CODE_SECRET_FILE: "file[,previous file]", each file's
// bytes a secret (one trailing newline dropped). %v prints it redacted.
type CodeSecretFile struct{ CodeSecret }

// Decode reads the files of CODE_SECRET_FILE; the empty string leaves it
// unset. Errors never hold a secret.
func (s *CodeSecretFile) Decode(files string) error { return s.decode(files, readSecretFile) }

// readSecretFile reads a secret file: its bytes, one trailing newline
// dropped, checked by codes.ValidateSecret.
func readSecretFile(name string) ([]byte, error) {
	f, err := os.Open(name) //nolint:gosec // G304: the operator names the file on purpose
	if err != nil {
		return nil, errors.New("cannot open the file")
	}
	defer func() { _ = f.Close() }()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, errors.New("cannot read the file")
	}
	if len(b) > maxSecretFile {
		return nil, fmt.Errorf("larger than %d bytes", maxSecretFile)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if err := codes.ValidateSecret(b); err != nil {
		return nil, err
	}
	return b, nil
}

// Purposes are PURPOSES: the purposes besides the default one, each with
// its own code lifetime or zero for CODE_TTL (codes.Config.Purposes).
type Purposes map[string]time.Duration

// Decode parses "name[:lifetime],...", e.g.
// "register,login,reset_password:15m"; the empty string is the default
// purpose alone. The names and lifetimes are checked as codes wants them.
func (p *Purposes) Decode(s string) error {
	out := Purposes{}
	var errs []error
	if strings.TrimSpace(s) != "" {
		for _, entry := range strings.Split(s, ",") {
			name, life, hasLife := strings.Cut(strings.TrimSpace(entry), ":")
			if _, dup := out[name]; dup {
				errs = append(errs, fmt.Errorf("%q is listed twice", name))
				continue
			}
			out[name] = 0
			if !hasLife {
				continue
			}
			d, err := time.ParseDuration(life)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: the lifetime is not a duration (e.g. 15m)", name))
				continue
			}
			if err := codes.ValidateTTL(d); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, errors.Unwrap(err)))
				continue
			}
			out[name] = d
		}
	}
	if err := errors.Join(append(errs, codes.ValidatePurposes(out))...); err != nil {
		return err
	}
	*p = out
	return nil
}

// LogLevel is LOG_LEVEL: debug, info, warn or error.
type LogLevel slog.Level

// Decode parses LOG_LEVEL.
func (l *LogLevel) Decode(s string) error {
	var v slog.Level
	if err := v.UnmarshalText([]byte(s)); err != nil {
		return errors.New("want debug, info, warn or error")
	}
	*l = LogLevel(v)
	return nil
}

// Level is the slog level.
func (l LogLevel) Level() slog.Level { return slog.Level(l) }

// Credentials is DASHBOARD_AUTH, "user:password": the credentials the admin
// server's dashboard and pprof ask for. The zero value asks none. %v
// prints it redacted.
type Credentials struct {
	User     string
	Password string
}

// Decode parses "user:password"; the empty string asks no credentials.
func (a *Credentials) Decode(s string) error {
	if s == "" {
		*a = Credentials{}
		return nil
	}
	user, password, ok := strings.Cut(s, ":")
	if !ok || user == "" || password == "" {
		return errors.New("want user:password, both not empty")
	}
	*a = Credentials{User: user, Password: password}
	return nil
}

// Set reports whether credentials are asked for.
func (a Credentials) Set() bool { return a.Password != "" }

// String hides the password.
func (a Credentials) String() string {
	if !a.Set() {
		return "[none]"
	}
	return a.User + ":[redacted]"
}

// GoString hides the password.
func (a Credentials) GoString() string { return a.String() }

// WebhookURLs is WEBHOOK_URLS, parsed (events.ParseURLs).
type WebhookURLs []string

// Decode parses WEBHOOK_URLS.
func (u *WebhookURLs) Decode(s string) error {
	urls, err := events.ParseURLs(s)
	if err != nil {
		return err
	}
	*u = urls
	return nil
}

// WebhookSecret is WEBHOOK_SECRET: "whsec_<base64>[,whsec_<previous>]"
// (events.ParseSecrets). %v prints it redacted.
type WebhookSecret struct{ keys [][]byte }

// Decode parses WEBHOOK_SECRET; errors never hold a secret.
func (w *WebhookSecret) Decode(s string) error {
	keys, err := events.ParseSecrets(s)
	if err != nil {
		return err
	}
	w.keys = keys
	return nil
}

// Keys returns the secret's key, then the previous one's; none when
// unset.
func (w WebhookSecret) Keys() [][]byte { return w.keys }

// String hides the secret.
func (WebhookSecret) String() string { return "[redacted]" }

// GoString hides the secret.
func (WebhookSecret) GoString() string { return "[redacted]" }

// Secret is a configured secret: %v and %#v print it redacted.
type Secret string

// String hides the secret.
func (Secret) String() string { return "[redacted]" }

// GoString hides the secret.
func (Secret) GoString() string { return "[redacted]" }
