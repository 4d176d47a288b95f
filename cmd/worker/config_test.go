package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/verifyq/verifyq/internal/configtest"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/relay"
)

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := platform.Load[Config]()
	require.NoError(t, err)
	assert.Equal(t, platform.RedisSingle, cfg.Redis.Mode(), "ready")
	require.Equal(t, "no-reply@localhost", cfg.Author.EnvelopeFrom(), "ready")
	smtp := cfg.SMTP
	cfg.Redis, cfg.SMTP, cfg.Author = platform.Redis{}, relay.Config{}, mail.Author{}
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
		AdminAddr:   "127.0.0.1:8082",
		Concurrency: 20,
		Server: SMTPServer{relay.Config{
			Host: "localhost", Port: 1025, TLS: relay.TLSAuto, Timeout: 10 * time.Second,
		}},
		MaxConns:          10,
		From:              "no-reply@localhost",
		SuppressFor:       24 * time.Hour,
		ReconcileInterval: 30 * time.Second,
	}, cfg)
	assert.Equal(t, relay.Config{
		Host: "localhost", Port: 1025, TLS: relay.TLSAuto, Timeout: 10 * time.Second,
		HelloName: relay.DefaultHelloName(), MaxConns: 10,
	}, smtp, "the relay client's configuration, ready")
}

// SMTP_URL carries the server, the credentials (URL-decoded), the TLS mode
// and the timeout; %v of the configuration never shows the password.
func TestLoadConfigSMTPURL(t *testing.T) {
	t.Setenv("SMTP_URL", "smtps://mailer%40acme.test:p%40ss%3Aw0rd@smtp.acme.test?timeout=30s")
	t.Setenv("MAIL_FROM", "ACME <no-reply@acme.test>")
	t.Setenv("SMTP_HELO_NAME", "mailer.acme.test")
	t.Setenv("SMTP_MAX_CONNECTIONS", "3")
	cfg, err := platform.Load[Config]()
	require.NoError(t, err)
	assert.Equal(t, relay.Config{
		Host: "smtp.acme.test", Port: 465, Username: "mailer@acme.test", Password: "p@ss:w0rd", TLS: relay.TLSImplicit,
		Timeout: 30 * time.Second, HelloName: "mailer.acme.test", MaxConns: 3,
	}, cfg.SMTP)
	assert.Equal(t, "no-reply@acme.test", cfg.Author.EnvelopeFrom())
	printed := fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg)
	assert.NotContains(t, printed, "p@ss")
	assert.Contains(t, fmt.Sprint(cfg.Server), "smtp mailer@acme.test:[redacted]@smtp.acme.test:465 tls=tls timeout=30s")
}

// The worker has no dashboard: a non-loopback ADMIN_ADDR without credentials
// starts, with pprof off.
func TestLoadConfigAdminAddrOffLoopback(t *testing.T) {
	t.Setenv("ADMIN_ADDR", ":8082")
	_, err := platform.Load[Config]()
	require.NoError(t, err)
	t.Setenv("DASHBOARD_AUTH", ":hunter2")
	_, err = platform.Load[Config]()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "DASHBOARD_AUTH")
	assert.NotContains(t, err.Error(), "hunter2")
}

func TestLoadConfigNamesEveryBadVariable(t *testing.T) {
	t.Setenv("SMTP_URL", "smtp://:hunter2@smtp%20example:70000?tls=maybe&timeout=-1s")
	t.Setenv("MAIL_FROM", "a@b.co\r\nBcc: x@y.z")
	t.Setenv("WORKER_CONCURRENCY", "0")
	t.Setenv("REDIS_URL", "redis://:hunter2@[::1")
	t.Setenv("CODE_TTL", "500ms")
	t.Setenv("CODE_KEY_PREFIX", "")
	t.Setenv("MAIL_REPLY_TO", "support@example.com, evil@example.net")
	t.Setenv("APP_NAME", "ACME\r\nBcc: evil@example.net")
	t.Setenv("MAIL_LINK_URL", "https://app.example.com/verify?email={email}")
	t.Setenv("MAIL_TEMPLATES_DIR", "/nonexistent/verifyq-templates")
	t.Setenv("RECONCILE_INTERVAL", "10ms")
	_, err := platform.Load[Config]()
	require.Error(t, err)
	for _, want := range []string{
		"SMTP_URL: not a valid URL",
		"MAIL_FROM: invalid email address",
		"WORKER_CONCURRENCY",
		"REDIS_URL",
		"CODE_TTL: 500ms is shorter than 1s",
		"CODE_KEY_PREFIX: must not be empty",
		"MAIL_REPLY_TO: invalid email address",
		"APP_NAME: contains a control or format character",
		"MAIL_LINK_URL: has no {code} placeholder",
		"MAIL_TEMPLATES_DIR: stat /nonexistent/verifyq-templates: no such file or directory",
		"RECONCILE_INTERVAL: 10ms is below 1s (0 turns the reconciler off)",
	} {
		assert.Contains(t, err.Error(), want)
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		assert.Regexp(t, `^[A-Z][A-Z0-9_]*:`, line, "every problem names its variable")
	}
	assert.NotContains(t, err.Error(), "hunter2", "secrets are never printed")
	assert.NotContains(t, err.Error(), "evil", "bad values are not echoed")
}

