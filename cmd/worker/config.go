package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/verifyq/verifyq/internal/field"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/mail"
)

// Config is the worker's whole configuration, read from the environment.
type Config struct {
	// Common's DASHBOARD_* guard pprof on ADMIN_ADDR, which is off when
	// ADMIN_ADDR is not loopback and no password is set.
	platform.Common

	AdminAddr   string `envconfig:"ADMIN_ADDR" default:"127.0.0.1:8082"`
	Concurrency int    `envconfig:"WORKER_CONCURRENCY" default:"20"`

	SMTPHost     string        `envconfig:"SMTP_HOST" default:"localhost"`
	SMTPPort     int           `envconfig:"SMTP_PORT" default:"1025"`
	SMTPUsername string        `envconfig:"SMTP_USERNAME"`
	SMTPPassword string        `envconfig:"SMTP_PASSWORD"`
	SMTPTLS      string        `envconfig:"SMTP_TLS" default:"auto"`
	SMTPTimeout  time.Duration `envconfig:"SMTP_TIMEOUT" default:"10s"`
	MailFrom     string        `envconfig:"MAIL_FROM" default:"no-reply@localhost"`
	MailReplyTo  string        `envconfig:"MAIL_REPLY_TO"`

	// What the mails say: see mail.TemplateConfig and docs/templates.
	AppName          string `envconfig:"APP_NAME"`
	MailTemplatesDir string `envconfig:"MAIL_TEMPLATES_DIR"`
	MailLinkURL      string `envconfig:"MAIL_LINK_URL"`

	// SuppressFor is how long an address whose mail server refused a mail
	// for good (an SMTP 5xx) is refused new sends; 0 turns it off.
	SuppressFor time.Duration `envconfig:"SUPPRESS_FOR" default:"24h"`
}

// Validate reports every problem at once, each naming its variable. It never
// repeats SMTP_PASSWORD or REDIS_URL, which may hold secrets. The SMTP and
// template rules are the mail package's (see smtpVars and templateVars): it
// loads and checks the templates, so a bad template directory is reported
// here, naming the file.
func (c Config) Validate() error {
	errs := c.Common.Validate()
	if c.AdminAddr == "" {
		errs = append(errs, errors.New("ADMIN_ADDR: must not be empty"))
	}
	if c.SuppressFor < 0 {
		errs = append(errs, errors.New("SUPPRESS_FOR: must not be negative (0 turns suppression off)"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("WORKER_CONCURRENCY: %d must be at least 1", c.Concurrency))
	}
	errs = append(errs, field.Rename(c.smtp().Validate(), smtpVars))
	_, err := mail.LoadTemplates(c.templates())
	errs = append(errs, field.Rename(err, templateVars))
	return errors.Join(errs...)
}

// smtpVars names the variables of the mail.SMTPConfig fields.
var smtpVars = map[string]string{
	"Host":     "SMTP_HOST",
	"Port":     "SMTP_PORT",
	"Password": "SMTP_PASSWORD",
	"TLS":      "SMTP_TLS",
	"Timeout":  "SMTP_TIMEOUT",
	"From":     "MAIL_FROM",
	"ReplyTo":  "MAIL_REPLY_TO",
}

// templateVars names the variables of the mail.TemplateConfig fields.
var templateVars = map[string]string{
	"Dir":     "MAIL_TEMPLATES_DIR",
	"AppName": "APP_NAME",
	"LinkURL": "MAIL_LINK_URL",
}

func (c Config) templates() mail.TemplateConfig {
	return mail.TemplateConfig{Dir: c.MailTemplatesDir, AppName: c.AppName, LinkURL: c.MailLinkURL}
}

func (c Config) smtp() mail.SMTPConfig {
	return mail.SMTPConfig{
		Host:     c.SMTPHost,
		Port:     c.SMTPPort,
		Username: c.SMTPUsername,
		Password: c.SMTPPassword,
		TLS:      mail.TLSMode(c.SMTPTLS),
		From:     c.MailFrom,
		ReplyTo:  c.MailReplyTo,
		Timeout:  c.SMTPTimeout,
		// One idle connection per worker slot: a busy worker reuses its
		// connections instead of dialling per mail.
		MaxIdle: c.Concurrency,
	}
}
