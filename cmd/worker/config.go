package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/verifyq/verifyq/codes"
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
}

// LoadConfig reads and validates the configuration.
func LoadConfig() (Config, error) {
	var cfg Config
	if err := envconfig.Process("", &cfg); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// Validate reports every problem at once, each naming its variable. It never
// repeats SMTP_PASSWORD or REDIS_URL, which may hold secrets.
func (c Config) Validate() error {
	errs := c.Common.Validate()
	if c.AdminAddr == "" {
		errs = append(errs, errors.New("ADMIN_ADDR: must not be empty"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("WORKER_CONCURRENCY: %d must be at least 1", c.Concurrency))
	}
	if c.SMTPHost == "" {
		errs = append(errs, errors.New("SMTP_HOST: must not be empty"))
	}
	if c.SMTPPort < 1 || c.SMTPPort > 65535 {
		errs = append(errs, fmt.Errorf("SMTP_PORT: %d is not a port", c.SMTPPort))
	}
	if _, err := mail.ParseTLSMode(c.SMTPTLS); err != nil {
		errs = append(errs, fmt.Errorf("SMTP_TLS: %q: want auto, none, starttls or tls", c.SMTPTLS))
	}
	if c.SMTPPassword != "" && c.SMTPUsername == "" {
		errs = append(errs, errors.New("SMTP_PASSWORD: set without SMTP_USERNAME"))
	}
	if c.SMTPTimeout <= 0 {
		errs = append(errs, errors.New("SMTP_TIMEOUT: must be positive"))
	}
	if c.MailFrom == "" {
		errs = append(errs, errors.New("MAIL_FROM: must not be empty"))
	}
	return errors.Join(errs...)
}

func (c Config) smtp() mail.SMTPConfig {
	tlsMode, _ := mail.ParseTLSMode(c.SMTPTLS)
	return mail.SMTPConfig{
		Host:     c.SMTPHost,
		Port:     c.SMTPPort,
		Username: c.SMTPUsername,
		Password: c.SMTPPassword,
		TLS:      tlsMode,
		From:     c.MailFrom,
		Timeout:  c.SMTPTimeout,
		// One idle connection per worker slot: a busy worker reuses its
		// connections instead of dialling per mail.
		MaxIdle: c.Concurrency,
	}
}

func (c Config) codes() codes.Config {
	// The worker only reads codes; TTL and length matter to the enqueuer.
	return codes.Config{KeyPrefix: c.CodeKeyPrefix, TTL: codes.DefaultTTL, Length: codes.DefaultLength}
}
