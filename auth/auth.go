// Package auth decides who calls verifyq and what it may ask: callers are
// named API keys with scopes (send, verify, status), listed in a key file
// that holds only a SHA-256 hash of each key. Both edges ask one Guard,
// with the request's Authorization value and the scope its route needs,
// before the service runs; the Guard also bounds each caller's status
// reads.
//
// The key file (API_KEYS_FILE) has one caller a line:
//
//	# name   scopes              hash of the key
//	gateway  send,verify         sha256:3b5d...(64 hex digits)
//	support  status              sha256:9f86...
//
// Fields are separated by spaces or tabs; blank lines and lines starting
// with # are skipped. A name is 1 to 64 of A-Z a-z 0-9 . _ -, starting
// with a letter or a digit, and unique; scopes are a comma-separated set
// of send, verify and status; the hash is "sha256:" and the lowercase hex
// SHA-256 of the key, unique. NewKey makes a key and its line.
//
// A caller that presents a client certificate instead of a key (mTLS,
// TLS_CLIENT_CA_FILE) has the word "cert" in place of the hash:
//
//	billing  send,status         cert
//
// Such a caller is the verified client certificate whose name (CertName:
// its Subject CommonName, or its first DNS name when that is empty) is
// the line's name; it has no key.
package auth

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
)

// Scope is what a key allows.
type Scope string

// The scopes.
const (
	// Send allows asking for a code (HTTP POST /v1/codes, v1 SendCode,
	// and the old GetVarifyCode from outside LEGACY_CALLERS).
	Send Scope = "send"
	// Verify allows checking a code (POST /v1/codes/verify, v1 VerifyCode).
	Verify Scope = "verify"
	// Status allows reading a code's delivery status (GET
	// /v1/codes/status, v1 GetStatus).
	Status Scope = "status"
)

// Scopes lists every scope.
var Scopes = []Scope{Send, Verify, Status}

// Names of callers that are not keys, never a name in the key file.
const (
	// Anonymous is the caller when no keys are configured: every request
	// is admitted.
	Anonymous = "anonymous"
	// Legacy is a caller of the old message.VarifyService without a key,
	// admitted because its address is in LEGACY_CALLERS.
	Legacy = "legacy"
)

// Caller is who made a request.
type Caller struct {
	// Name is the key's name in the key file, or Anonymous or Legacy.
	Name string
	// Scopes are what the caller may do.
	Scopes []Scope
}

// Can reports whether c has scope s.
func (c Caller) Can(s Scope) bool { return slices.Contains(c.Scopes, s) }

// Errors of a refused caller. The edges answer them from the outcome
// table: unauthenticated and permission_denied.
var (
	// ErrUnauthenticated: no key, a malformed one, or a key not in the
	// file.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied: the key lacks the scope the request needs
	// (matched by every *ScopeError).
	ErrPermissionDenied = errors.New("permission denied")
)

// ScopeError says which scope a caller lacked. Its text names the scope,
// never the caller's key.
type ScopeError struct{ Scope Scope }

func (e *ScopeError) Error() string { return "the key needs the " + string(e.Scope) + " scope" }

// Is makes errors.Is(err, ErrPermissionDenied) true.
func (e *ScopeError) Is(target error) bool { return target == ErrPermissionDenied }

// Bounds of the key file and of a key a caller sends.
const (
	// MaxFileBytes bounds the key file.
	MaxFileBytes = 1 << 20
	// MaxCallers bounds the callers in the key file: each request compares
	// its key's hash with every one.
	MaxCallers = 1000
	// MaxLineBytes bounds a line of the key file.
	MaxLineBytes = 1024
	// MaxKeyBytes bounds a key a caller sends; a longer one is unknown
	// without being hashed.
	MaxKeyBytes = 256
)

// HashPrefix starts the hash field of a key file line.
const HashPrefix = "sha256:"

// CertField is the third field of a certificate caller's line, in place
// of a hash.
const CertField = "cert"

// KeyPrefix starts every key NewKey makes, so that a leaked key is easy to
// recognise (secret scanners, logs).
const KeyPrefix = "vq_"

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

type entry struct {
	caller Caller
	hash   [sha256.Size]byte
	// cert marks a certificate caller: it has no hash.
	cert bool
}

