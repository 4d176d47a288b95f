package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/platform"
)

// Config is the enqueuer's whole configuration, read from the environment.
type Config struct {
	platform.Common

	HTTPAddr        string        `envconfig:"HTTP_ADDR" default:":8080"`
	AdminAddr       string        `envconfig:"ADMIN_ADDR" default:"127.0.0.1:8081"`
	GRPCAddr        string        `envconfig:"GRPC_ADDR" default:":50051"`
	GRPCCallTimeout time.Duration `envconfig:"GRPC_CALL_TIMEOUT" default:"5s"`
	// HTTPRequestTimeout bounds every HTTP request.
	HTTPRequestTimeout time.Duration `envconfig:"HTTP_REQUEST_TIMEOUT" default:"5s"`
	CodeTTL            time.Duration `envconfig:"CODE_TTL" default:"10m"`
	CodeLength         int           `envconfig:"CODE_LENGTH" default:"6"`

	ResendCooldown      time.Duration `envconfig:"RESEND_COOLDOWN" default:"60s"`
	AddressSendsPerHour int           `envconfig:"ADDRESS_SENDS_PER_HOUR" default:"5"`
	ClientSendsPerHour  int           `envconfig:"CLIENT_SENDS_PER_HOUR" default:"30"`
	VerifyMaxAttempts   int           `envconfig:"VERIFY_MAX_ATTEMPTS" default:"5"`
	// TrustedProxies are CIDRs (or single addresses) whose X-Forwarded-For
	// header is believed.
	TrustedProxies []string `envconfig:"TRUSTED_PROXIES"`

	// The queue dashboard at /monitoring/ and pprof on ADMIN_ADDR are
	// behind basic auth when DASHBOARD_PASSWORD is set. /metrics, /healthz
	// and /readyz stay open for scrapers and probes.
	DashboardReadOnly bool `envconfig:"DASHBOARD_READONLY" default:"false"`
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
	errs := c.Common.Validate()
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("HTTP_ADDR: must not be empty"))
	}
	if c.AdminAddr == "" {
		errs = append(errs, errors.New("ADMIN_ADDR: must not be empty"))
	} else if c.DashboardPassword == "" && !platform.IsLoopback(c.AdminAddr) {
		errs = append(errs, fmt.Errorf("ADMIN_ADDR: %s is reachable from other hosts: set DASHBOARD_PASSWORD "+
			"(and DASHBOARD_USER) to guard the dashboard, or listen on 127.0.0.1", c.AdminAddr))
	}
	if c.GRPCAddr == "" {
		errs = append(errs, errors.New("GRPC_ADDR: must not be empty"))
	}
	if c.GRPCCallTimeout <= 0 {
		errs = append(errs, errors.New("GRPC_CALL_TIMEOUT: must be positive"))
	}
	if c.HTTPRequestTimeout <= 0 {
		errs = append(errs, errors.New("HTTP_REQUEST_TIMEOUT: must be positive"))
	}
	if c.CodeTTL < time.Second {
		errs = append(errs, fmt.Errorf("CODE_TTL: %s is shorter than 1s", c.CodeTTL))
	}
	if c.CodeLength < codes.MinLength || c.CodeLength > codes.MaxLength {
		errs = append(errs, fmt.Errorf("CODE_LENGTH: %d is outside %d..%d", c.CodeLength, codes.MinLength, codes.MaxLength))
	}
	for name, v := range map[string]int64{
		"RESEND_COOLDOWN":        int64(c.ResendCooldown),
		"ADDRESS_SENDS_PER_HOUR": int64(c.AddressSendsPerHour),
		"CLIENT_SENDS_PER_HOUR":  int64(c.ClientSendsPerHour),
		"VERIFY_MAX_ATTEMPTS":    int64(c.VerifyMaxAttempts),
	} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative (0 turns the limit off)", name))
		}
	}
	if _, err := c.proxies(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// proxies parses TRUSTED_PROXIES.
func (c Config) proxies() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range c.TrustedProxies {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("TRUSTED_PROXIES: %q is not a CIDR or an IP address", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (c Config) codes() codes.Config {
	return codes.Config{
		KeyPrefix: c.CodeKeyPrefix,
		TTL:       c.CodeTTL,
		Length:    c.CodeLength,
		Limits: codes.Limits{
			Cooldown:       c.ResendCooldown,
			AddressPerHour: c.AddressSendsPerHour,
			ClientPerHour:  c.ClientSendsPerHour,
			MaxAttempts:    c.VerifyMaxAttempts,
		},
	}
}
