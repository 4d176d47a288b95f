package main

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/verifyq/verifyq/auth"
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
		HTTPAddr:           "127.0.0.1:8080",
		AdminAddr:          "127.0.0.1:8081",
		GRPCAddr:           "127.0.0.1:50051",
		RequestTimeout:     5 * time.Second,
		MinReplicasTimeout: 100 * time.Millisecond,
		Length:             6,
		DefaultLocale:      "zh-CN",
		Locale:             mail.LocaleZhCN,

		Limits: Limits{
			Cooldown:              time.Minute,
			Gap:                   10 * time.Second,
			AddressPerHour:        5,
			ClientPerHour:         30,
			ClientVerifiesPerHour: 60,
		},
		MaxAttempts: 5,

		MaxConnections: 1024,

		LegacyCallers:        LegacyCallers{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		StatusReadsPerMinute: auth.DefaultStatusReadsPerMinute,
		TrustedProxies:       defaultTrusted(t),
		LegacyGRPCAddr:       "127.0.0.1:50052",
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
	t.Setenv("CODE_SECRET", "0123456789abcdef"+strings.Repeat("ab", 24))
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

// DEFAULT_LOCALE names a supported locale, in any case, and is the
// service's default; a tag that is not one of them (even one the matcher
// would match) is refused.
func TestLoadConfigDefaultLocale(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want mail.Locale
		err  bool
	}{
		{"en", mail.LocaleEN, false}, {"zh-TW", mail.LocaleZhTW, false}, {"PT-BR", mail.LocalePtBR, false},
		{"ru", mail.LocaleRU, false}, {"en-US", "", true}, {"nl", "", true}, {"zh_CN", "", true},
	} {
		t.Run(tt.in, func(t *testing.T) {
			t.Setenv("DEFAULT_LOCALE", tt.in)
			cfg, err := platform.Load[Config]()
			if tt.err {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "DEFAULT_LOCALE: not a supported locale")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, cfg.Locale)
		})
	}
}

// MAX_CONNECTIONS_PER_SOURCE: unset, a sixteenth of MAX_CONNECTIONS (at
// least 1); 0 turns it off; above MAX_CONNECTIONS or not a number, refused.
func TestLoadConfigConnectionsPerSource(t *testing.T) {
	for _, tt := range []struct {
		name, max, perSource string // "-": unset
		want                 int
		err                  string
	}{
		{"default", "-", "-", 64, ""},
		{"a sixteenth", "100", "-", 6, ""},
		{"at least one", "10", "-", 1, ""},
		{"set", "-", "8", 8, ""},
		{"off", "-", "0", 0, ""},
		{"all", "50", "50", 50, ""},
		{"above the total", "50", "51", 0, "MAX_CONNECTIONS_PER_SOURCE: 51 is outside 0..MAX_CONNECTIONS (50)"},
		{"negative", "-", "-1", 0, "MAX_CONNECTIONS_PER_SOURCE: -1 is outside 0..MAX_CONNECTIONS (1024)"},
		{"not a number", "-", "1/16", 0, "MAX_CONNECTIONS_PER_SOURCE: not an integer"},
		{"empty", "-", "", 0, "MAX_CONNECTIONS_PER_SOURCE: not an integer"},
		{"with a bad total", "0", "8", 0, "MAX_CONNECTIONS: 0 is outside 1..1048576"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for name, v := range map[string]string{"MAX_CONNECTIONS": tt.max, "MAX_CONNECTIONS_PER_SOURCE": tt.perSource} {
				if v != "-" {
					t.Setenv(name, v)
				}
			}
			cfg, err := platform.Load[Config]()
			if tt.err != "" {
				require.Error(t, err)
				assert.Equal(t, tt.err, err.Error(), "one problem, under its variable")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, cfg.PerSource())
		})
	}
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
	t.Setenv("LEGACY_CALLERS", "127.0.0.0/8,loopback")
	t.Setenv("STATUS_READS_PER_MINUTE", "-1")
	t.Setenv("API_KEYS_FILE", filepath.Join(t.TempDir(), "missing"))
	t.Setenv("REDIS_MIN_REPLICAS", "17")
	t.Setenv("REDIS_MIN_REPLICAS_TIMEOUT", "0s")
	t.Setenv("DEFAULT_LOCALE", "en-GB")
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
		`LEGACY_CALLERS: "loopback" is not a CIDR`,
		"STATUS_READS_PER_MINUTE: must not be negative",
		"API_KEYS_FILE: open ",
		"REDIS_MIN_REPLICAS: 17 is outside 0..16",
		"REDIS_MIN_REPLICAS_TIMEOUT: must be at least 1ms",
		"DEFAULT_LOCALE: not a supported locale: must be one of zh-CN, zh-TW, en, ja, ko, es, fr, de, pt-BR, ru",
	} {
		assert.Contains(t, err.Error(), want)
	}
	assertEveryLineNamesAVariable(t, err)
	assert.NotContains(t, err.Error(), "hunter2", "secrets are never printed")
}