// Keys are the callers of a key file. The zero value has none.
type Keys struct {
	entries []entry
}

// Len is the number of callers.
func (k *Keys) Len() int {
	if k == nil {
		return 0
	}
	return len(k.entries)
}

// Names are the callers' names, in file order.
func (k *Keys) Names() []string {
	var out []string
	if k != nil {
		for _, e := range k.entries {
			out = append(out, e.caller.Name)
		}
	}
	return out
}

// CertCallers is the number of certificate callers.
func (k *Keys) CertCallers() int {
	n := 0
	if k != nil {
		for _, e := range k.entries {
			if e.cert {
				n++
			}
		}
	}
	return n
}

// LoadFile reads the key file at path (Parse). The errors name the file.
func LoadFile(path string) (*Keys, error) {
	f, err := os.Open(path) //nolint:gosec // G304: the operator names the file
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	return Parse(f)
}

// Parse reads a key file: at most MaxFileBytes, MaxCallers callers and
// MaxLineBytes a line. Every bad line is reported, with its number and
// what is wrong, never its hash; a file without any caller is an error.
func Parse(r io.Reader) (*Keys, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("the file is larger than %d bytes", MaxFileBytes)
	}
	var errs []error
	keys := &Keys{}
	names := map[string]int{}
	hashes := map[[sha256.Size]byte]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxFileBytes)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if len(line) > MaxLineBytes {
			errs = append(errs, fmt.Errorf("line %d: longer than %d bytes", n, MaxLineBytes))
			continue
		}
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		e, err := parseLine(line)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", n, err))
			continue
		}
		if first, dup := names[e.caller.Name]; dup {
			errs = append(errs, fmt.Errorf("line %d: the name %q is also on line %d", n, e.caller.Name, first))
			continue
		}
		if first, dup := hashes[e.hash]; dup && !e.cert {
			errs = append(errs, fmt.Errorf("line %d: the same key as line %d", n, first))
			continue
		}
		if len(keys.entries) == MaxCallers {
			errs = append(errs, fmt.Errorf("line %d: more than %d callers", n, MaxCallers))
			break
		}
		names[e.caller.Name] = n
		if !e.cert {
			hashes[e.hash] = n
		}
		keys.entries = append(keys.entries, e)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 && len(keys.entries) == 0 {
		errs = append(errs, errors.New("no caller in the file"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return keys, nil
}

// parseLine reads "name scopes sha256:hex" or "name scopes cert". Its
// errors never quote the hash field.
func parseLine(line string) (entry, error) {
	fields := strings.Fields(line)
	if len(fields) != 3 {
		return entry{}, fmt.Errorf("want 3 fields (name, scopes, %s<hex> or %s), got %d", HashPrefix, CertField, len(fields))
	}
	name, scopes, hash := fields[0], fields[1], fields[2]
	e := entry{caller: Caller{Name: name}}
	var errs []error
	if err := ValidateName(name); err != nil {
		errs = append(errs, err)
	}
	var err error
	if e.caller.Scopes, err = ParseScopes(scopes); err != nil {
		errs = append(errs, err)
	}
	hexHash, ok := strings.CutPrefix(hash, HashPrefix)
	raw, herr := hex.DecodeString(hexHash)
	if hash == CertField {
		e.cert = true
	} else if !ok || herr != nil || len(raw) != sha256.Size || hexHash != strings.ToLower(hexHash) {
		errs = append(errs, fmt.Errorf("the hash must be %s and 64 lowercase hex digits (or %s for a certificate caller)", HashPrefix, CertField))
	} else {
		copy(e.hash[:], raw)
	}
	return e, errors.Join(errs...)
}

// ValidateName checks a caller's name.
func ValidateName(name string) error {
	switch {
	case !namePattern.MatchString(name):
		return errors.New("a name is 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or a digit")
	case name == Anonymous || name == Legacy:
		return fmt.Errorf("the name %q is reserved", name)
	}
	return nil
}

// ParseScopes parses a comma-separated set of scopes, each once.
func ParseScopes(s string) ([]Scope, error) {
	var out []Scope
	for _, part := range strings.Split(s, ",") {
		sc := Scope(part)
		switch {
		case !slices.Contains(Scopes, sc):
			return nil, fmt.Errorf("unknown scope %q: want a comma-separated set of send, verify, status", cut(part))
		case slices.Contains(out, sc):
			return nil, fmt.Errorf("the scope %s is listed twice", sc)
		}
		out = append(out, sc)
	}
	return out, nil
}

// cut shortens s for an error message.
func cut(s string) string {
	if len(s) > 16 {
		return strings.ToValidUTF8(s[:16], "") + "..."
	}
	return s
}

// Hash is the hash field of key's line: HashPrefix and its SHA-256 in hex.
func Hash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return HashPrefix + hex.EncodeToString(sum[:])
}

// NewKey makes a key for a caller of the given name and scopes (as in a
// key file line): KeyPrefix and 32 random bytes in unpadded base64url. It
// returns the key, to hand to the caller once, and the line to add to the
// key file, which holds only its hash.
func NewKey(name, scopes string) (key, line string, err error) {
	if err := ValidateName(name); err != nil {
		return "", "", err
	}
	sc, err := ParseScopes(scopes)
	if err != nil {
		return "", "", err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", err
	}
	key = KeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	parts := make([]string, len(sc))
	for i, s := range sc {
		parts[i] = string(s)
	}
	return key, name + " " + strings.Join(parts, ",") + " " + Hash(key), nil
}

// Authenticate returns the caller whose key is key, or ErrUnauthenticated.
// It hashes key and compares the hash with every caller's in constant time,
// whichever matches.
func (k *Keys) Authenticate(key string) (Caller, error) {
	if k == nil || key == "" || len(key) > MaxKeyBytes {
		return Caller{}, ErrUnauthenticated
	}
	sum := sha256.Sum256([]byte(key))
	found := -1
	for i := range k.entries {
		if subtle.ConstantTimeCompare(sum[:], k.entries[i].hash[:]) == 1 && !k.entries[i].cert {
			found = i
		}
	}
	if found < 0 {
		return Caller{}, ErrUnauthenticated
	}
	return k.entries[found].caller, nil
}

// Certificate returns the certificate caller named name (CertName of a
// verified client certificate), or ErrUnauthenticated when no certificate
// caller has that name: a key caller's name is not enough.
func (k *Keys) Certificate(name string) (Caller, error) {
	if k != nil && name != "" {
		for _, e := range k.entries {
			if e.cert && e.caller.Name == name {
				return e.caller, nil
			}
		}
	}
	return Caller{}, ErrUnauthenticated
}

// CertName is the caller name of a client certificate: its Subject
// CommonName, or its first DNS name (subject alternative name) when the
// CommonName is empty; "" when it has neither.
func CertName(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	if cert.Subject.CommonName != "" {
		return cert.Subject.CommonName
	}
	if len(cert.DNSNames) > 0 {
		return cert.DNSNames[0]
	}
	return ""
}

// Authorization returns the Authorization value a Guard judges a request
// by, from all of its Authorization headers (HTTP) or authorization
// metadata values (gRPC): the one whose scheme is Bearer. A value of
// another scheme ("Basic ...", which a proxy in front may add) is no
// verifyq key and is left out, so that it neither refuses a certificate
// caller nor admits anyone. With no Bearer value it returns "" (no key);
// with several it returns "Bearer", a key that cannot be told, which no
// caller has: such a request is unauthenticated, whatever its certificate.
func Authorization(values []string) string {
	var bearer []string
	for _, v := range values {
		if isBearer(v) {
			bearer = append(bearer, v)
		}
	}
	switch len(bearer) {
	case 0:
		return ""
	case 1:
		return bearer[0]
	}
	return "Bearer"
}

// isBearer reports whether an Authorization value's scheme is Bearer (in
// any case): the request sends a key, well-formed or not.
func isBearer(authorization string) bool {
	scheme, _, _ := strings.Cut(strings.TrimSpace(authorization), " ")
	return strings.EqualFold(scheme, "Bearer")
}

// BearerKey returns the key of an Authorization value "Bearer <key>" (the
// scheme in any case, RFC 7235), or "" when it is not one.
func BearerKey(authorization string) string {
	scheme, key, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(key)
}
