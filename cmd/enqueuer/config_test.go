package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/verifyq/verifyq/internal/platform"
)

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := LoadConfig()
	require.NoError(t, err)
	assert.Equal(t, Config{
		Common: platform.Common{
			RedisURL:        "redis://127.0.0.1:6379/0",
			LogLevel:        "info",
			CodeKeyPrefix:   "code_",
			ShutdownTimeout: 25 * time.Second,
			DashboardUser:   "admin",
		},
		HTTPAddr:           ":8080",
		AdminAddr:          "127.0.0.1:8081",
		GRPCAddr:           ":50051",
		GRPCCallTimeout:    5 * time.Second,
		HTTPRequestTimeout: 5 * time.Second,
		CodeTTL:            10 * time.Minute,
		CodeLength:         6,

		ResendCooldown:      time.Minute,
		AddressSendsPerHour: 5,
		ClientSendsPerHour:  30,
		VerifyMaxAttempts:   5,
	}, cfg)
}

func TestLoadConfigAdminAddrNeedsPasswordOffLoopback(t *testing.T) {
	for _, addr := range []string{":8081", "0.0.0.0:8081", "10.1.2.3:8081"} {
		t.Run(addr, func(t *testing.T) {
			t.Setenv("ADMIN_ADDR", addr)
			_, err := LoadConfig()
			require.Error(t, err)
			assert.Contains(t, err.Error(), "ADMIN_ADDR")
			assert.Contains(t, err.Error(), "DASHBOARD_PASSWORD")

			t.Setenv("DASHBOARD_PASSWORD", "hunter2")
			cfg, err := LoadConfig()
			require.NoError(t, err)
			assert.Equal(t, "hunter2", cfg.DashboardPassword)
		})
	}
	t.Run("user needed with a password", func(t *testing.T) {
		t.Setenv("DASHBOARD_PASSWORD", "hunter2")
		t.Setenv("DASHBOARD_USER", "a:b")
		_, err := LoadConfig()
		require.Error(t, err)
		assert.Contains(t, err.Error(), "DASHBOARD_USER")
		assert.NotContains(t, err.Error(), "hunter2", "secrets are never printed")
	})
	t.Run("read-only", func(t *testing.T) {
		t.Setenv("DASHBOARD_READONLY", "true")
		cfg, err := LoadConfig()
		require.NoError(t, err)
		assert.True(t, cfg.DashboardReadOnly)
	})
}

func TestLoadConfigNamesEveryBadVariable(t *testing.T) {
	t.Setenv("REDIS_URL", "http://user:hunter2@redis:6379")
	t.Setenv("CODE_LENGTH", "3")
	t.Setenv("CODE_TTL", "10ms")
	t.Setenv("LOG_LEVEL", "loud")
	t.Setenv("CODE_KEY_PREFIX", "")
	t.Setenv("VERIFY_MAX_ATTEMPTS", "-1")
	t.Setenv("TRUSTED_PROXIES", "10.0.0.0/8,not-a-cidr")
	t.Setenv("GRPC_ADDR", "")
	t.Setenv("GRPC_CALL_TIMEOUT", "0s")
	_, err := LoadConfig()
	require.Error(t, err)
	for _, name := range []string{"REDIS_URL", "CODE_LENGTH", "CODE_TTL", "LOG_LEVEL", "CODE_KEY_PREFIX",
		"VERIFY_MAX_ATTEMPTS", "TRUSTED_PROXIES", "GRPC_ADDR", "GRPC_CALL_TIMEOUT"} {
		assert.Contains(t, err.Error(), name)
	}
	assert.NotContains(t, err.Error(), "hunter2", "secrets are never printed")
}

func TestLoadConfigUnparsable(t *testing.T) {
	t.Setenv("CODE_TTL", "ten minutes")
	_, err := LoadConfig()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "CODE_TTL")
}

func TestTrustedProxies(t *testing.T) {
	t.Setenv("TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7,2001:db8::/32")
	cfg, err := LoadConfig()
	require.NoError(t, err)
	got, err := cfg.proxies()
	require.NoError(t, err)
	var s []string
	for _, p := range got {
		s = append(s, p.String())
	}
	assert.Equal(t, []string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"}, s)
}