// Every problem of SMTP_URL at once, none repeating the URL.
func TestLoadConfigBadSMTPURL(t *testing.T) {
	t.Setenv("SMTP_URL", "smtp://:hunter2@smtp.example:70000?tls=maybe&timeout=-1s")
	_, err := platform.Load[Config]()
	require.Error(t, err)
	for _, want := range []string{
		"SMTP_URL: the port is not in 1..65535",
		"SMTP_URL: a password without a user",
		"SMTP_URL: timeout: want a positive duration",
		"SMTP_URL: tls: want auto, starttls or none",
	} {
		assert.Contains(t, err.Error(), want)
	}
	assert.NotContains(t, err.Error(), "hunter2")
	assert.NotContains(t, err.Error(), "smtp.example")
}

// The SMTP variables of earlier releases stop the worker, naming SMTP_URL
// and never repeating the password.
func TestLoadConfigRetiredSMTPVariables(t *testing.T) {
	for _, name := range []string{"SMTP_HOST", "SMTP_PORT", "SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_TLS", "SMTP_TIMEOUT"} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(name, "hunter2")
			_, err := platform.Load[Config]()
			require.Error(t, err)
			assert.Contains(t, err.Error(), name+": no longer read: use SMTP_URL")
			assert.NotContains(t, err.Error(), "hunter2")
		})
	}
	t.Run("the worker exits", func(t *testing.T) {
		t.Setenv("SMTP_PASSWORD", "hunter2")
		var stderr bytes.Buffer
		assert.Equal(t, 1, platform.Run(t.Context(), binary, nil, &stderr))
		assert.Equal(t, "worker: SMTP_PASSWORD: no longer read: use SMTP_URL (smtp://user:password@host:port, both URL-encoded)\n", stderr.String())
	})
}

// CODE_TTL is the worker's too: a key without expiry is mailed with it.
func TestLoadConfigCodeTTL(t *testing.T) {
	t.Setenv("CODE_TTL", "3m")
	cfg, err := platform.Load[Config]()
	require.NoError(t, err)
	assert.Equal(t, 3*time.Minute, cfg.TTL)
}

// docs/CONFIGURATION.md lists every variable of the worker with its
// default, and none it does not read.
func TestConfigurationReference(t *testing.T) {
	configtest.Check(t, "../../docs/CONFIGURATION.md", "worker", Config{})
}

// EHLO localhost to a relay that is not on loopback makes spam filters
// score the mail (HELO_LOCALHOST): the worker refuses to start so, and
// refuses a connection cap out of bounds and a CA file it cannot read.
func TestLoadConfigRelayManners(t *testing.T) {
	t.Setenv("SMTP_URL", "smtp://smtp.acme.test:587?ca_file=/nonexistent/ca.pem")
	t.Setenv("SMTP_HELO_NAME", "localhost")
	t.Setenv("SMTP_MAX_CONNECTIONS", "0")
	_, err := platform.Load[Config]()
	require.Error(t, err)
	for _, want := range []string{
		`SMTP_HELO_NAME: "localhost" names no host to a relay that is not on loopback`,
		"SMTP_MAX_CONNECTIONS: 0 must be at least 1",
		"SMTP_URL: ca_file: stat /nonexistent/ca.pem: no such file or directory",
	} {
		assert.Contains(t, err.Error(), want)
	}

	t.Setenv("SMTP_URL", "smtp://127.0.0.1:2525")
	t.Setenv("SMTP_MAX_CONNECTIONS", "1")
	cfg, err := platform.Load[Config]()
	require.NoError(t, err, "localhost is fine for a relay on loopback")
	assert.Equal(t, "localhost", cfg.SMTP.HelloName)

	t.Setenv("SMTP_HELO_NAME", "bad name!")
	_, err = platform.Load[Config]()
	require.ErrorContains(t, err, "SMTP_HELO_NAME: not a domain name")
}

