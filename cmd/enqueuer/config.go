package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/verifyq/verifyq/clientip"
	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/mail"
)

// Config is the enqueuer's whole configuration, read from the environment
// by platform.Load (see docs/CONFIGURATION.md).
type Config struct {
	platform.Common

	HTTPAddr  string `envconfig:"HTTP_ADDR" default:":8080"`
	AdminAddr string `envconfig:"ADMIN_ADDR" default:"127.0.0.1:8081"`
	GRPCAddr  string `envconfig:"GRPC_ADDR" default:":50051"`
	// RequestTimeout bounds every HTTP request, and every gRPC call whose
	// client set no deadline.
	RequestTimeout time.Duration `envconfig:"REQUEST_TIMEOUT" default:"5s"`
	// Length is the digits of a new code (codes.Config.Length).
	Length int `envconfig:"CODE_LENGTH" default:"6"`
	// MaxAttempts is how many wrong codes invalidate the live code
	// (codes.Config.MaxAttempts).
	MaxAttempts int `envconfig:"VERIFY_MAX_ATTEMPTS" default:"5"`
	// Limits are the send and verify limits.
	Limits
	// TrustedProxies are the proxies whose forwarding headers and metadata
	// are believed (package clientip).
	TrustedProxies TrustedProxies `envconfig:"TRUSTED_PROXIES" default:"127.0.0.0/8,::1"`
	// MaxConnections bounds the connections open at once on each public
	// listener (HTTP_ADDR and GRPC_ADDR).
	MaxConnections int `envconfig:"MAX_CONNECTIONS" default:"1024"`

	// The queue dashboard at /monitoring/ and pprof on ADMIN_ADDR are
	// behind basic auth when DASHBOARD_AUTH is set. /metrics, /healthz
	// and /readyz stay open for scrapers and probes.
	//
	// DashboardReadOnly makes the dashboard and /suppressions look-only.
	DashboardReadOnly bool `envconfig:"DASHBOARD_READONLY" default:"false"`
}

// Limits are limits.Config read from the environment: the same names, each
// with its variable (the mailbox identity is Common's).
type Limits struct {
	Cooldown              time.Duration `envconfig:"RESEND_COOLDOWN" default:"60s"`
	Gap                   time.Duration `envconfig:"MAILBOX_GAP" default:"10s"`
	AddressPerHour        int           `envconfig:"ADDRESS_SENDS_PER_HOUR" default:"5"`
	ClientPerHour         int           `envconfig:"CLIENT_SENDS_PER_HOUR" default:"30"`
	DomainPerMinute       int           `envconfig:"DOMAIN_SENDS_PER_MINUTE" default:"0"`
	GlobalPerMinute       int           `envconfig:"GLOBAL_SENDS_PER_MINUTE" default:"0"`
	ClientVerifiesPerHour int           `envconfig:"CLIENT_VERIFIES_PER_HOUR" default:"60"`
}

// TrustedProxies are TRUSTED_PROXIES, parsed.
type TrustedProxies clientip.Trusted

// Decode parses TRUSTED_PROXIES: comma-separated CIDRs or addresses.
func (p *TrustedProxies) Decode(s string) error {
	t, err := clientip.ParseTrusted(strings.Split(s, ","))
	if err != nil {
		return err
	}
	*p = TrustedProxies(t)
	return nil
}

// Resolve checks c's rules across variables and those the codes package
// owns, each problem naming its variable, and builds Common's ready values.
func (c *Config) Resolve() error {
	errs := []error{c.Common.Resolve()}
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("HTTP_ADDR: must not be empty"))
	}
	if c.AdminAddr == "" {
		errs = append(errs, errors.New("ADMIN_ADDR: must not be empty"))
	} else if !c.DashboardAuth.Set() && !platform.IsLoopback(c.AdminAddr) {
		errs = append(errs, fmt.Errorf("ADMIN_ADDR: %s is reachable from other hosts: set DASHBOARD_AUTH "+
			"to guard the dashboard, or listen on 127.0.0.1", c.AdminAddr))
	}
	if c.GRPCAddr == "" {
		errs = append(errs, errors.New("GRPC_ADDR: must not be empty"))
	}
	if c.RequestTimeout <= 0 {
		errs = append(errs, errors.New("REQUEST_TIMEOUT: must be positive"))
	}
	if c.MaxConnections < 1 || c.MaxConnections > maxConnections {
		errs = append(errs, fmt.Errorf("MAX_CONNECTIONS: %d is outside 1..%d", c.MaxConnections, maxConnections))
	}
	lc := c.limits()
	lc.Identity = mail.Identity{} // Common's, checked with it
	errs = append(errs, platform.Name(errors.Join(codes.ValidateLength(c.Length), codes.ValidateMaxAttempts(c.MaxAttempts), lc.Validate()), c))
	return errors.Join(errs...)
}

// maxConnections is the largest MAX_CONNECTIONS: more than any process's
// file descriptors.
const maxConnections = 1 << 20

// codes is the codes.Config of c's ready values.
func (c *Config) codes() codes.Config {
	return codes.Config{
		Purposes:    c.Purposes,
		Seal:        c.Seal,
		KeyPrefix:   c.KeyPrefix,
		TTL:         c.TTL,
		Length:      c.Length,
		MaxAttempts: c.MaxAttempts,
	}
}

// limits is the limits.Config of c.
func (c *Config) limits() limits.Config {
	return limits.Config{
		Cooldown:              c.Limits.Cooldown,
		Gap:                   c.Limits.Gap,
		AddressPerHour:        c.Limits.AddressPerHour,
		ClientPerHour:         c.Limits.ClientPerHour,
		DomainPerMinute:       c.Limits.DomainPerMinute,
		GlobalPerMinute:       c.Limits.GlobalPerMinute,
		ClientVerifiesPerHour: c.Limits.ClientVerifiesPerHour,
		Identity:              c.Identity(),
	}
}
