package events

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// Bounds of the configuration.
const (
	// MaxEndpoints bounds WEBHOOK_URLS: each event is queued once per
	// endpoint.
	MaxEndpoints = 10
	// MaxURLLength bounds each endpoint's URL.
	MaxURLLength = 2048
	// MinSecretBytes and MaxSecretBytes bound a secret's key, as Standard
	// Webhooks advises (24 to 64 bytes).
	MinSecretBytes = 24
	MaxSecretBytes = 64
	// SecretPrefix starts a secret's text: "whsec_" and the key in
	// base64.
	SecretPrefix = "whsec_"
)

// ParseURLs parses WEBHOOK_URLS: a comma-separated list of the endpoints'
// URLs, each absolute, https, or http to a loopback host only (a receiver
// on the same machine), without credentials (the signature authenticates
// verifyq; a password in the URL would reach logs) or fragment, each once.
// Empty is no endpoint: events are off.
func ParseURLs(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > MaxEndpoints {
		return nil, fmt.Errorf("%d endpoints, at most %d", len(parts), MaxEndpoints)
	}
	var out []string
	var errs []error
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if err := checkURL(p); err != nil {
			errs = append(errs, fmt.Errorf("endpoint %d: %w", i+1, err))
			continue
		}
		for _, seen := range out {
			if seen == p {
				errs = append(errs, fmt.Errorf("endpoint %d: listed twice", i+1))
			}
		}
		out = append(out, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func checkURL(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > MaxURLLength {
		return fmt.Errorf("longer than %d bytes", MaxURLLength)
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return errors.New("not an absolute URL (https://host/path)")
	}
	if u.User != nil {
		return errors.New("credentials in the URL are not allowed: the signature (WEBHOOK_SECRET) authenticates verifyq")
	}
	if u.Fragment != "" {
		return errors.New("a fragment is not allowed")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !loopback(u.Hostname()) {
			return errors.New("http is allowed only to a loopback host; use https")
		}
	default:
		return fmt.Errorf("scheme %q: want https (or http to a loopback host)", u.Scheme)
	}
	return nil
}

func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// ParseSecrets parses WEBHOOK_SECRET: "whsec_<base64>", and during a
// rotation the previous one after a comma ("whsec_new,whsec_old"): every
// delivery is signed with each, so a receiver that knows either verifies.
// Errors never hold a secret.
func ParseSecrets(s string) ([][]byte, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > 2 {
		return nil, errors.New("want the secret, and at most one previous secret after a comma")
	}
	var keys [][]byte
	var errs []error
	for i, p := range parts {
		which := "the secret"
		if i == 1 {
			which = "the previous secret"
		}
		k, err := parseSecret(strings.TrimSpace(p))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", which, err))
		}
		keys = append(keys, k)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return keys, nil
}

func parseSecret(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return nil, fmt.Errorf("want %s and the key in base64", SecretPrefix)
	}
	k, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, errors.New("the key after " + SecretPrefix + " is not standard base64")
	}
	if len(k) < MinSecretBytes || len(k) > MaxSecretBytes {
		return nil, fmt.Errorf("the key has %d bytes, want %d to %d", len(k), MinSecretBytes, MaxSecretBytes)
	}
	return k, nil
}

// endpointName is how logs name an endpoint: its host, never its path
// or query (which may carry a receiver's token).
func endpointName(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid)"
	}
	if _, _, err := net.SplitHostPort(u.Host); err == nil {
		return u.Host
	}
	return u.Hostname()
}
