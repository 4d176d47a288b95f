package platform

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/field"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/tasks"
)

// Common is the configuration both binaries share; each binary's Config
// embeds it, so envconfig reads the same variables with the same defaults.
type Common struct {
	RedisMode     string `envconfig:"REDIS_MODE" default:"single"`
	RedisURL      string `envconfig:"REDIS_URL" default:"redis://127.0.0.1:6379/0"`
	LogLevel      string `envconfig:"LOG_LEVEL" default:"info"`
	CodeKeyPrefix string `envconfig:"CODE_KEY_PREFIX" default:"code_"`
	// CodeTTL is the lifetime of a code: the enqueuer gives it to new codes,
	// the worker states it in the mail of a code whose key has no expiry.
	CodeTTL         time.Duration `envconfig:"CODE_TTL" default:"10m"`
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"25s"`
	// AddressTagSeparators start a tag in a local part ("+" makes
	// user+tag@x one mailbox with user@x); empty turns tags off. The
	// enqueuer's limits and both binaries' suppression list key on the
	// mailbox.
	AddressTagSeparators string `envconfig:"ADDRESS_TAG_SEPARATORS" default:"+"`
	// QueueShards spreads the send tasks over this many queues (mail-0,
	// mail-1, ...), which Redis Cluster keeps on different slots; 1 is the
	// one queue "mail". Both binaries must agree.
	QueueShards int `envconfig:"QUEUE_SHARDS" default:"1"`

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
	if _, err := ParseRedis(c.RedisMode, c.RedisURL); err != nil {
		errs = append(errs, err)
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if err := field.Rename(errors.Join(codes.ValidateKeyPrefix(c.CodeKeyPrefix), codes.ValidateTTL(c.CodeTTL), c.Identity().Validate()),
		map[string]string{"KeyPrefix": "CODE_KEY_PREFIX", "TTL": "CODE_TTL", "TagSeparators": "ADDRESS_TAG_SEPARATORS"}); err != nil {
		errs = append(errs, err)
	}
	if c.QueueShards < 1 || c.QueueShards > tasks.MaxQueueShards {
		errs = append(errs, fmt.Errorf("QUEUE_SHARDS: %d is outside 1..%d", c.QueueShards, tasks.MaxQueueShards))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("SHUTDOWN_TIMEOUT: must be positive"))
	}
	if c.DashboardPassword != "" && (c.DashboardUser == "" || strings.Contains(c.DashboardUser, ":")) {
		errs = append(errs, errors.New("DASHBOARD_USER: must be set, without a colon, when DASHBOARD_PASSWORD is"))
	}
	return errs
}

// Identity is the mailbox identity of ADDRESS_TAG_SEPARATORS.
func (c Common) Identity() mail.Identity { return mail.Identity{TagSeparators: c.AddressTagSeparators} }

// Redis is REDIS_MODE and REDIS_URL, parsed (validated before).
func (c Common) Redis() Redis {
	r, _ := ParseRedis(c.RedisMode, c.RedisURL)
	return r
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
