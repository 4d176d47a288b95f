package relay

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.opentelemetry.io/otel/trace"

	"github.com/verifyq/verifyq/internal/field"
)

// TLSMode selects how the Client secures its SMTP connections.
type TLSMode string

// TLS modes.
const (
	// TLSAuto uses implicit TLS on port 465 and otherwise STARTTLS when the
	// server offers it, plain text when it does not. A failed STARTTLS
	// handshake fails the send; there is no fallback to plain text.
	TLSAuto TLSMode = "auto"
	// TLSNone never uses TLS.
	TLSNone TLSMode = "none"
	// TLSStartTLS requires STARTTLS; a server that does not offer it fails
	// the send.
	TLSStartTLS TLSMode = "starttls"
	// TLSImplicit speaks TLS from the first byte (SMTPS).
	TLSImplicit TLSMode = "tls"
)

// ParseTLSMode parses "auto", "none", "starttls" or "tls", case-insensitively.
// The empty string yields TLSAuto.
func ParseTLSMode(s string) (TLSMode, error) {
	switch m := TLSMode(strings.ToLower(strings.TrimSpace(s))); m {
	case "":
		return TLSAuto, nil
	case TLSAuto, TLSNone, TLSStartTLS, TLSImplicit:
		return m, nil
	}
	return "", fmt.Errorf("%q: want auto, none, starttls or tls", s)
}

// Defaults applied by NewClient to zero Config fields.
const (
	DefaultTimeout     = 30 * time.Second
	DefaultMaxConns    = 10
	DefaultIdleTimeout = 30 * time.Second
)

// MaxConnsLimit bounds Config.MaxConns.
const MaxConnsLimit = 1000

// Config configures a Client: the relay, how to reach it and how to
// introduce verifyq to it.
type Config struct {
	// Host is the SMTP server's host name or IP address.
	Host string
	// Port is the SMTP server's TCP port, e.g. 587 or 465.
	Port int
	// Username and Password enable AUTH when Username is set: PLAIN, or
	// LOGIN when the server offers LOGIN and not PLAIN. The credentials
	// are only sent over TLS or to a loopback host.
	Username, Password string
	// TLS is the TLS mode; empty means TLSAuto.
	TLS TLSMode
	// ServerName is the name the server's certificate must be valid for;
	// empty means Host.
	ServerName string
	// CAFile is a PEM file of the certificate authorities that the server's
	// certificate must chain to (LoadCAFile fills RootCAs from it); empty
	// means the system's.
	CAFile string
	// RootCAs are CAFile's certificates, loaded; nil means the system's.
	RootCAs *x509.CertPool
	// HelloName is the name sent with EHLO: a fully qualified domain name.
	// Empty means an address literal of the connection's own address, e.g.
	// "[192.0.2.7]" (RFC 5321 4.1.4); see DefaultHelloName.
	HelloName string
	// Timeout bounds every Send, including the wait for a connection,
	// dial, TLS, auth and the whole transaction. Zero means DefaultTimeout.
	Timeout time.Duration
	// MaxConns caps the connections open at once, idle or in use: relays
	// cap the concurrent connections of an account at a handful. Zero
	// means DefaultMaxConns.
	MaxConns int
	// IdleTimeout drops idle connections unused for longer than this. Zero
	// means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// TLSConfig is optional (tests set RootCAs). It is cloned; RootCAs and
	// ServerName, when set in Config, take precedence, and MinVersion
	// defaults to TLS 1.2.
	TLSConfig *tls.Config
	// Name names the relay in its spans (verifyq.relay), e.g. "primary".
	Name string
	// TracerProvider, when set, makes a span of every Send (see Send); nil
	// makes none.
	TracerProvider trace.TracerProvider
}

// Validate reports every problem with cfg at once, each a *field.Error
// named after its field (Host, Port, TLS, Password, HelloName, Timeout,
// MaxConns, IdleTimeout), so a binary can report it under its
// environment variable. It never repeats the password.
func (cfg Config) Validate() error {
	var errs []error
	if !validHost(cfg.Host) {
		errs = append(errs, field.Errorf("Host", "empty or malformed"))
	}
	if !validPort(cfg.Port) {
		errs = append(errs, field.Errorf("Port", "%d is not in 1..65535", cfg.Port))
	}
	if _, err := ParseTLSMode(string(cfg.TLS)); err != nil {
		errs = append(errs, &field.Error{Field: "TLS", Err: err})
	}
	if cfg.Username == "" && cfg.Password != "" {
		errs = append(errs, field.Errorf("Password", "set without a username"))
	}
	if err := ValidateHelloName(cfg.HelloName); err != nil {
		errs = append(errs, &field.Error{Field: "HelloName", Err: err})
	} else if isLocalName(cfg.HelloName) && !isLoopback(cfg.Host) {
		errs = append(errs, field.Errorf("HelloName", "%q names no host to a relay that is not on loopback: set a fully qualified name", cfg.HelloName))
	}
	if cfg.Timeout < 0 {
		errs = append(errs, field.Errorf("Timeout", "%s is negative", cfg.Timeout))
	}
	if cfg.MaxConns < 0 || cfg.MaxConns > MaxConnsLimit {
		errs = append(errs, field.Errorf("MaxConns", "%d is not in 1..%d", cfg.MaxConns, MaxConnsLimit))
	}
	if cfg.IdleTimeout < 0 {
		errs = append(errs, field.Errorf("IdleTimeout", "%s is negative", cfg.IdleTimeout))
	}
	if cfg.CAFile != "" && cfg.RootCAs == nil {
		errs = append(errs, field.Errorf("CAFile", "set but not loaded: fill RootCAs with LoadCAFile"))
	}
	return errors.Join(errs...)
}

