// Package returnpath makes verifyq's return paths, the envelope sender
// (MAIL FROM) that bounces go back to, and reads them back. With a secret
// each mail's return path is VERP: its local part carries a token,
// local+token@domain, that names the send and is signed over the address
// the mail went to, so that a bounce is matched to its send and nobody can
// make one count for another address.
//
// A token is 32 characters of lower-case base32 (an MTA may fold the case
// of a local part): a version, the hour it was made, the send's ID (the
// first 8 bytes of SHA-1 of the asynq task ID, SendID) and an HMAC-SHA256,
// truncated to 8 bytes, over those, the code's purpose and the exact
// address (mail.Exact). It is opened without Redis: a token older than
// Window, or whose MAC fits none of the addresses and purposes a bounce
// names, is refused.
package returnpath

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // G505: an identifier of the task, not a signature (the MAC is SHA-256)
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/field"
	"github.com/verifyq/verifyq/mail"
)

// Delimiter separates the return path's local part from the token: the
// recipient_delimiter of Postfix (and most MTAs).
const Delimiter = "+"

// TokenLen is the length of a token, in characters.
const TokenLen = 32

// Window is how long a token is taken after its mail was sent: longer than
// an MTA keeps a mail it cannot deliver (Postfix: 5 days) before it
// bounces it. The hour of issue is kept, not the second, so a token is
// taken for at least Window and at most an hour more.
const Window = 7 * 24 * time.Hour

// skew is how far in the future an issue time may be: the clocks of the
// workers may differ a little.
const skew = time.Hour

// MaxSecrets bounds the secrets of a Path: the one that signs and the
// previous ones that still verify during a rotation.
const MaxSecrets = 2

// Errors of Open.
var (
	// ErrMalformed: not a token of this version.
	ErrMalformed = errors.New("returnpath: not a token")
	// ErrForged: the token's MAC fits none of the addresses and purposes
	// under any secret.
	ErrForged = errors.New("returnpath: the token's MAC does not verify")
	// ErrExpired: a genuine token, older than Window (or from the future).
	ErrExpired = errors.New("returnpath: the token has expired")
)

// version is the first byte of every token.
const version = 1

// Layout of a token's bytes: version, hour (3 bytes), send ID, MAC.
const (
	hourLen  = 3
	sendLen  = 8
	macLen   = 8
	macStart = 1 + hourLen + sendLen
	tokenRaw = macStart + macLen // 20 bytes: 32 base32 characters
)

// encoding is base32 in lower case, without padding: 20 bytes are 32
// characters.
var encoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Send names one mail: the asynq task that sent it, and the code's purpose
// and address.
type Send struct {
	// Task is the asynq task ID; empty: no token.
	Task string
	// Purpose is the code's purpose ("" the default one).
	Purpose string
	// Email is the address the mail went to (valid).
	Email string
}

// SendID is the ID of task in a token, 16 hex digits: the first 8 bytes of
// its SHA-1. delivery's report script computes it again from the task the
// status names (redis.sha1hex), to tell whether a report is about the send
// the status still follows.
func SendID(task string) string {
	sum := sha1.Sum([]byte(task)) //nolint:gosec // G401: see the import
	return hex.EncodeToString(sum[:sendLen])
}

// Path is a return path: a bare address, or with secrets a VERP address
// per mail. A Path never shows its secrets: it has no exported field and
// its String is the address.
type Path struct {
	local, domain string   // domain in lower case
	keys          [][]byte // MAC keys, the signing one first; none: no tokens
}

// New returns the Path of address, a bare ASCII address, signed with
// secrets (the first signs, all verify; none: no tokens, the address as
// it is). Each secret must pass codes.ValidateSecret. With secrets the
// local part must not hold Delimiter and must leave room for the token
// within the 64 characters of a local part. Each problem is a
// *field.Error about "Address" or "Secrets"; none holds a secret.
func New(address string, secrets ...[]byte) (*Path, error) {
	if err := mail.ValidateAddress(address); err != nil {
		return nil, &field.Error{Field: "Address", Err: err}
	}
	if !mail.IsASCII(address) {
		return nil, field.Errorf("Address", "not ASCII: the return path is every mail's MAIL FROM, which must need no SMTPUTF8")
	}
	at := strings.LastIndexByte(address, '@')
	p := &Path{local: address[:at], domain: mail.Domain(address)}
	if len(secrets) > MaxSecrets {
		return nil, field.Errorf("Secrets", "%d secrets, want at most %d: the secret and the previous one", len(secrets), MaxSecrets)
	}
	if len(secrets) == 0 {
		return p, nil
	}
	if strings.Contains(p.local, Delimiter) {
		return nil, field.Errorf("Address", "the local part holds %q, which starts the token", Delimiter)
	}
	if most := 64 - len(Delimiter) - TokenLen; len(p.local) > most {
		return nil, field.Errorf("Address", "the local part is %d characters; with the token it may have at most %d", len(p.local), most)
	}
	for i, s := range secrets {
		which := "the secret"
		if i > 0 {
			which = "the previous secret"
		}
		if err := codes.ValidateSecret(s); err != nil {
			return nil, field.Errorf("Secrets", "%s: %w", which, err)
		}
		k, err := hkdf.Key(sha256.New, s, nil, "verifyq return path mac v1", 32)
		if err != nil { // only for a length HKDF cannot give
			return nil, err
		}
		for _, prev := range p.keys {
			if hmac.Equal(prev, k) {
				return nil, field.Errorf("Secrets", "%s is the same as the secret", which)
			}
		}
		p.keys = append(p.keys, k)
	}
	return p, nil
}