// REDIS_MIN_REPLICAS_TIMEOUT must end before the client's read timeout
// gives up on WAIT's reply: REDIS_URL's read_timeout, else 2 s.
func TestLoadConfigMinReplicasTimeout(t *testing.T) {
	t.Setenv("REDIS_MIN_REPLICAS", "1")
	t.Setenv("REDIS_MIN_REPLICAS_TIMEOUT", "2s")
	_, err := platform.Load[Config]()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "REDIS_MIN_REPLICAS_TIMEOUT: 2s is not below the read timeout of REDIS_URL (2s)")

	t.Setenv("REDIS_URL", "redis://127.0.0.1:6379/0?read_timeout=5s")
	cfg, err := platform.Load[Config]()
	require.NoError(t, err)
	assert.Equal(t, 1, cfg.MinReplicas)
	assert.Equal(t, 2*time.Second, cfg.MinReplicasTimeout)
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

// Without API_KEYS_FILE the enqueuer listens on loopback only, unless
// ALLOW_UNAUTHENTICATED says otherwise; with it, every call needs a key.
func TestLoadConfigSecureByDefault(t *testing.T) {
	_, line, err := auth.NewKey("gateway", "send,verify")
	require.NoError(t, err)
	keysFile := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(keysFile, []byte("# callers\n"+line+"\n"), 0o600))

	for _, tt := range []struct{ http, grpc string }{
		{":8080", "127.0.0.1:50051"}, {"127.0.0.1:8080", "0.0.0.0:50051"}, {"192.0.2.2:8080", "[::]:50051"},
	} {
		t.Run(tt.http+" "+tt.grpc, func(t *testing.T) {
			t.Setenv("HTTP_ADDR", tt.http)
			t.Setenv("GRPC_ADDR", tt.grpc)
			_, err := platform.Load[Config]()
			require.Error(t, err)
			for _, l := range []struct{ name, addr string }{{"HTTP_ADDR", tt.http}, {"GRPC_ADDR", tt.grpc}} {
				if platform.IsLoopback(l.addr) {
					assert.NotContains(t, err.Error(), l.name)
					continue
				}
				assert.Contains(t, err.Error(), l.name+": "+l.addr+" is reachable from other hosts")
			}
			assert.Contains(t, err.Error(), "set API_KEYS_FILE")
			assert.Contains(t, err.Error(), "ALLOW_UNAUTHENTICATED=true")
			assertEveryLineNamesAVariable(t, err)

			t.Setenv("ALLOW_UNAUTHENTICATED", "true")
			cfg, err := platform.Load[Config]()
			require.NoError(t, err)
			assert.True(t, cfg.Unauthenticated(), "warned of at start")
			assert.True(t, cfg.guard().Open())

			t.Setenv("API_KEYS_FILE", keysFile)
			_, err = platform.Load[Config]()
			assert.ErrorContains(t, err, "ALLOW_UNAUTHENTICATED: true contradicts API_KEYS_FILE")

			t.Setenv("ALLOW_UNAUTHENTICATED", "false")
			cfg, err = platform.Load[Config]()
			require.NoError(t, err)
			assert.Equal(t, []string{"gateway"}, cfg.Keys.Names())
			assert.False(t, cfg.Unauthenticated())
			assert.False(t, cfg.guard().Open())
		})
	}
	t.Run("loopback", func(t *testing.T) {
		cfg, err := platform.Load[Config]()
		require.NoError(t, err)
		assert.False(t, cfg.Unauthenticated())
		assert.True(t, cfg.guard().Open(), "as before: no key needed")
	})
}

// Every bad line of API_KEYS_FILE is reported under the variable, with
// its number, never with its hash.
func TestLoadConfigBadKeysFile(t *testing.T) {
	_, line, err := auth.NewKey("gateway", "send")
	require.NoError(t, err)
	hash := line[strings.LastIndex(line, ":")+1:]
	keysFile := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(keysFile, []byte(line+"\n"+line+"\nx admin sha256:"+hash+"\n"), 0o600))
	t.Setenv("API_KEYS_FILE", keysFile)
	_, err = platform.Load[Config]()
	require.Error(t, err)
	assert.Contains(t, err.Error(), `API_KEYS_FILE: line 2: the name "gateway" is also on line 1`)
	assert.Contains(t, err.Error(), `API_KEYS_FILE: line 3: unknown scope "admin"`)
	assert.NotContains(t, err.Error(), hash)
	assertEveryLineNamesAVariable(t, err)
}

// docs/CONFIGURATION.md lists every variable of the enqueuer with its
// default, and none it does not read.
func TestConfigurationReference(t *testing.T) {
	configtest.Check(t, "../../docs/CONFIGURATION.md", "enqueuer", Config{})
}

// -h lists -new-key beside the flags platform.Run parses: main handles
// it before Run, which would not know it otherwise.
func TestHelpListsNewKey(t *testing.T) {
	var out strings.Builder
	code := platform.Run(t.Context(), binary, []string{"-h"}, &out)
	assert.Equal(t, 0, code)
	assert.Contains(t, out.String(), "-healthcheck")
	assert.Contains(t, out.String(), "-new-key NAME SCOPES")
}