// String shows the server, the user and the TLS mode, never the password.
func (cfg Config) String() string {
	user := ""
	if cfg.Username != "" {
		user = cfg.Username + ":[redacted]@"
	}
	return fmt.Sprintf("smtp %s%s tls=%s timeout=%s", user, net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)), cfg.TLS, cfg.Timeout)
}

// GoString is String: %#v never shows the password either.
func (cfg Config) GoString() string { return cfg.String() }

// validHost reports whether host is a host name or IP address: not empty,
// no space, control character or slash.
func validHost(host string) bool {
	return host != "" && !strings.ContainsFunc(host, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || r == '/'
	})
}

func validPort(port int) bool { return port >= 1 && port <= 65535 }

// Default ports of an SMTP URL without one.
const (
	portSMTP  = 25
	portSMTPS = 465
)

// URL parameters, each at most once.
var urlParams = []string{"tls", "timeout", "ca_file", "server_name"}

// ParseURL parses an SMTP server URL into the Config fields it sets: Host,
// Port, Username, Password, TLS, Timeout, CAFile and ServerName.
//
//	smtp://[user[:password]@]host[:port][?tls=auto|starttls|none][&timeout=10s][&ca_file=PATH][&server_name=NAME]
//	smtps://[user[:password]@]host[:port][?timeout=10s][&ca_file=PATH][&server_name=NAME]
//
// smtp:// takes the TLS mode of its tls parameter (TLSAuto when absent),
// smtps:// is TLSImplicit; the port defaults to 25 and 465. The user and
// password are URL-decoded (percent-encode "@", ":", "/" and "%" in them).
// A timeout absent leaves Timeout zero. Every problem is reported at once;
// no error repeats the URL or any part of it.
func ParseURL(s string) (Config, error) {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" {
		return Config{}, errors.New("not a valid URL: smtp://user:password@host:port, " +
			"with special characters of the user and password percent-encoded")
	}
	var cfg Config
	var errs []error
	defaultPort := portSMTP
	switch u.Scheme {
	case "smtp":
		cfg.TLS = TLSAuto
	case "smtps":
		cfg.TLS, defaultPort = TLSImplicit, portSMTPS
	default:
		errs = append(errs, errors.New("want the scheme smtp:// or smtps:// (implicit TLS)"))
	}
	cfg.Host = u.Hostname()
	if !validHost(cfg.Host) {
		errs = append(errs, errors.New("the host is empty or malformed"))
	}
	cfg.Port = defaultPort
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || !validPort(n) {
			errs = append(errs, errors.New("the port is not in 1..65535"))
		}
		cfg.Port = n
	}
	if u.User != nil {
		cfg.Username = u.User.Username()
		cfg.Password, _ = u.User.Password()
		if cfg.Username == "" && cfg.Password != "" {
			errs = append(errs, errors.New("a password without a user"))
		}
	}
	if (u.Path != "" && u.Path != "/") || u.Fragment != "" {
		errs = append(errs, errors.New("want no path and no fragment"))
	}
	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		errs = append(errs, errors.New("the query is malformed"))
	}
	for _, name := range slices.Sorted(maps.Keys(query)) {
		values := query[name]
		if !slices.Contains(urlParams, name) {
			errs = append(errs, fmt.Errorf("an unknown parameter: want only %s", strings.Join(urlParams, ", ")))
			continue
		}
		if len(values) > 1 {
			errs = append(errs, fmt.Errorf("%s: given twice", name))
			continue
		}
		switch v := values[0]; name {
		case "tls":
			mode, err := ParseTLSMode(v)
			switch {
			case err != nil || mode == TLSImplicit:
				errs = append(errs, errors.New("tls: want auto, starttls or none (smtps:// for implicit TLS)"))
			case cfg.TLS == TLSImplicit:
				errs = append(errs, errors.New("tls: smtps:// is always implicit TLS: use smtp:// with tls"))
			default:
				cfg.TLS = mode
			}
		case "timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				errs = append(errs, errors.New("timeout: want a positive duration such as 10s"))
			}
			cfg.Timeout = d
		case "ca_file":
			if v == "" {
				errs = append(errs, errors.New("ca_file: want the path of a PEM file"))
			}
			cfg.CAFile = v
		case "server_name":
			if !validHost(v) {
				errs = append(errs, errors.New("server_name: want a host name"))
			}
			cfg.ServerName = v
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// maxCAFile bounds a CA file, in bytes.
const maxCAFile = 1 << 20

// LoadCAFile reads a PEM file of certificate authorities (Config.CAFile).
// The error names neither the file's content nor more than its path.
func LoadCAFile(path string) (*x509.CertPool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %w", err)
	}
	if fi.Size() > maxCAFile {
		return nil, fmt.Errorf("ca_file: %s is over %d bytes", path, maxCAFile)
	}
	pem, err := os.ReadFile(path) //nolint:gosec // G304: the operator names the file (SMTP_URL's ca_file)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca_file: %s holds no PEM certificate", path)
	}
	return pool, nil
}
