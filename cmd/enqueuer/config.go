package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/verifyq/verifyq/clientip"
	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/grpcapi"
	"github.com/verifyq/verifyq/internal/field"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/mail"
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
	CodeLength         int           `envconfig:"CODE_LENGTH" default:"6"`

	ResendCooldown      time.Duration `envconfig:"RESEND_COOLDOWN" default:"60s"`
	AddressSendsPerHour int           `envconfig:"ADDRESS_SENDS_PER_HOUR" default:"5"`
	ClientSendsPerHour  int           `envconfig:"CLIENT_SENDS_PER_HOUR" default:"30"`
	DomainSendsPerMin   int           `envconfig:"DOMAIN_SENDS_PER_MINUTE" default:"0"`
	GlobalSendsPerMin   int           `envconfig:"GLOBAL_SENDS_PER_MINUTE" default:"0"`
	VerifyMaxAttempts   int           `envconfig:"VERIFY_MAX_ATTEMPTS" default:"5"`
	ClientVerifiesPerHr int           `envconfig:"CLIENT_VERIFIES_PER_HOUR" default:"60"`
	// TrustedProxies are CIDRs (or single addresses) whose forwarding
	// headers and metadata are believed (package clientip).
	TrustedProxies []string `envconfig:"TRUSTED_PROXIES"`

	// Bounds of the public listeners: connections open at once on each,
	// gRPC streams per connection, and health Watch and reflection streams
	// across the gRPC server.
	HTTPMaxConnections       int `envconfig:"HTTP_MAX_CONNECTIONS" default:"1024"`
	GRPCMaxConnections       int `envconfig:"GRPC_MAX_CONNECTIONS" default:"256"`
	GRPCMaxConcurrentStreams int `envconfig:"GRPC_MAX_CONCURRENT_STREAMS" default:"100"`
	GRPCMaxWatchStreams      int `envconfig:"GRPC_MAX_WATCH_STREAMS" default:"1024"`

	// The queue dashboard at /monitoring/ and pprof on ADMIN_ADDR are
	// behind basic auth when DASHBOARD_PASSWORD is set. /metrics, /healthz
	// and /readyz stay open for scrapers and probes.
	DashboardReadOnly bool `envconfig:"DASHBOARD_READONLY" default:"false"`
}

// Validate reports every problem at once, each naming its variable. The
// rules of codes and limits are the codes package's (see codeVars).
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
	for _, b := range []struct {
		name string
		v    int
	}{
		{"HTTP_MAX_CONNECTIONS", c.HTTPMaxConnections},
		{"GRPC_MAX_CONNECTIONS", c.GRPCMaxConnections},
		{"GRPC_MAX_CONCURRENT_STREAMS", c.GRPCMaxConcurrentStreams},
		{"GRPC_MAX_WATCH_STREAMS", c.GRPCMaxWatchStreams},
	} {
		if b.v < 1 || b.v > maxBound {
			errs = append(errs, fmt.Errorf("%s: %d is outside 1..%d", b.name, b.v, maxBound))
		}
	}
	lc := c.limits()
	lc.Identity = mail.Identity{} // Common's, validated with it
	errs = append(errs, field.Rename(errors.Join(codes.ValidateLength(c.CodeLength), codes.ValidateMaxAttempts(c.VerifyMaxAttempts),
		lc.Validate()), codeVars))
	if _, err := c.proxies(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// maxBound is the largest value of a listener bound (HTTP_MAX_CONNECTIONS
// and the GRPC_MAX_* variables): more than any process's file descriptors.
const maxBound = 1 << 20

// grpcLimits are the gRPC server's bounds from the GRPC_MAX_* variables;
// the rest are grpcapi's defaults.
func (c Config) grpcLimits() grpcapi.Limits {
	return grpcapi.Limits{
		MaxConcurrentStreams: uint32(c.GRPCMaxConcurrentStreams), //nolint:gosec // G115: at most maxBound (Validate)
		MaxWatches:           c.GRPCMaxWatchStreams,
	}
}

// proxies parses TRUSTED_PROXIES.
func (c Config) proxies() (clientip.Trusted, error) {
	p, err := clientip.ParseTrusted(c.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("TRUSTED_PROXIES: %w", err)
	}
	return p, nil
}

// codeVars names the variables of the codes fields that are the enqueuer's
// own (CODE_KEY_PREFIX and CODE_TTL are Common's).
var codeVars = map[string]string{
	"Length":         "CODE_LENGTH",
	"Cooldown":       "RESEND_COOLDOWN",
	"AddressPerHour": "ADDRESS_SENDS_PER_HOUR",
	"ClientPerHour":  "CLIENT_SENDS_PER_HOUR",
	"MaxAttempts":    "VERIFY_MAX_ATTEMPTS",

	"DomainPerMinute":       "DOMAIN_SENDS_PER_MINUTE",
	"GlobalPerMinute":       "GLOBAL_SENDS_PER_MINUTE",
	"ClientVerifiesPerHour": "CLIENT_VERIFIES_PER_HOUR",
}

func (c Config) codes() codes.Config {
	purposes, _ := c.PurposeTTLs() // validated before
	seal, _ := c.Seal()            // validated before
	return codes.Config{
		Purposes:    purposes,
		Seal:        seal,
		KeyPrefix:   c.CodeKeyPrefix,
		TTL:         c.CodeTTL,
		Length:      c.CodeLength,
		MaxAttempts: c.VerifyMaxAttempts,
	}
}

func (c Config) limits() limits.Config {
	return limits.Config{
		Cooldown:              c.ResendCooldown,
		AddressPerHour:        c.AddressSendsPerHour,
		ClientPerHour:         c.ClientSendsPerHour,
		DomainPerMinute:       c.DomainSendsPerMin,
		GlobalPerMinute:       c.GlobalSendsPerMin,
		ClientVerifiesPerHour: c.ClientVerifiesPerHr,
		Identity:              c.Identity(),
	}
}
