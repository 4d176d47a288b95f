package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/platform"
)

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := platform.Load[Config]()
	require.NoError(t, err)
	assert.Equal(t, Config{
		Common: platform.Common{
			RedisMode:       "single",
			RedisURL:        "redis://127.0.0.1:6379/0",
			LogLevel:        "info",
			CodeKeyPrefix:   "code_",
			CodeTTL:         10 * time.Minute,
			Purposes:        codes.DefaultPurposes,
			CodeStorage:     "plain",
			ShutdownTimeout: 25 * time.Second,
			DashboardUser:   "admin",

			AddressTagSeparators: "+",

			QueueShards: 1,
		},
		HTTPAddr:           ":8080",
		AdminAddr:          "127.0.0.1:8081",
		GRPCAddr:           ":50051",
		GRPCCallTimeout:    5 * time.Second,
		HTTPRequestTimeout: 5 * time.Second,
		CodeLength:         6,

		ResendCooldown:      time.Minute,
		AddressSendsPerHour: 5,
		ClientSendsPerHour:  30,
		VerifyMaxAttempts:   5,

		ClientVerifiesPerHr: 60,

		HTTPMaxConnections:       1024,
		GRPCMaxConnections:       256,
		GRPCMaxConcurrentStreams: 100,
		GRPCMaxWatchStreams:      1024,
	}, cfg)
}

func TestLoadConfigAdminAddrNeedsPasswordOffLoopback(t *testing.T) {
	for _, addr := range []string{":8081", "0.0.0.0:8081", "10.1.2.3:8081"} {
		t.Run(addr, func(t *testing.T) {
			t.Setenv("ADMIN_ADDR", addr)
			_, err := platform.Load[Config]()
			require.Error(t, err)
			assert.Contains(t, err.Error(), "ADMIN_ADDR")
			assert.Contains(t, err.Error(), "DASHBOARD_PASSWORD")

			t.Setenv("DASHBOARD_PASSWORD", "hunter2")
			cfg, err := platform.Load[Config]()
			require.NoError(t, err)
			assert.Equal(t, "hunter2", cfg.DashboardPassword)
		})
	}
	t.Run("user needed with a password", func(t *testing.T) {
		t.Setenv("DASHBOARD_PASSWORD", "hunter2")
		t.Setenv("DASHBOARD_USER", "a:b")
		_, err := platform.Load[Config]()
		require.Error(t, err)
		assert.Contains(t, err.Error(), "DASHBOARD_USER")
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
	t.Setenv("ADDRESS_SENDS_PER_HOUR", "-1")
	t.Setenv("CLIENT_SENDS_PER_HOUR", "-1")
	t.Setenv("VERIFY_MAX_ATTEMPTS", "-1")
	t.Setenv("TRUSTED_PROXIES", "10.0.0.0/8,not-a-cidr")
	t.Setenv("GRPC_ADDR", "")
	t.Setenv("GRPC_CALL_TIMEOUT", "0s")
	t.Setenv("HTTP_REQUEST_TIMEOUT", "0s")
	t.Setenv("DOMAIN_SENDS_PER_MINUTE", "-1")
	t.Setenv("GLOBAL_SENDS_PER_MINUTE", "-1")
	t.Setenv("CLIENT_VERIFIES_PER_HOUR", "-1")
	t.Setenv("ADDRESS_TAG_SEPARATORS", "+a")
	t.Setenv("HTTP_MAX_CONNECTIONS", "0")
	t.Setenv("GRPC_MAX_CONNECTIONS", "-1")
	t.Setenv("GRPC_MAX_CONCURRENT_STREAMS", "2000000")
	t.Setenv("GRPC_MAX_WATCH_STREAMS", "0")
	t.Setenv("DASHBOARD_HOSTS", "admin.example.com,admin.example.com:8081, ,http://x")
	_, err := platform.Load[Config]()
	require.Error(t, err)
	for _, want := range []string{
		"REDIS_URL: not a valid",
		"CODE_LENGTH: 3 is outside 4..10",
		"CODE_TTL: 500ms is shorter than 1s",
		"LOG_LEVEL",
		"CODE_KEY_PREFIX: must not be empty",
		"RESEND_COOLDOWN: must not be negative",
		"ADDRESS_SENDS_PER_HOUR: must not be negative",
		"CLIENT_SENDS_PER_HOUR: must not be negative",
		"VERIFY_MAX_ATTEMPTS: must not be negative",
		"TRUSTED_PROXIES",
		"GRPC_ADDR",
		"GRPC_CALL_TIMEOUT",
		"HTTP_REQUEST_TIMEOUT: must be positive",
		"DOMAIN_SENDS_PER_MINUTE: must not be negative",
		"GLOBAL_SENDS_PER_MINUTE: must not be negative",
		"CLIENT_VERIFIES_PER_HOUR: must not be negative",
		"ADDRESS_TAG_SEPARATORS: 'a' cannot separate a tag",
		"HTTP_MAX_CONNECTIONS: 0 is outside 1..1048576",
		"GRPC_MAX_CONNECTIONS: -1 is outside 1..1048576",
		"GRPC_MAX_CONCURRENT_STREAMS: 2000000 is outside 1..1048576",
		"GRPC_MAX_WATCH_STREAMS: 0 is outside 1..1048576",
		`DASHBOARD_HOSTS: "admin.example.com:8081" is not a host name`,
		"DASHBOARD_HOSTS: an empty name",
		`DASHBOARD_HOSTS: "http://x" is not a host name`,
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

func TestTrustedProxies(t *testing.T) {
	t.Setenv("TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7,2001:db8::/32")
	cfg, err := platform.Load[Config]()
	require.NoError(t, err)
	got, err := cfg.proxies()
	require.NoError(t, err)
	var s []string
	for _, p := range got {
		s = append(s, p.String())
	}
	assert.Equal(t, []string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"}, s)
}
