package main

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/verifyq/verifyq/clientip"
	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/configtest"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/mail"
)

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := platform.Load[Config]()
	require.NoError(t, err)
	assert.Equal(t, platform.RedisSingle, cfg.Redis.Mode(), "ready")
	cfg.Redis = platform.Redis{}
	assert.Equal(t, Config{
		Common: platform.Common{
			RedisMode:       "single",
			RedisURL:        "redis://127.0.0.1:6379/0",
			LogLevel:        platform.LogLevel(slog.LevelInfo),
			KeyPrefix:       "code_",
			TTL:             10 * time.Minute,
			Purposes:        platform.Purposes{"register": 0, "login": 0, "reset_password": 0, "change_email": 0},
			ShutdownTimeout: 25 * time.Second,

			TagSeparators: "+",
			MailboxRules:  platform.MailboxRules(defaultRules(t)),

			QueueShards: 1,
		},
		HTTPAddr:       ":8080",
		AdminAddr:      "127.0.0.1:8081",
		GRPCAddr:       ":50051",
		RequestTimeout: 5 * time.Second,
		Length:         6,

		Limits: Limits{
			Cooldown:              time.Minute,
			Gap:                   10 * time.Second,
			AddressPerHour:        5,
			ClientPerHour:         30,
			ClientVerifiesPerHour: 60,
		},
		MaxAttempts: 5,

		MaxConnections: 1024,
		TrustedProxies: defaultTrusted(t),
	}, cfg)
	assert.Len(t, cfg.Purposes, len(codes.DefaultPurposes), "codes' default purposes")
	lc := cfg.limits()
	lc.Identity = limits.Default().Identity
	assert.Equal(t, limits.Default(), lc, "the limits' defaults")
	assert.Equal(t, codes.DefaultMaxAttempts, cfg.MaxAttempts, "codes' default attempts")
}

// The ready values the enqueuer wires: the codes configuration with the
// purposes' lifetimes and the seal, and the trusted proxies.
func TestLoadConfigReadyValues(t *testing.T) {
	t.Setenv("PURPOSES", "register,reset_password:15m")
	t.Setenv("CODE_TTL", "5m")
	t.Setenv("CODE_SECRET", strings.Repeat("ab", 32))
	t.Setenv("RESEND_COOLDOWN", "0")
	t.Setenv("TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7,2001:db8::/32")
	cfg, err := platform.Load[Config]()
	require.NoError(t, err)
	cc := cfg.codes()
	assert.Equal(t, map[string]time.Duration{"register": 0, "reset_password": 15 * time.Minute}, map[string]time.Duration(cc.Purposes))
	assert.Equal(t, 15*time.Minute, cc.TTLOf("reset_password"))
	assert.Equal(t, 5*time.Minute, cc.TTLOf("register"))
	assert.NotNil(t, cc.Seal, "sealed: CODE_SECRET is set")
	assert.Zero(t, cfg.limits().Cooldown)
	require.NoError(t, cc.Validate())
	var s []string
	for _, p := range cfg.TrustedProxies {
		s = append(s, p.String())
	}
	assert.Equal(t, []string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"}, s)
}

func TestLoadConfigAdminAddrNeedsPasswordOffLoopback(t *testing.T) {
	for _, addr := range []string{":8081", "0.0.0.0:8081", "10.1.2.3:8081"} {
		t.Run(addr, func(t *testing.T) {
			t.Setenv("ADMIN_ADDR", addr)
			_, err := platform.Load[Config]()
			require.Error(t, err)
			assert.Contains(t, err.Error(), "ADMIN_ADDR")
			assert.Contains(t, err.Error(), "DASHBOARD_AUTH")

			t.Setenv("DASHBOARD_AUTH", "admin:hunter2")
			cfg, err := platform.Load[Config]()
			require.NoError(t, err)
			assert.Equal(t, platform.Credentials{User: "admin", Password: "hunter2"}, cfg.DashboardAuth)
		})
	}
	t.Run("user needed with a password", func(t *testing.T) {
		t.Setenv("DASHBOARD_AUTH", ":hunter2")
		_, err := platform.Load[Config]()
		require.Error(t, err)
		assert.Contains(t, err.Error(), "DASHBOARD_AUTH: want user:password")
		assert.NotContains(t, err.Error(), "hunter2", "secrets are never printed")
	})
	t.Run("read-only", func(t *testing.T) {
		t.Setenv("DASHBOARD_READONLY", "true")
		cfg, err := platform.Load[Config]()
		require.NoError(t, err)
		assert.True(t, cfg.DashboardReadOnly)
	})
}

func TestLoadConfigNamesEveryBadVariable(t *testing.T) {
	t.Setenv("REDIS_URL", "http://user:hunter2@redis:6379")
	t.Setenv("CODE_LENGTH", "3")
	t.Setenv("CODE_TTL", "500ms")
	t.Setenv("LOG_LEVEL", "loud")
	t.Setenv("CODE_KEY_PREFIX", "")
	t.Setenv("RESEND_COOLDOWN", "-1s")
	t.Setenv("MAILBOX_GAP", "2h")
	t.Setenv("ADDRESS_SENDS_PER_HOUR", "-1")
	t.Setenv("CLIENT_SENDS_PER_HOUR", "-1")
	t.Setenv("VERIFY_MAX_ATTEMPTS", "-1")
	t.Setenv("TRUSTED_PROXIES", "10.0.0.0/8,not-a-cidr")
	t.Setenv("GRPC_ADDR", "")
	t.Setenv("REQUEST_TIMEOUT", "0s")
	t.Setenv("DOMAIN_SENDS_PER_MINUTE", "-1")
	t.Setenv("GLOBAL_SENDS_PER_MINUTE", "-1")
	t.Setenv("CLIENT_VERIFIES_PER_HOUR", "-1")
	t.Setenv("ADDRESS_TAG_SEPARATORS", "+a")
	t.Setenv("MAX_CONNECTIONS", "2000000")
	t.Setenv("DASHBOARD_HOSTS", "admin.example.com,admin.example.com:8081, ,http://x")
	t.Setenv("PURPOSES", "register:1ms,Login")
	t.Setenv("CODE_SECRET", "hunter2hunter2")
	t.Setenv("DASHBOARD_AUTH", "hunter2")
	t.Setenv("QUEUE_SHARDS", "0")
	t.Setenv("SHUTDOWN_TIMEOUT", "forever")
	t.Setenv("DASHBOARD_READONLY", "maybe")
	_, err := platform.Load[Config]()
	require.Error(t, err)
	for _, want := range []string{
		"REDIS_URL: not a valid",
		"CODE_LENGTH: 3 is outside 4..10",
		"CODE_TTL: 500ms is shorter than 1s",
		"LOG_LEVEL",
		"CODE_KEY_PREFIX: must not be empty",
		"RESEND_COOLDOWN: must not be negative",
		"MAILBOX_GAP: must be at most 1h0m0s",
		"ADDRESS_SENDS_PER_HOUR: must not be negative",
		"CLIENT_SENDS_PER_HOUR: must not be negative",
		"VERIFY_MAX_ATTEMPTS: must not be negative",
		"TRUSTED_PROXIES",
		"GRPC_ADDR",
		"REQUEST_TIMEOUT: must be positive",
		"DOMAIN_SENDS_PER_MINUTE: must not be negative",
		"GLOBAL_SENDS_PER_MINUTE: must not be negative",
		"CLIENT_VERIFIES_PER_HOUR: must not be negative",
		"ADDRESS_TAG_SEPARATORS: 'a' cannot separate a tag",
		"MAX_CONNECTIONS: 2000000 is outside 1..1048576",
		`DASHBOARD_HOSTS: "admin.example.com:8081" is not a host name`,
		"DASHBOARD_HOSTS: an empty name",
		`DASHBOARD_HOSTS: "http://x" is not a host name`,
		"PURPOSES: register: 1ms is shorter than 1s",
		`PURPOSES: "Login": `,
		"CODE_SECRET: the secret: ",
		"DASHBOARD_AUTH: want user:password",
		"QUEUE_SHARDS: 0 is outside",
		"SHUTDOWN_TIMEOUT: not a duration",
		"DASHBOARD_READONLY: want true or false",
	} {
		assert.Contains(t, err.Error(), want)
	}
	assertEveryLineNamesAVariable(t, err)
	assert.NotContains(t, err.Error(), "hunter2", "secrets are never printed")
}

// assertEveryLineNamesAVariable checks that every problem is reported once,
// under an environment variable: none under a Go field name of the domain
// package whose rule it is.
func assertEveryLineNamesAVariable(t *testing.T, err error) {
	t.Helper()
	seen := map[string]bool{}
	for _, line := range strings.Split(err.Error(), "\n") {
		assert.Regexp(t, `^[A-Z][A-Z0-9_]* ?[:"]`, line)
		assert.False(t, seen[line], "reported twice: %s", line)
		seen[line] = true
	}
}

func TestLoadConfigUnparsable(t *testing.T) {
	t.Setenv("CODE_TTL", "ten minutes")
	_, err := platform.Load[Config]()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "CODE_TTL")
}