// -new-key prints a key and the line that admits it.
func TestNewKeyCommand(t *testing.T) {
	var out, errOut strings.Builder
	require.Equal(t, 0, newKey([]string{"gateway", "send,verify"}, &out, &errOut), errOut.String())
	var key, line string
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		switch {
		case strings.HasPrefix(l, "#"):
		case key == "":
			key = l
		default:
			line = l
		}
	}
	keys, err := auth.Parse(strings.NewReader(line))
	require.NoError(t, err)
	c, err := keys.Authenticate(key)
	require.NoError(t, err)
	assert.Equal(t, "gateway", c.Name)
	assert.NotContains(t, line, key)

	for _, args := range [][]string{nil, {"gateway"}, {"gateway", "admin"}, {"a b", "send"}, {"x", "send", "more"}} {
		errOut.Reset()
		assert.Equal(t, 2, newKey(args, &out, &errOut), "%q", args)
		assert.NotEmpty(t, errOut.String())
	}
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

// TLS's variables: the certificate and its key together, both loadable;
// a client CA only with them, and counting as authentication for
// listeners other hosts reach; certificate callers only with a client CA;
// the plaintext LEGACY_GRPC_ADDR keyless only on loopback.
func TestLoadConfigTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "ca")
	certFile, keyFile, caFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "ca.pem")
	writeServerCert(t, ca, certFile, keyFile)
	require.NoError(t, os.WriteFile(caFile, ca.pem, 0o600))
	certKeys := filepath.Join(dir, "keys")
	require.NoError(t, os.WriteFile(certKeys, []byte("billing send cert\n"), 0o600))

	cfg, err := platform.Load[Config]()
	require.NoError(t, err)
	assert.False(t, cfg.TLS())
	assert.Equal(t, "127.0.0.1:50052", cfg.LegacyGRPCAddr)

	t.Setenv("TLS_CERT_FILE", certFile)
	_, err = platform.Load[Config]()
	assert.ErrorContains(t, err, "TLS_CERT_FILE: and TLS_KEY_FILE go together")
	t.Setenv("TLS_KEY_FILE", caFile) // not a key
	_, err = platform.Load[Config]()
	assert.ErrorContains(t, err, "TLS_CERT_FILE: ")
	t.Setenv("TLS_KEY_FILE", keyFile)
	cfg, err = platform.Load[Config]()
	require.NoError(t, err)
	assert.True(t, cfg.TLS())

	t.Setenv("HTTP_ADDR", "0.0.0.0:8443")
	_, err = platform.Load[Config]()
	assert.ErrorContains(t, err, "HTTP_ADDR: 0.0.0.0:8443 is reachable from other hosts", "TLS alone authenticates no one")
	t.Setenv("TLS_CLIENT_CA_FILE", keyFile)
	_, err = platform.Load[Config]()
	assert.ErrorContains(t, err, "TLS_CLIENT_CA_FILE: ")
	t.Setenv("TLS_CLIENT_CA_FILE", caFile)
	cfg, err = platform.Load[Config]()
	require.NoError(t, err, "a client CA is authentication")
	assert.False(t, cfg.Unauthenticated())
	t.Setenv("LEGACY_GRPC_ADDR", "0.0.0.0:50052")
	_, err = platform.Load[Config]()
	assert.ErrorContains(t, err, "LEGACY_GRPC_ADDR: 0.0.0.0:50052 is reachable from other hosts", "plaintext, no handshake")
	t.Setenv("API_KEYS_FILE", certKeys)
	cfg, err = platform.Load[Config]()
	require.NoError(t, err, "keys guard the old service by LEGACY_CALLERS")
	assert.Equal(t, 1, cfg.Keys.CertCallers())
	t.Setenv("ALLOW_UNAUTHENTICATED", "true")
	_, err = platform.Load[Config]()
	assert.ErrorContains(t, err, "ALLOW_UNAUTHENTICATED: true contradicts")
	t.Setenv("ALLOW_UNAUTHENTICATED", "false")

	t.Setenv("TLS_CLIENT_CA_FILE", "")
	_, err = platform.Load[Config]()
	assert.ErrorContains(t, err, `API_KEYS_FILE: 1 lines of certificate callers ("cert" in place of a hash), and without TLS_CLIENT_CA_FILE`)
	t.Setenv("TLS_CLIENT_CA_FILE", caFile)
	t.Setenv("TLS_CERT_FILE", "")
	t.Setenv("TLS_KEY_FILE", "")
	_, err = platform.Load[Config]()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "TLS_CLIENT_CA_FILE: needs TLS_CERT_FILE and TLS_KEY_FILE")
	assertEveryLineNamesAVariable(t, err)
}

// The hour of sends holds the resend cooldown, so a cooldown cannot be
// longer than that hour.
func TestLoadConfigRefusesACooldownBeyondTheHour(t *testing.T) {
	t.Setenv("RESEND_COOLDOWN", "61m")
	_, err := platform.Load[Config]()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "RESEND_COOLDOWN: must be at most 1h0m0s")
	t.Setenv("RESEND_COOLDOWN", "1h")
	_, err = platform.Load[Config]()
	require.NoError(t, err)
}
