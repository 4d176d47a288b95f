package main

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/verifyq/verifyq/internal/field"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/relay"
	"github.com/verifyq/verifyq/returnpath"
)

// Config is the worker's whole configuration, read from the environment
// by platform.Load (see docs/CONFIGURATION.md).
type Config struct {
	// Common's DASHBOARD_AUTH guards pprof on ADMIN_ADDR, which is off
	// when ADMIN_ADDR is not loopback and DASHBOARD_AUTH is not set.
	platform.Common

	AdminAddr   string `envconfig:"ADMIN_ADDR" default:"127.0.0.1:8082"`
	Concurrency int    `envconfig:"WORKER_CONCURRENCY" default:"20"`

	// Server is the SMTP relay of SMTP_URL.
	Server SMTPServer `envconfig:"SMTP_URL" default:"smtp://localhost:1025"`
	// Fallback is the second relay, of SMTP_FALLBACK_URL: the sends go
	// through it while the first fails (tasks.Relays); none when unset.
	Fallback FallbackServer `envconfig:"SMTP_FALLBACK_URL"`
	// HelloName and MaxConns are relay.Config's, for both relays: they
	// say who verifyq is (the host's name) and how many connections a
	// worker needs, neither of which depends on the relay. HelloName empty
	// is the host's fully qualified name (relay.DefaultHelloName).
	HelloName string `envconfig:"SMTP_HELO_NAME"`
	MaxConns  int    `envconfig:"SMTP_MAX_CONNECTIONS" default:"10"`
	// From and ReplyTo are mail.NewAuthor's, parsed into Author.
	From    string `envconfig:"MAIL_FROM" default:"no-reply@localhost"`
	ReplyTo string `envconfig:"MAIL_REPLY_TO"`
	// ReturnPathAddress is the envelope sender, apart from MAIL_FROM;
	// empty is MAIL_FROM's address.
	ReturnPathAddress string `envconfig:"MAIL_RETURN_PATH"`
	// BounceSecret signs the return path's tokens (VERP); it needs
	// MAIL_RETURN_PATH.
	BounceSecret platform.RotatedSecret `envconfig:"BOUNCE_SECRET"`
	// BounceAddr is where the bounce intake listens; empty: no intake. It
	// needs MAIL_RETURN_PATH and BOUNCE_SECRET.
	BounceAddr string `envconfig:"BOUNCE_ADDR"`
	// Templates say what the mails say: see docs/templates.
	Templates

	// SuppressFor is how long an address whose mail server refused a mail
	// for good (a refused recipient, delivery.RecipientRefused) is refused new
	// sends; 0 turns it off.
	SuppressFor time.Duration `envconfig:"SUPPRESS_FOR" default:"24h"`

	// ReconcileInterval is the time between two passes of the reconciler
	// (package reconcile), one pass per interval across all workers; 0
	// turns it off in this worker.
	ReconcileInterval time.Duration `envconfig:"RECONCILE_INTERVAL" default:"30s"`

	// WebhookSecret signs the events' deliveries (with the previous one
	// during a rotation); it needs WEBHOOK_URLS, which needs it.
	WebhookSecret platform.WebhookSecret `envconfig:"WEBHOOK_SECRET"`

	// SMTP is the relay client's configuration, ready: Server, HelloName
	// (resolved), MaxConns and the CA file's certificates.
	SMTP relay.Config `ignored:"true"`
	// FallbackSMTP is the fallback relay client's, made as SMTP is; nil
	// without SMTP_FALLBACK_URL.
	FallbackSMTP *relay.Config `ignored:"true"`
	// Author writes the mails: From and ReplyTo parsed, and the
	// templates loaded.
	Author mail.Author `ignored:"true"`
	// ReturnPath is MAIL_RETURN_PATH signed with BOUNCE_SECRET; nil when
	// MAIL_RETURN_PATH is empty.
	ReturnPath *returnpath.Path `ignored:"true"`
}

// MinReconcileInterval bounds RECONCILE_INTERVAL from below: each pass
// reads every shard of the index of open sends and asks asynq about the
// sends that stood still.
const MinReconcileInterval = time.Second

// Templates are mail.TemplateConfig read from the environment: the same
// fields, each with its variable.
type Templates struct {
	Dir     string `envconfig:"MAIL_TEMPLATES_DIR"`
	AppName string `envconfig:"APP_NAME"`
	LinkURL string `envconfig:"MAIL_LINK_URL"`
}

// SMTPServer is SMTP_URL, parsed (relay.ParseURL): the relay, its
// credentials, TLS mode, timeout, CA file and certificate name. %v prints
// it without the password (relay.Config.String).
type SMTPServer struct{ relay.Config }

// DefaultSMTPTimeout bounds a send when SMTP_URL sets no timeout.
const DefaultSMTPTimeout = 10 * time.Second

// Decode parses SMTP_URL.
func (s *SMTPServer) Decode(u string) error {
	cfg, err := relay.ParseURL(u)
	if err != nil {
		return err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultSMTPTimeout
	}
	s.Config = cfg
	return nil
}

// FallbackServer is SMTP_FALLBACK_URL: SMTP_URL's form, or empty for no
// fallback relay.
type FallbackServer struct{ SMTPServer }

