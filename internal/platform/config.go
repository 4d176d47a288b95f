package platform

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/field"
)

// Common is the configuration both binaries share; each binary's Config
// embeds it, so envconfig reads the same variables with the same defaults.
type Common struct {
	RedisURL      string `envconfig:"REDIS_URL" default:"redis://127.0.0.1:6379/0"`
	LogLevel      string `envconfig:"LOG_LEVEL" default:"info"`
	CodeKeyPrefix string `envconfig:"CODE_KEY_PREFIX" default:"code_"`
	// CodeTTL is the lifetime of a code: the enqueuer gives it to new codes,
	// the worker states it in the mail of a code whose key has no expiry.
	CodeTTL         time.Duration `envconfig:"CODE_TTL" default:"10m"`
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"25s"`

	// The admin server's dashboard and pprof are behind basic auth with
	// these when DASHBOARD_PASSWORD is set.
	DashboardUser     string `envconfig:"DASHBOARD_USER" default:"admin"`
	DashboardPassword string `envconfig:"DASHBOARD_PASSWORD"`
}

// Validate returns every problem with c, each naming its variable and never
// repeating a secret. The rules of the code key and lifetime are the codes
// package's.
func (c Common) Validate() []error {
	var errs []error
	if _, err := ParseRedisURL(c.RedisURL); err != nil {
		errs = append(errs, err)
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if err := field.Rename(errors.Join(codes.ValidateKeyPrefix(c.CodeKeyPrefix), codes.ValidateTTL(c.CodeTTL)),
		map[string]string{"KeyPrefix": "CODE_KEY_PREFIX", "TTL": "CODE_TTL"}); err != nil {
		errs = append(errs, err)
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("SHUTDOWN_TIMEOUT: must be positive"))
	}
	if c.DashboardPassword != "" && (c.DashboardUser == "" || strings.Contains(c.DashboardUser, ":")) {
		errs = append(errs, errors.New("DASHBOARD_USER: must be set, without a colon, when DASHBOARD_PASSWORD is"))
	}
	return errs
}

// SetupLogging returns the process's JSON logger at LOG_LEVEL (validated
// before) and routes go-redis's messages and the standard log package
// (which some libraries use) through it, so every line is JSON.
func (c Common) SetupLogging(w io.Writer) *slog.Logger {
	level, _ := ParseLevel(c.LogLevel)
	logger := NewLogger(w, level)
	redis.SetLogger(RedisLogger{L: logger})
	slog.SetDefault(logger)
	return logger
}