// SMTP_FALLBACK_URL is a second relay in SMTP_URL's form, made ready as
// SMTP_URL is, with SMTP_HELO_NAME and SMTP_MAX_CONNECTIONS; unset or
// empty, there is none.
func TestLoadConfigFallbackURL(t *testing.T) {
	cfg, err := platform.Load[Config]()
	require.NoError(t, err)
	assert.Nil(t, cfg.FallbackSMTP, "none by default")
	t.Setenv("SMTP_FALLBACK_URL", "")
	cfg, err = platform.Load[Config]()
	require.NoError(t, err)
	assert.Nil(t, cfg.FallbackSMTP, "none when empty")

	t.Setenv("SMTP_URL", "smtp://127.0.0.1:2525?tls=none")
	t.Setenv("SMTP_FALLBACK_URL", "smtp://apikey:s3cr%40t@smtp.backup.test:587?tls=starttls&timeout=20s")
	t.Setenv("SMTP_HELO_NAME", "mailer.acme.test")
	t.Setenv("SMTP_MAX_CONNECTIONS", "4")
	cfg, err = platform.Load[Config]()
	require.NoError(t, err)
	require.NotNil(t, cfg.FallbackSMTP)
	assert.Equal(t, relay.Config{
		Host: "smtp.backup.test", Port: 587, Username: "apikey", Password: "s3cr@t", TLS: relay.TLSStartTLS,
		Timeout: 20 * time.Second, HelloName: "mailer.acme.test", MaxConns: 4,
	}, *cfg.FallbackSMTP)
	assert.Equal(t, relay.Config{
		Host: "127.0.0.1", Port: 2525, TLS: relay.TLSNone,
		Timeout: DefaultSMTPTimeout, HelloName: "mailer.acme.test", MaxConns: 4,
	}, cfg.SMTP, "the primary is its own")
	assert.NotContains(t, fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg), "s3cr")
}

// Every problem of SMTP_FALLBACK_URL is named after it, never repeating
// it; a rule of the shared variables broken for both relays is said once.
func TestLoadConfigBadFallbackURL(t *testing.T) {
	t.Setenv("SMTP_FALLBACK_URL", "smtp://:hunter2@smtp.backup.test:70000?tls=maybe")
	_, err := platform.Load[Config]()
	require.Error(t, err)
	for _, want := range []string{
		"SMTP_FALLBACK_URL: the port is not in 1..65535",
		"SMTP_FALLBACK_URL: a password without a user",
		"SMTP_FALLBACK_URL: tls: want auto, starttls or none",
	} {
		assert.Contains(t, err.Error(), want)
	}
	assert.NotContains(t, err.Error(), "hunter2")
	assert.NotContains(t, err.Error(), "backup")

	t.Setenv("SMTP_URL", "smtp://smtp.acme.test:587")
	t.Setenv("SMTP_FALLBACK_URL", "smtp://smtp.backup.test:587?ca_file=/nonexistent/backup-ca.pem")
	t.Setenv("SMTP_HELO_NAME", "localhost")
	_, err = platform.Load[Config]()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "SMTP_FALLBACK_URL: ca_file: stat /nonexistent/backup-ca.pem: no such file or directory")
	assert.Equal(t, 1, strings.Count(err.Error(), "SMTP_HELO_NAME:"), "said once: %v", err)

	t.Setenv("SMTP_URL", "smtp://127.0.0.1:2525")
	t.Setenv("SMTP_FALLBACK_URL", "smtp://smtp.backup.test:587")
	_, err = platform.Load[Config]()
	require.ErrorContains(t, err, `SMTP_HELO_NAME: "localhost" names no host to a relay that is not on loopback`,
		"a name fit for a relay on loopback, not for the fallback")
}

// defaultRules are mail.DefaultMailboxRules, parsed: MAILBOX_RULES' default
// is mail's table.
func defaultRules(t *testing.T) mail.MailboxRules {
	t.Helper()
	r, err := mail.ParseMailboxRules(mail.DefaultMailboxRules)
	require.NoError(t, err)
	return r
}

