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
		AdminAddr:   "127.0.0.1:8082",
		Concurrency: 20,
		SMTPHost:    "localhost",
		SMTPPort:    1025,
		SMTPTLS:     "auto",
		SMTPTimeout: 10 * time.Second,
		MailFrom:    "no-reply@localhost",
		SuppressFor: 24 * time.Hour,
	}, cfg)
}

// The worker has no dashboard: a non-loopback ADMIN_ADDR without a password
// starts, with pprof off.
func TestLoadConfigAdminAddrOffLoopback(t *testing.T) {
	t.Setenv("ADMIN_ADDR", ":8082")
	_, err := platform.Load[Config]()
	require.NoError(t, err)
	t.Setenv("DASHBOARD_PASSWORD", "hunter2")
	t.Setenv("DASHBOARD_USER", "")
	_, err = platform.Load[Config]()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "DASHBOARD_USER")
	assert.NotContains(t, err.Error(), "hunter2")
}

func TestLoadConfigNamesEveryBadVariable(t *testing.T) {
	t.Setenv("SMTP_PASSWORD", "hunter2")
	t.Setenv("SMTP_TLS", "maybe")
	t.Setenv("SMTP_PORT", "70000")
	t.Setenv("SMTP_HOST", "smtp example")
	t.Setenv("SMTP_TIMEOUT", "-1s")
	t.Setenv("MAIL_FROM", "a@b.co\r\nBcc: x@y.z")
	t.Setenv("WORKER_CONCURRENCY", "0")
	t.Setenv("REDIS_URL", "redis://:hunter2@[::1")
	t.Setenv("CODE_TTL", "500ms")
	t.Setenv("CODE_KEY_PREFIX", "")
	t.Setenv("MAIL_REPLY_TO", "support@example.com, evil@example.net")
	t.Setenv("APP_NAME", "ACME\r\nBcc: evil@example.net")
	t.Setenv("MAIL_LINK_URL", "https://app.example.com/verify?email={email}")
	t.Setenv("MAIL_TEMPLATES_DIR", "/nonexistent/verifyq-templates")
	_, err := platform.Load[Config]()
	require.Error(t, err)
	for _, want := range []string{
		"SMTP_PASSWORD: set without a username",
		`SMTP_TLS: "maybe": want auto, none, starttls or tls`,
		"SMTP_PORT: 70000 is not in 1..65535",
		"SMTP_HOST: empty or malformed",
		"SMTP_TIMEOUT: -1s is negative",
		"MAIL_FROM: invalid email address",
		"WORKER_CONCURRENCY",
		"REDIS_URL",
		"CODE_TTL: 500ms is shorter than 1s",
		"CODE_KEY_PREFIX: must not be empty",
		"MAIL_REPLY_TO: invalid email address",
		"APP_NAME: contains a control or format character",
		"MAIL_LINK_URL: has no {code} placeholder",
		"MAIL_TEMPLATES_DIR: stat /nonexistent/verifyq-templates: no such file or directory",
	} {
		assert.Contains(t, err.Error(), want)
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		assert.Regexp(t, `^[A-Z][A-Z0-9_]*:`, line, "every problem names its variable")
	}
	assert.NotContains(t, err.Error(), "hunter2", "secrets are never printed")
	assert.NotContains(t, err.Error(), "evil", "bad values are not echoed")
}

// CODE_TTL is the worker's too: a key without expiry is mailed with it.
func TestLoadConfigCodeTTL(t *testing.T) {
	t.Setenv("CODE_TTL", "3m")
	cfg, err := platform.Load[Config]()
	require.NoError(t, err)
	assert.Equal(t, 3*time.Minute, cfg.CodeTTL)
}