// Decode parses SMTP_FALLBACK_URL; empty leaves it unset.
func (s *FallbackServer) Decode(u string) error {
	if u == "" {
		return nil
	}
	return s.SMTPServer.Decode(u)
}

// Set reports whether SMTP_FALLBACK_URL names a relay.
func (s FallbackServer) Set() bool { return s.Host != "" }

// Resolve checks c's rules across variables and those the mail package
// owns, each problem naming its variable, loads the templates and builds
// the Author (MAIL_FROM and MAIL_REPLY_TO parsed), SMTP and Common's ready
// values. A bad template directory is reported here, naming the file.
func (c *Config) Resolve() error {
	errs := []error{c.Common.Resolve()}
	if c.AdminAddr == "" {
		errs = append(errs, errors.New("ADMIN_ADDR: must not be empty"))
	}
	if c.SuppressFor < 0 {
		errs = append(errs, errors.New("SUPPRESS_FOR: must not be negative (0 turns suppression off)"))
	}
	if c.ReconcileInterval != 0 && c.ReconcileInterval < MinReconcileInterval {
		errs = append(errs, fmt.Errorf("RECONCILE_INTERVAL: %s is below %s (0 turns the reconciler off)", c.ReconcileInterval, MinReconcileInterval))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("WORKER_CONCURRENCY: %d must be at least 1", c.Concurrency))
	}
	templates, err := mail.LoadTemplates(mail.TemplateConfig(c.Templates))
	errs = append(errs, platform.Name(err, c))
	c.Author, err = mail.NewAuthor(c.From, c.ReplyTo, templates)
	errs = append(errs, platform.Name(err, c))
	if c.MaxConns < 1 {
		errs = append(errs, fmt.Errorf("SMTP_MAX_CONNECTIONS: %d must be at least 1", c.MaxConns))
	}
	var smtpErrs []error
	c.SMTP, smtpErrs = c.relayConfig(c.Server.Config, "SMTP_URL")
	errs = append(errs, smtpErrs...)
	if c.Fallback.Set() {
		fallback, fallbackErrs := c.relayConfig(c.Fallback.Config, "SMTP_FALLBACK_URL")
		c.FallbackSMTP = &fallback
		// A rule of the shared variables broken for both relays alike
		// is said once.
		for _, err := range fallbackErrs {
			if !slices.ContainsFunc(smtpErrs, func(e error) bool { return e.Error() == err.Error() }) {
				errs = append(errs, err)
			}
		}
	}
	errs = append(errs, c.resolveReturnPath())
	switch {
	case len(c.WebhookURLs) > 0 && len(c.WebhookSecret.Keys()) == 0:
		errs = append(errs, errors.New("WEBHOOK_SECRET: the events to WEBHOOK_URLS are signed: set a secret (whsec_ and 24 to 64 bytes in base64)"))
	case len(c.WebhookURLs) == 0 && len(c.WebhookSecret.Keys()) > 0:
		errs = append(errs, errors.New("WEBHOOK_SECRET: set WEBHOOK_URLS too: without endpoints no event is sent"))
	}
	return errors.Join(errs...)
}

// resolveReturnPath builds ReturnPath, and checks that the bounce intake
// has a signed one to match bounces by.
func (c *Config) resolveReturnPath() error {
	secrets := c.BounceSecret.Secrets()
	var errs []error
	switch {
	case c.ReturnPathAddress != "":
		p, err := returnpath.New(c.ReturnPathAddress, secrets...)
		c.ReturnPath = p
		errs = append(errs, field.Rename(err, map[string]string{"Address": "MAIL_RETURN_PATH", "Secrets": "BOUNCE_SECRET"}))
	case len(secrets) > 0:
		errs = append(errs, errors.New("BOUNCE_SECRET: set MAIL_RETURN_PATH too: its local part carries the signed token"))
	}
	if c.BounceAddr != "" {
		if _, _, err := net.SplitHostPort(c.BounceAddr); err != nil {
			errs = append(errs, fmt.Errorf("BOUNCE_ADDR: want host:port, e.g. :2525 (%w)", err))
		}
		if c.ReturnPathAddress == "" || len(secrets) == 0 {
			errs = append(errs, errors.New("BOUNCE_ADDR: the bounce intake needs MAIL_RETURN_PATH and BOUNCE_SECRET: it matches each bounce by the token of the return path"))
		}
	}
	return errors.Join(errs...)
}

// relayConfig makes the relay of server, parsed from variable, ready for
// its client: SMTP_HELO_NAME (resolved) and SMTP_MAX_CONNECTIONS, which
// are the same for every relay, and its CA file loaded. It returns every
// problem, each naming its variable.
func (c *Config) relayConfig(server relay.Config, variable string) (relay.Config, []error) {
	var errs []error
	cfg := server
	cfg.HelloName, cfg.MaxConns = c.HelloName, max(c.MaxConns, 1)
	if cfg.HelloName == "" {
		cfg.HelloName = relay.DefaultHelloName()
	}
	check := cfg
	if cfg.CAFile != "" {
		pool, err := relay.LoadCAFile(cfg.CAFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", variable, err))
			check.CAFile = "" // said above
		}
		cfg.RootCAs, check.RootCAs = pool, pool
	}
	if err, ok := platform.Name(check.Validate(), c).(interface{ Unwrap() []error }); ok {
		errs = append(errs, err.Unwrap()...)
	}
	return cfg, errs
}