// MAIL_RETURN_PATH sets the envelope sender apart from MAIL_FROM; with
// BOUNCE_SECRET it is VERP; BOUNCE_ADDR needs both. Secrets are never
// printed.
func TestLoadConfigReturnPath(t *testing.T) {
	const secret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	const previous = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"
	cfg, err := platform.Load[Config]()
	require.NoError(t, err)
	assert.Nil(t, cfg.ReturnPath, "none: MAIL_FROM's address")

	t.Setenv("MAIL_RETURN_PATH", "bounces@bounce.example.com")
	cfg, err = platform.Load[Config]()
	require.NoError(t, err)
	require.NotNil(t, cfg.ReturnPath)
	assert.False(t, cfg.ReturnPath.Signed())
	assert.Equal(t, "bounces@bounce.example.com", cfg.ReturnPath.String())

	t.Setenv("BOUNCE_SECRET", secret+","+previous)
	t.Setenv("BOUNCE_ADDR", ":2525")
	cfg, err = platform.Load[Config]()
	require.NoError(t, err)
	assert.True(t, cfg.ReturnPath.Signed())
	assert.Equal(t, ":2525", cfg.BounceAddr)
	printed := fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg)
	assert.NotContains(t, printed, secret)
	assert.NotContains(t, printed, previous)

	for _, tt := range []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{"BOUNCE_SECRET": "hunter2"}, []string{"BOUNCE_SECRET: the secret: 5 bytes"}},
		{map[string]string{"BOUNCE_SECRET": secret + "," + secret}, []string{"BOUNCE_SECRET: the previous secret is the same as the secret"}},
		{map[string]string{"MAIL_RETURN_PATH": "bounces+x@bounce.example.com"}, []string{`MAIL_RETURN_PATH: the local part holds "+"`}},
		{map[string]string{"MAIL_RETURN_PATH": "Bounces <bounces@bounce.example.com>"}, []string{"MAIL_RETURN_PATH: invalid email address"}},
		{map[string]string{"MAIL_RETURN_PATH": ""}, []string{"BOUNCE_SECRET: set MAIL_RETURN_PATH too", "BOUNCE_ADDR: the bounce intake needs MAIL_RETURN_PATH and BOUNCE_SECRET"}},
		{map[string]string{"BOUNCE_SECRET": ""}, []string{"BOUNCE_ADDR: the bounce intake needs MAIL_RETURN_PATH and BOUNCE_SECRET"}},
		{map[string]string{"BOUNCE_ADDR": "2525"}, []string{"BOUNCE_ADDR: want host:port"}},
	} {
		for k, v := range tt.env {
			t.Setenv(k, v)
		}
		_, err := platform.Load[Config]()
		require.Error(t, err, "%v", tt.env)
		for _, want := range tt.want {
			assert.Contains(t, err.Error(), want, "%v", tt.env)
		}
		assert.NotContains(t, err.Error(), secret)
		assert.NotContains(t, err.Error(), "hunter2")
		t.Setenv("MAIL_RETURN_PATH", "bounces@bounce.example.com")
		t.Setenv("BOUNCE_SECRET", secret+","+previous)
		t.Setenv("BOUNCE_ADDR", ":2525")
	}
}

func TestLoadConfigWebhooks(t *testing.T) {
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	previous := "whsec_" + base64.StdEncoding.EncodeToString([]byte("the-previous-secret-24by"))
	cfg, err := platform.Load[Config]()
	require.NoError(t, err)
	assert.Empty(t, cfg.WebhookURLs, "unset: events off")

	t.Setenv("WEBHOOK_URLS", "https://hooks.example.com/verifyq,http://127.0.0.1:9000/in")
	t.Setenv("WEBHOOK_SECRET", secret+","+previous)
	cfg, err = platform.Load[Config]()
	require.NoError(t, err)
	assert.Equal(t, []string{"https://hooks.example.com/verifyq", "http://127.0.0.1:9000/in"}, []string(cfg.WebhookURLs))
	assert.Len(t, cfg.WebhookSecret.Keys(), 2)
	printed := fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg)
	assert.NotContains(t, printed, strings.TrimPrefix(secret, "whsec_"))

	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"WEBHOOK_SECRET": ""}, "WEBHOOK_SECRET: the events to WEBHOOK_URLS are signed"},
		{map[string]string{"WEBHOOK_URLS": ""}, "WEBHOOK_SECRET: set WEBHOOK_URLS too"},
		{map[string]string{"WEBHOOK_URLS": "http://hooks.example.com/"}, "WEBHOOK_URLS"},
		{map[string]string{"WEBHOOK_SECRET": "hunter2hunter2hunter2hunter2"}, "WEBHOOK_SECRET"},
	} {
		for k, v := range tt.env {
			t.Setenv(k, v)
		}
		_, err := platform.Load[Config]()
		require.Error(t, err, "%v", tt.env)
		assert.Contains(t, err.Error(), tt.want, "%v", tt.env)
		assert.NotContains(t, err.Error(), "hunter2")
		assert.NotContains(t, err.Error(), strings.TrimPrefix(secret, "whsec_"))
		t.Setenv("WEBHOOK_URLS", "https://hooks.example.com/verifyq")
		t.Setenv("WEBHOOK_SECRET", secret)
	}
}
