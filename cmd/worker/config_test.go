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
		AdminAddr:   "127.0.0.1:8082",
		Concurrency: 20,
		SMTPHost:    "localhost",
		SMTPPort:    1025,
		SMTPTLS:     "auto",
		SMTPTimeout: 10 * time.Second,
		MailFrom:    "no-reply@localhost",
	}, cfg)
}

// The worker has no dashboard: a non-loopback ADMIN_ADDR without a password
// starts, with pprof off.
func TestLoadConfigAdminAddrOffLoopback(t *testing.T) {
	t.Setenv("ADMIN_ADDR", ":8082")
	_, err := LoadConfig()
	require.NoError(t, err)
	t.Setenv("DASHBOARD_PASSWORD", "hunter2")
	t.Setenv("DASHBOARD_USER", "")
	_, err = LoadConfig()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "DASHBOARD_USER")
	assert.NotContains(t, err.Error(), "hunter2")
}

func TestLoadConfigNamesEveryBadVariable(t *testing.T) {
	t.Setenv("SMTP_PASSWORD", "hunter2")
	t.Setenv("SMTP_TLS", "maybe")
	t.Setenv("SMTP_PORT", "70000")
	t.Setenv("WORKER_CONCURRENCY", "0")
	t.Setenv("REDIS_URL", "redis://:hunter2@[::1")
	_, err := LoadConfig()
	require.Error(t, err)
	for _, name := range []string{"SMTP_PASSWORD", "SMTP_TLS", "SMTP_PORT", "WORKER_CONCURRENCY", "REDIS_URL"} {
		assert.Contains(t, err.Error(), name)
	}
	assert.NotContains(t, err.Error(), "hunter2", "secrets are never printed")
}
