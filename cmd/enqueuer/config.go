package main

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/verifyq/verifyq/auth"
	"github.com/verifyq/verifyq/clientip"
	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/replication"
)

// Config is the enqueuer's whole configuration, read from the environment
// by platform.Load (see docs/CONFIGURATION.md).
type Config struct {
	platform.Common

	// HTTPAddr and GRPCAddr are the public listeners: loopback by default.
	// Without API_KEYS_FILE, Resolve refuses others unless
	// ALLOW_UNAUTHENTICATED is true.
	HTTPAddr  string `envconfig:"HTTP_ADDR" default:"127.0.0.1:8080"`
	AdminAddr string `envconfig:"ADMIN_ADDR" default:"127.0.0.1:8081"`
	GRPCAddr  string `envconfig:"GRPC_ADDR" default:"127.0.0.1:50051"`
	// RequestTimeout bounds every HTTP request, and every gRPC call whose
	// client set no deadline.
	RequestTimeout time.Duration `envconfig:"REQUEST_TIMEOUT" default:"5s"`
	// MinReplicas is how many replicas must hold a send's writes before
	// it is answered (package replication); 0 answers once the primary
	// holds them. MinReplicasTimeout bounds the wait.
	MinReplicas        int           `envconfig:"REDIS_MIN_REPLICAS" default:"0"`
	MinReplicasTimeout time.Duration `envconfig:"REDIS_MIN_REPLICAS_TIMEOUT" default:"100ms"`
	// Length is the digits of a new code (codes.Config.Length).
	Length int `envconfig:"CODE_LENGTH" default:"6"`
	// MaxAttempts is how many wrong codes invalidate the live code
	// (codes.Config.MaxAttempts).
	MaxAttempts int `envconfig:"VERIFY_MAX_ATTEMPTS" default:"5"`
	// DefaultLocale names the locale of a send that names no language, or
	// one no supported locale matches (service.Service.DefaultLocale): one
	// of mail.Locales. Locale is it, parsed by Resolve.
	DefaultLocale string      `envconfig:"DEFAULT_LOCALE" default:"zh-CN"`
	Locale        mail.Locale `ignored:"true"`
	// Limits are the send and verify limits.
	Limits
	// TrustedProxies are the proxies whose forwarding headers and metadata
	// are believed (package clientip).
	TrustedProxies TrustedProxies `envconfig:"TRUSTED_PROXIES" default:"127.0.0.0/8,::1"`
	// MaxConnections bounds the connections open at once on each public
	// listener (HTTP_ADDR and GRPC_ADDR).
	MaxConnections int `envconfig:"MAX_CONNECTIONS" default:"1024"`
	// MaxConnectionsPerSource bounds those of one source (an IPv4
	// address, an IPv6 /64) on each; nil (unset) is a sixteenth of
	// MaxConnections, 0 no bound (see PerSource).
	MaxConnectionsPerSource *int `envconfig:"MAX_CONNECTIONS_PER_SOURCE"`

	// APIKeysFile names the callers' key file (package auth), read once
	// at start; unset, no caller needs a key.
	APIKeysFile string `envconfig:"API_KEYS_FILE"`
	// Keys are API_KEYS_FILE's callers; nil without it.
	Keys *auth.Keys `ignored:"true"`
	// LegacyCallers are the networks whose calls to the old
	// message.VarifyService need no key.
	LegacyCallers LegacyCallers `envconfig:"LEGACY_CALLERS" default:"127.0.0.0/8,::1"`
	// AllowUnauthenticated lets the enqueuer listen beyond loopback
	// without API_KEYS_FILE.
	AllowUnauthenticated bool `envconfig:"ALLOW_UNAUTHENTICATED" default:"false"`
	// StatusReadsPerMinute bounds each caller's status reads
	// (auth.Config.StatusReadsPerMinute).
	StatusReadsPerMinute int `envconfig:"STATUS_READS_PER_MINUTE" default:"600"`

	// TLSCertFile and TLSKeyFile, both or neither, make HTTP_ADDR and
	// GRPC_ADDR speak TLS (1.2 at least) with that certificate and key,
	// re-read when they change (platform.CertReloader).
	TLSCertFile string `envconfig:"TLS_CERT_FILE"`
	TLSKeyFile  string `envconfig:"TLS_KEY_FILE"`
	// TLSClientCAFile requires a client certificate that its CAs signed
	// on both TLS listeners (mTLS); a certificate caller of API_KEYS_FILE
	// is named by it.
	TLSClientCAFile string `envconfig:"TLS_CLIENT_CA_FILE"`
	// LegacyGRPCAddr serves the old message.VarifyService alone, in
	// plaintext, when the public listeners speak TLS (the old gateway
	// speaks plaintext); unused without TLS, when GRPC_ADDR serves it.
	LegacyGRPCAddr string `envconfig:"LEGACY_GRPC_ADDR" default:"127.0.0.1:50052"`

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

// LegacyCallers are LEGACY_CALLERS, parsed.
type LegacyCallers clientip.Trusted

// Decode parses LEGACY_CALLERS: comma-separated CIDRs or addresses.
func (l *LegacyCallers) Decode(s string) error {
	t, err := clientip.ParseTrusted(strings.Split(s, ","))
	if err != nil {
		return err
	}
	*l = LegacyCallers(t)
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
	errs = append(errs, c.resolveReplicas()...)
	if loc, err := mail.ParseLocale(c.DefaultLocale); err != nil {
		errs = append(errs, fmt.Errorf("DEFAULT_LOCALE: not a supported locale: must be one of %s", localeNames()))
	} else {
		c.Locale = loc
	}
	if c.MaxConnections < 1 || c.MaxConnections > maxConnections {
		errs = append(errs, fmt.Errorf("MAX_CONNECTIONS: %d is outside 1..%d", c.MaxConnections, maxConnections))
	} else if n := c.MaxConnectionsPerSource; n != nil && (*n < 0 || *n > c.MaxConnections) {
		errs = append(errs, fmt.Errorf("MAX_CONNECTIONS_PER_SOURCE: %d is outside 0..MAX_CONNECTIONS (%d)", *n, c.MaxConnections))
	}
	errs = append(errs, c.resolveTLS()...)
	errs = append(errs, c.resolveAuth()...)
	lc := c.limits()
	lc.Identity = mail.Identity{} // Common's, checked with it
	errs = append(errs, platform.Name(errors.Join(codes.ValidateLength(c.Length), codes.ValidateMaxAttempts(c.MaxAttempts), lc.Validate()), c))
	return errors.Join(errs...)
}

// localeNames lists the supported locales for DEFAULT_LOCALE's error.
func localeNames() string {
	var names []string
	for _, l := range mail.Locales() {
		names = append(names, string(l))
	}
	return strings.Join(names, ", ")
}

// resolveReplicas checks REDIS_MIN_REPLICAS and, when it is on, its
// timeout: WAIT holds the connection's reply for up to the timeout, so it
// must end within the client's read timeout.
func (c *Config) resolveReplicas() []error {
	var errs []error
	if c.MinReplicas < 0 || c.MinReplicas > replication.MaxReplicas {
		errs = append(errs, fmt.Errorf("REDIS_MIN_REPLICAS: %d is outside 0..%d", c.MinReplicas, replication.MaxReplicas))
	}
	if c.MinReplicas == 0 {
		return errs // the timeout is unused
	}
	if c.MinReplicasTimeout < time.Millisecond {
		errs = append(errs, errors.New("REDIS_MIN_REPLICAS_TIMEOUT: must be at least 1ms"))
	} else if read := c.Redis.ReadTimeout(); read > 0 && c.MinReplicasTimeout >= read {
		errs = append(errs, fmt.Errorf("REDIS_MIN_REPLICAS_TIMEOUT: %s is not below the read timeout of REDIS_URL (%s), "+
			"within which WAIT must answer", c.MinReplicasTimeout, read))
	}
	return errs
}

// resolveTLS checks the TLS files by loading them once (NewApp loads them
// again, to serve) and LEGACY_GRPC_ADDR when TLS is on.
func (c *Config) resolveTLS() []error {
	files := c.tlsFiles()
	switch {
	case !files.Enabled():
		if files.ClientCA != "" {
			return []error{errors.New("TLS_CLIENT_CA_FILE: needs TLS_CERT_FILE and TLS_KEY_FILE")}
		}
		return nil
	case files.Cert == "" || files.Key == "":
		return []error{errors.New("TLS_CERT_FILE: and TLS_KEY_FILE go together: set both or neither")}
	}
	var errs []error
	if _, err := platform.NewCertReloader(files.Cert, files.Key, slog.New(slog.DiscardHandler)); err != nil {
		errs = append(errs, fmt.Errorf("TLS_CERT_FILE: %w", err))
	}
	if files.ClientCA != "" {
		if _, err := platform.ClientCAs(files.ClientCA); err != nil {
			errs = append(errs, fmt.Errorf("TLS_CLIENT_CA_FILE: %w", err))
		}
	}
	if c.LegacyGRPCAddr == "" {
		errs = append(errs, errors.New("LEGACY_GRPC_ADDR: must not be empty when TLS_CERT_FILE is set"))
	}
	return errs
}

// TLS reports whether the public listeners speak TLS.
func (c *Config) TLS() bool { return c.tlsFiles().Enabled() }

// tlsFiles are c's TLS files.
func (c *Config) tlsFiles() platform.TLSFiles {
	return platform.TLSFiles{Cert: c.TLSCertFile, Key: c.TLSKeyFile, ClientCA: c.TLSClientCAFile}
}

// authenticated reports whether callers must prove who they are: with
// API_KEYS_FILE, or with TLS_CLIENT_CA_FILE (no certificate the CA did not
// sign completes the handshake).
func (c *Config) authenticated() bool { return c.APIKeysFile != "" || c.TLSClientCAFile != "" }

// resolveAuth reads API_KEYS_FILE, each of its problems on its own line
// under the variable, and refuses public listeners that anyone could call
// without a key.
func (c *Config) resolveAuth() []error {
	var errs []error
	c.Keys = nil
	if c.APIKeysFile != "" {
		keys, err := auth.LoadFile(c.APIKeysFile)
		if j, ok := err.(interface{ Unwrap() []error }); ok { // the problems joined, one per line
			for _, e := range j.Unwrap() {
				errs = append(errs, fmt.Errorf("API_KEYS_FILE: %w", e))
			}
		} else if err != nil {
			errs = append(errs, fmt.Errorf("API_KEYS_FILE: %w", err))
		}
		c.Keys = keys
	}
	if c.StatusReadsPerMinute < 0 {
		errs = append(errs, errors.New("STATUS_READS_PER_MINUTE: must not be negative"))
	}
	if n := c.Keys.CertCallers(); n > 0 && c.TLSClientCAFile == "" {
		errs = append(errs, fmt.Errorf("API_KEYS_FILE: %d lines of certificate callers (%q in place of a hash), and without "+
			"TLS_CLIENT_CA_FILE no client certificate is asked for: set it, or remove those lines", n, auth.CertField))
	}
	// Without keys every listener is keyless but for the handshake of a
	// client CA, which the plaintext old-gateway listener has not.
	type listener struct{ name, addr string }
	var public []listener
	if c.APIKeysFile == "" {
		if c.TLSClientCAFile == "" {
			public = append(public, listener{"HTTP_ADDR", c.HTTPAddr}, listener{"GRPC_ADDR", c.GRPCAddr})
		}
		if c.TLS() {
			public = append(public, listener{"LEGACY_GRPC_ADDR", c.LegacyGRPCAddr})
		}
	}
	switch {
	case c.authenticated() && c.AllowUnauthenticated:
		errs = append(errs, errors.New("ALLOW_UNAUTHENTICATED: true contradicts API_KEYS_FILE or TLS_CLIENT_CA_FILE, "+
			"with which every call needs a key or a client certificate: unset one"))
	case !c.AllowUnauthenticated:
		for _, l := range public {
			if l.addr != "" && !platform.IsLoopback(l.addr) {
				errs = append(errs, fmt.Errorf("%s: %s is reachable from other hosts, and without API_KEYS_FILE anyone there "+
					"could ask for codes: set API_KEYS_FILE, listen on a loopback address (127.0.0.1), "+
					"or set ALLOW_UNAUTHENTICATED=true", l.name, l.addr))
			}
		}
	}
	return errs
}

// Unauthenticated reports whether the enqueuer serves every caller without
// a key or a client certificate on an address other hosts can reach
// (ALLOW_UNAUTHENTICATED), which Open warns of.
func (c *Config) Unauthenticated() bool {
	if c.Keys.Len() > 0 {
		return false
	}
	open := c.TLS() && !platform.IsLoopback(c.LegacyGRPCAddr)
	if c.TLSClientCAFile == "" {
		open = open || !platform.IsLoopback(c.HTTPAddr) || !platform.IsLoopback(c.GRPCAddr)
	}
	return open
}

// guard is the auth.Guard of c.
func (c *Config) guard() *auth.Guard {
	return auth.New(auth.Config{
		Keys:                 c.Keys,
		LegacyCallers:        clientip.Trusted(c.LegacyCallers),
		StatusReadsPerMinute: c.StatusReadsPerMinute,
	})
}

// maxConnections is the largest MAX_CONNECTIONS: more than any process's
// file descriptors.
const maxConnections = 1 << 20

// SourceShare is the share of MAX_CONNECTIONS one source may hold when
// MAX_CONNECTIONS_PER_SOURCE is unset: a sixteenth, 64 of the default
// 1024. A client needs 16 addresses (IPv6: /64s) to fill a listener, and
// one backend host still gets far more connections than it has calls in
// flight.
const SourceShare = 16

// PerSource is the connections one source may hold on each public
// listener (platform.ConnLimits.PerSource): MAX_CONNECTIONS_PER_SOURCE,
// or SourceShare's share of MAX_CONNECTIONS, at least 1; 0 is no bound.
func (c *Config) PerSource() int {
	if c.MaxConnectionsPerSource != nil {
		return *c.MaxConnectionsPerSource
	}
	return max(1, c.MaxConnections/SourceShare)
}

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
