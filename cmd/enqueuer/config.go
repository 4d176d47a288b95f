package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/platform"
)

// Config is the enqueuer's whole configuration, read from the environment.
type Config struct {
	RedisURL        string        `envconfig:"REDIS_URL" default:"redis://127.0.0.1:6379/0"`
	HTTPAddr        string        `envconfig:"HTTP_ADDR" default:":8080"`
	AdminAddr       string        `envconfig:"ADMIN_ADDR" default:"127.0.0.1:8081"`
	LogLevel        string        `envconfig:"LOG_LEVEL" default:"info"`
	CodeKeyPrefix   string        `envconfig:"CODE_KEY_PREFIX" default:"code_"`
	CodeTTL         time.Duration `envconfig:"CODE_TTL" default:"10m"`
	CodeLength      int           `envconfig:"CODE_LENGTH" default:"6"`
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"25s"`

	// The queue dashboard at /monitoring/ and pprof on ADMIN_ADDR are
	// behind basic auth when DASHBOARD_PASSWORD is set. /metrics, /healthz
	// and /readyz stay open for scrapers and probes.
	DashboardUser     string `envconfig:"DASHBOARD_USER" default:"admin"`
	DashboardPassword string `envconfig:"DASHBOARD_PASSWORD"`
	DashboardReadOnly bool   `envconfig:"DASHBOARD_READONLY" default:"false"`
}

// LoadConfig reads and validates the configuration.
func LoadConfig() (Config, error) {
	var cfg Config
	if err := envconfig.Process("", &cfg); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// Validate reports every problem at once, each naming its variable.
func (c Config) Validate() error {
	var errs []error
	if _, err := platform.ParseRedisURL(c.RedisURL); err != nil {
		errs = append(errs, err)
	}
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("HTTP_ADDR: must not be empty"))
	}
	if c.AdminAddr == "" {
		errs = append(errs, errors.New("ADMIN_ADDR: must not be empty"))
	} else if c.DashboardPassword == "" && !platform.IsLoopback(c.AdminAddr) {
		errs = append(errs, fmt.Errorf("ADMIN_ADDR: %s is reachable from other hosts: set DASHBOARD_PASSWORD "+
			"(and DASHBOARD_USER) to guard the dashboard, or listen on 127.0.0.1", c.AdminAddr))
	}
	if c.DashboardPassword != "" && (c.DashboardUser == "" || strings.Contains(c.DashboardUser, ":")) {
		errs = append(errs, errors.New("DASHBOARD_USER: must be set, without a colon, when DASHBOARD_PASSWORD is"))
	}
	if _, err := platform.ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.CodeKeyPrefix == "" {
		errs = append(errs, errors.New("CODE_KEY_PREFIX: must not be empty"))
	}
	if c.CodeTTL < time.Second {
		errs = append(errs, fmt.Errorf("CODE_TTL: %s is shorter than 1s", c.CodeTTL))
	}
	if c.CodeLength < codes.MinLength || c.CodeLength > codes.MaxLength {
		errs = append(errs, fmt.Errorf("CODE_LENGTH: %d is outside %d..%d", c.CodeLength, codes.MinLength, codes.MaxLength))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("SHUTDOWN_TIMEOUT: must be positive"))
	}
	return errors.Join(errs...)
}

func (c Config) codes() codes.Config {
	return codes.Config{KeyPrefix: c.CodeKeyPrefix, TTL: c.CodeTTL, Length: c.CodeLength}
}