// A variable of an earlier release stops the enqueuer, naming what
// replaces it, even set to a value that would be good.
func TestLoadConfigRetiredVariables(t *testing.T) {
	for name, use := range map[string]string{
		"GRPC_CALL_TIMEOUT":      "REQUEST_TIMEOUT",
		"HTTP_REQUEST_TIMEOUT":   "REQUEST_TIMEOUT",
		"HTTP_MAX_CONNECTIONS":   "MAX_CONNECTIONS",
		"GRPC_MAX_CONNECTIONS":   "MAX_CONNECTIONS",
		"GRPC_MAX_WATCH_STREAMS": "nothing",
		"CODE_STORAGE":           "CODE_SECRET",
		"CODE_TTL_LOGIN":         "PURPOSES (login:15m)",
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(name, "5")
			_, err := platform.Load[Config]()
			require.Error(t, err)
			assert.Contains(t, err.Error(), name+": no longer read: ")
			assert.Contains(t, err.Error(), use)
			assertEveryLineNamesAVariable(t, err)
		})
	}
}

// docs/CONFIGURATION.md lists every variable of the enqueuer with its
// default, and none it does not read.
func TestConfigurationReference(t *testing.T) {
	configtest.Check(t, "../../docs/CONFIGURATION.md", "enqueuer", Config{})
}

// defaultRules are mail.DefaultMailboxRules, parsed: MAILBOX_RULES' default
// is mail's table.
func defaultRules(t *testing.T) mail.MailboxRules {
	t.Helper()
	r, err := mail.ParseMailboxRules(mail.DefaultMailboxRules)
	require.NoError(t, err)
	return r
}

// defaultTrusted is clientip.DefaultTrusted, parsed: TRUSTED_PROXIES'
// default is clientip's.
func defaultTrusted(t *testing.T) TrustedProxies {
	t.Helper()
	p, err := clientip.ParseTrusted(strings.Split(clientip.DefaultTrusted, ","))
	require.NoError(t, err)
	return TrustedProxies(p)
}

// TRUSTED_PROXIES set but empty trusts nobody: every peer is a client.
func TestTrustedProxiesEmpty(t *testing.T) {
	t.Setenv("TRUSTED_PROXIES", "")
	cfg, err := platform.Load[Config]()
	require.NoError(t, err)
	assert.Empty(t, cfg.TrustedProxies)
}
