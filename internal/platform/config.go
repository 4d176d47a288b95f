package platform

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/field"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/tasks"
)

// Common is the configuration both binaries share; each binary's Config
// embeds it, so envconfig reads the same variables with the same defaults.
type Common struct {
	RedisMode     string `envconfig:"REDIS_MODE" default:"single"`
	RedisURL      string `envconfig:"REDIS_URL" default:"redis://127.0.0.1:6379/0"`
	LogLevel      string `envconfig:"LOG_LEVEL" default:"info"`
	CodeKeyPrefix string `envconfig:"CODE_KEY_PREFIX" default:"code_"`
	// CodeTTL is the lifetime of a code: the enqueuer gives it to new codes,
	// the worker states it in the mail of a code whose key has no expiry.
	CodeTTL time.Duration `envconfig:"CODE_TTL" default:"10m"`
	// Purposes are the purposes a code may be asked for besides the
	// default one (codes.ID); each may have its own lifetime,
	// CODE_TTL_<PURPOSE in upper case> (see PurposeTTLs).
	Purposes        []string      `envconfig:"PURPOSES" default:"register,login,reset_password,change_email"`
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"25s"`

	// CodeStorage is "plain" (the code key holds the code, as the old
	// gateway reads it) or "sealed" (it holds the code's MAC; see
	// codes.Seal and Seal).
	CodeStorage string `envconfig:"CODE_STORAGE" default:"plain"`
	// The secret of sealed codes: CODE_SECRET (hex or base64) or the bytes
	// of the file CODE_SECRET_FILE; CODE_SECRET_PREVIOUS (hex or base64)
	// still verifies and opens codes sealed before a rotation.
	CodeSecret         Secret `envconfig:"CODE_SECRET"`
	CodeSecretFile     string `envconfig:"CODE_SECRET_FILE"`
	CodeSecretPrevious Secret `envconfig:"CODE_SECRET_PREVIOUS"`
	// AddressTagSeparators start a tag in a local part ("+" makes
	// user+tag@x one mailbox with user@x); empty turns tags off. The
	// enqueuer's limits and both binaries' suppression list key on the
	// mailbox.
	AddressTagSeparators string `envconfig:"ADDRESS_TAG_SEPARATORS" default:"+"`
	// QueueShards spreads the send tasks over this many queues (mail-0,
	// mail-1, ...), which Redis Cluster keeps on different slots; 1 is the
	// one queue "mail". Both binaries must agree.
	QueueShards int `envconfig:"QUEUE_SHARDS" default:"1"`

	// The admin server's dashboard and pprof are behind basic auth with
	// these when DASHBOARD_PASSWORD is set.
	DashboardUser     string `envconfig:"DASHBOARD_USER" default:"admin"`
	DashboardPassword string `envconfig:"DASHBOARD_PASSWORD"`
	// DashboardHosts are the names, besides the host of ADMIN_ADDR,
	// "localhost" and IP addresses, that the dashboard and pprof answer to
	// in the Host header (see Hosts).
	DashboardHosts []string `envconfig:"DASHBOARD_HOSTS"`
}

// AdminHosts returns the names the admin server on adminAddr answers to
// (DASHBOARD_HOSTS, validated before).
func (c Common) AdminHosts(adminAddr string) Hosts {
	extra, _ := ParseHosts(c.DashboardHosts)
	return AdminHosts(adminAddr, extra)
}

// Validate returns every problem with c, each naming its variable and never
// repeating a secret. The rules of the code key and lifetime are the codes
// package's.
func (c Common) Validate() []error {
	var errs []error
	if _, err := ParseRedis(c.RedisMode, c.RedisURL); err != nil {
		errs = append(errs, err)
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if err := field.Rename(errors.Join(codes.ValidateKeyPrefix(c.CodeKeyPrefix), codes.ValidateTTL(c.CodeTTL), c.Identity().Validate()),
		map[string]string{"KeyPrefix": "CODE_KEY_PREFIX", "TTL": "CODE_TTL", "TagSeparators": "ADDRESS_TAG_SEPARATORS"}); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.PurposeTTLs(); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.Seal(); err != nil {
		errs = append(errs, err)
	}
	if c.QueueShards < 1 || c.QueueShards > tasks.MaxQueueShards {
		errs = append(errs, fmt.Errorf("QUEUE_SHARDS: %d is outside 1..%d", c.QueueShards, tasks.MaxQueueShards))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("SHUTDOWN_TIMEOUT: must be positive"))
	}
	if c.DashboardPassword != "" && (c.DashboardUser == "" || strings.Contains(c.DashboardUser, ":")) {
		errs = append(errs, errors.New("DASHBOARD_USER: must be set, without a colon, when DASHBOARD_PASSWORD is"))
	}
	if _, err := ParseHosts(c.DashboardHosts); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// PurposeTTLPrefix starts the variable of a purpose's own code lifetime:
// CODE_TTL_RESET_PASSWORD=15m.
const PurposeTTLPrefix = "CODE_TTL_"

// PurposeTTLs returns every purpose of PURPOSES with its own lifetime, read
// from the process's environment (CODE_TTL_<PURPOSE>), zero for one without.
// A purpose twice or not valid, a lifetime that does not parse or is too
// short, and a CODE_TTL_<NAME> of no purpose are errors naming the variable.
func (c Common) PurposeTTLs() (map[string]time.Duration, error) {
	out := make(map[string]time.Duration, len(c.Purposes))
	var errs []error
	for _, p := range c.Purposes {
		if p == "" { // PURPOSES="": the default purpose alone
			continue
		}
		if _, dup := out[p]; dup {
			errs = append(errs, fmt.Errorf("PURPOSES: %q is listed twice", p))
		}
		out[p] = 0
	}
	vars := map[string]string{"Purposes": "PURPOSES"}
	for p := range out {
		vars["TTL_"+strings.ToUpper(p)] = PurposeTTLPrefix + strings.ToUpper(p)
	}
	for _, kv := range os.Environ() {
		name, value, _ := strings.Cut(kv, "=")
		suffix, ok := strings.CutPrefix(name, PurposeTTLPrefix)
		if !ok {
			continue
		}
		p := strings.ToLower(suffix)
		if _, known := out[p]; !known || strings.ToUpper(p) != suffix {
			errs = append(errs, fmt.Errorf("%s: no purpose %q in PURPOSES", name, p))
			continue
		}
		d, err := time.ParseDuration(value)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s: want a positive duration such as 15m", name))
			continue
		}
		out[p] = d
	}
	errs = append(errs, field.Rename(codes.ValidatePurposes(out), vars))
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// Secret is a configured secret: %v and %#v print it redacted.
type Secret string

// String hides the secret.
func (Secret) String() string { return "[redacted]" }

// GoString hides the secret.
func (Secret) GoString() string { return "[redacted]" }

// Code storage modes (CODE_STORAGE).
const (
	StoragePlain  = "plain"
	StorageSealed = "sealed"
)

// maxSecretFile bounds CODE_SECRET_FILE.
const maxSecretFile = 4 << 10

// Seal returns the codes.Seal of CODE_STORAGE=sealed, nil for plain. The
// secret is CODE_SECRET, or the bytes of CODE_SECRET_FILE (one trailing
// newline dropped), never both; CODE_SECRET_PREVIOUS is optional. Errors
// name the variable and never hold a secret.
func (c Common) Seal() (*codes.Seal, error) {
	switch c.CodeStorage {
	case StoragePlain, "": // "": a Config built by hand
		if c.CodeSecret != "" || c.CodeSecretFile != "" || c.CodeSecretPrevious != "" {
			return nil, errors.New("CODE_SECRET: set, but CODE_STORAGE is plain: set CODE_STORAGE=sealed, or unset CODE_SECRET, CODE_SECRET_FILE and CODE_SECRET_PREVIOUS")
		}
		return nil, nil
	case StorageSealed:
	default:
		return nil, errors.New(`CODE_STORAGE: want "plain" or "sealed"`)
	}
	var secret []byte
	switch {
	case c.CodeSecret != "" && c.CodeSecretFile != "":
		return nil, errors.New("CODE_SECRET: set only one of CODE_SECRET and CODE_SECRET_FILE")
	case c.CodeSecret != "":
		b, err := codes.ParseSecret(string(c.CodeSecret))
		if err != nil {
			return nil, fmt.Errorf("CODE_SECRET: %w", err)
		}
		secret = b
	case c.CodeSecretFile != "":
		b, err := readSecretFile(c.CodeSecretFile)
		if err != nil {
			return nil, fmt.Errorf("CODE_SECRET_FILE: %w", err)
		}
		secret = b
	default:
		return nil, errors.New("CODE_SECRET: CODE_STORAGE=sealed needs CODE_SECRET or CODE_SECRET_FILE (at least 32 random bytes, e.g. openssl rand -hex 32)")
	}
	var previous []byte
	if c.CodeSecretPrevious != "" {
		b, err := codes.ParseSecret(string(c.CodeSecretPrevious))
		if err != nil {
			return nil, fmt.Errorf("CODE_SECRET_PREVIOUS: %w", err)
		}
		previous = b
	}
	seal, err := codes.NewSeal(secret, previous)
	if err != nil {
		return nil, fmt.Errorf("CODE_SECRET: %w", err)
	}
	return seal, nil
}

// readSecretFile reads a secret file: its bytes, one trailing newline
// dropped.
func readSecretFile(name string) ([]byte, error) {
	f, err := os.Open(name) //nolint:gosec // G304: the operator names the file on purpose
	if err != nil {
		return nil, errors.New("cannot open the file")
	}
	defer func() { _ = f.Close() }()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, errors.New("cannot read the file")
	}
	if len(b) > maxSecretFile {
		return nil, fmt.Errorf("larger than %d bytes", maxSecretFile)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	return b, nil
}

// Identity is the mailbox identity of ADDRESS_TAG_SEPARATORS.
func (c Common) Identity() mail.Identity { return mail.Identity{TagSeparators: c.AddressTagSeparators} }

// Redis is REDIS_MODE and REDIS_URL, parsed (validated before).
func (c Common) Redis() Redis {
	r, _ := ParseRedis(c.RedisMode, c.RedisURL)
	return r
}

// SetupLogging returns the process's JSON logger at LOG_LEVEL (validated
// before) and routes go-redis's messages and the standard log package
// (which some libraries use) through it, so every line is JSON.
func (c Common) SetupLogging(w io.Writer) *slog.Logger {
	level, _ := ParseLevel(c.LogLevel)
	logger := NewLogger(w, level)
	redis.SetLogger(RedisLogger{L: logger})
	slog.SetDefault(logger)
	return logger
}