// String is the bare return path; it never shows a secret.
func (p *Path) String() string { return p.local + "@" + p.domain }

// GoString hides the secrets in %#v.
func (p *Path) GoString() string { return "returnpath.Path{" + p.String() + "}" }

// Signed reports whether p makes tokens.
func (p *Path) Signed() bool { return len(p.keys) > 0 }

// For returns the return path of s's mail sent at at: with secrets and a
// task, local+token@domain; else the bare address.
func (p *Path) For(s Send, at time.Time) string {
	if !p.Signed() || s.Task == "" {
		return p.String()
	}
	return p.local + Delimiter + p.token(s, at) + "@" + p.domain
}

func (p *Path) token(s Send, at time.Time) string {
	var raw [tokenRaw]byte
	raw[0] = version
	putHour(raw[1:1+hourLen], at)
	send, _ := hex.DecodeString(SendID(s.Task))
	copy(raw[1+hourLen:macStart], send)
	copy(raw[macStart:], mac(p.keys[0], raw[:macStart], s.Purpose, mail.Exact(s.Email)))
	return encoding.EncodeToString(raw[:])
}

// mac is the truncated HMAC of a token's head, bound to the purpose and
// the exact address.
func mac(key, head []byte, purpose, exact string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("verifyq return path v1\x00"))
	h.Write(head)
	h.Write([]byte(purpose))
	h.Write([]byte{0})
	h.Write([]byte(exact))
	return h.Sum(nil)[:macLen]
}

func putHour(b []byte, at time.Time) {
	var be [4]byte
	binary.BigEndian.PutUint32(be[:], uint32(max(at.Unix()/3600, 0))) //nolint:gosec // G115: hours since 1970 fit 24 bits until the year 3884
	copy(b, be[1:])
}

func hourOf(b []byte) time.Time {
	h := int64(b[0])<<16 | int64(b[1])<<8 | int64(b[2])
	return time.Unix(h*3600, 0)
}

// TokenOf reads addr, a recipient or a return path as a report shows it
// (angle brackets and spaces around it are dropped): ours is true when it
// is p's address or a VERP address of p's (the local part compared without
// case, as an MTA may fold it), and token is its token, in lower case, or
// "" for the bare address. It does not check the token.
func (p *Path) TokenOf(addr string) (token string, ours bool) {
	addr = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(addr), "<"), ">")
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || !strings.EqualFold(addr[at+1:], p.domain) {
		return "", false
	}
	local := addr[:at]
	if strings.EqualFold(local, p.local) {
		return "", true
	}
	n := len(p.local)
	if !p.Signed() || len(local) <= n+len(Delimiter) || !strings.EqualFold(local[:n], p.local) || local[n:n+len(Delimiter)] != Delimiter {
		return "", false
	}
	return strings.ToLower(local[n+len(Delimiter):]), true
}

// Match is what an opened token says.
type Match struct {
	// SendID names the send's task (SendID).
	SendID string
	// Purpose is the code's purpose.
	Purpose string
	// Exact is the address the mail went to, as mail.Exact has it.
	Exact string
	// Issued is the hour the mail was sent.
	Issued time.Time
}

// Open checks token at now against the purposes and addresses a report
// names (each a valid address; at most a few of each: every pair is
// tried under every secret) and returns the send it names. Errors:
// ErrMalformed, ErrForged (no pair fits), ErrExpired (a pair fits, but
// the token is older than Window).
func (p *Path) Open(token string, now time.Time, purposes, addresses []string) (Match, error) {
	raw, err := encoding.DecodeString(strings.ToLower(token))
	if err != nil || len(raw) != tokenRaw || raw[0] != version || !p.Signed() {
		return Match{}, ErrMalformed
	}
	head, sum := raw[:macStart], raw[macStart:]
	for _, addr := range addresses {
		if mail.ValidateAddress(addr) != nil {
			continue
		}
		exact := mail.Exact(addr)
		for _, purpose := range purposes {
			for _, k := range p.keys {
				if !hmac.Equal(sum, mac(k, head, purpose, exact)) {
					continue
				}
				m := Match{SendID: hex.EncodeToString(raw[1+hourLen : macStart]), Purpose: purpose, Exact: exact, Issued: hourOf(raw[1:])}
				if age := now.Sub(m.Issued); age < -skew || age >= Window+time.Hour {
					return m, ErrExpired
				}
				return m, nil
			}
		}
	}
	return Match{}, ErrForged
}
