package codes

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
)

// MinSecretLen is the least length of a secret for sealed codes, in bytes.
const MinSecretLen = 32

// MaxSecretLen bounds a secret, in bytes.
const MaxSecretLen = 1024

// ValidateSecret checks that secret is fit to seal codes: MinSecretLen to
// MaxSecretLen bytes, and not one byte repeated (all zeros, "aaaa...": a
// placeholder, not a random secret). Its errors never hold the secret.
func ValidateSecret(secret []byte) error {
	if len(secret) < MinSecretLen || len(secret) > MaxSecretLen {
		return fmt.Errorf("%d bytes, want %d to %d random bytes (e.g. openssl rand -hex 32)", len(secret), MinSecretLen, MaxSecretLen)
	}
	if bytes.Count(secret, secret[:1]) == len(secret) {
		return errors.New("one byte repeated, not a random secret (e.g. openssl rand -hex 32)")
	}
	return nil
}

// ErrSealed is returned for a sealed code that no key opens: it was sealed
// under a secret that is neither the current nor the previous one, or it
// was altered.
var ErrSealed = errors.New("the sealed code opens under no configured secret")

// Seal keeps codes sealed at rest (CODE_SECRET set): Redis holds only
// an HMAC-SHA256 of each code, bound to its purpose and address, and the
// task that mails a code carries it encrypted with AES-256-GCM, so neither a
// Redis dump nor the queue's dashboard and archive shows a code. Both keys
// are derived from one secret with HKDF-SHA256. A previous secret, during a
// rotation, still verifies and opens what was sealed under it.
//
// A Seal never exposes its secret: it has no exported field, and its
// String says nothing.
type Seal struct {
	keys []sealKey // the current one first
}

type sealKey struct {
	id   string // names the key in a sealed code: 8 hex digits
	mac  []byte
	aead cipher.AEAD
}

// NewSeal returns the Seal of secret, and of previous (nil: none) for
// codes sealed before a rotation. Each must pass ValidateSecret. Errors
// never hold a secret.
func NewSeal(secret, previous []byte) (*Seal, error) {
	cur, err := newSealKey(secret)
	if err != nil {
		return nil, fmt.Errorf("secret: %w", err)
	}
	s := &Seal{keys: []sealKey{cur}}
	if previous != nil {
		prev, err := newSealKey(previous)
		if err != nil {
			return nil, fmt.Errorf("previous secret: %w", err)
		}
		if prev.id == cur.id {
			return nil, errors.New("previous secret: the same as the secret")
		}
		s.keys = append(s.keys, prev)
	}
	return s, nil
}

func newSealKey(secret []byte) (sealKey, error) {
	if err := ValidateSecret(secret); err != nil {
		return sealKey{}, err
	}
	derive := func(info string) []byte {
		k, err := hkdf.Key(sha256.New, secret, nil, info, 32)
		if err != nil { // only for a length HKDF cannot give
			panic(err)
		}
		return k
	}
	block, err := aes.NewCipher(derive("verifyq code encryption v1"))
	if err != nil {
		return sealKey{}, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return sealKey{}, err
	}
	return sealKey{id: hex.EncodeToString(derive("verifyq code key id v1")[:4]), mac: derive("verifyq code mac v1"), aead: gcm}, nil
}

// String hides the Seal in any log or error.
func (s *Seal) String() string { return "codes.Seal{...}" }

// GoString hides the Seal in %#v.
func (s *Seal) GoString() string { return s.String() }

// binding is what a code is bound to: its purpose and address.
func binding(id ID) []byte { return []byte(id.Purpose + "\x00" + id.Email) }

func (k sealKey) sum(id ID, code string) string {
	m := hmac.New(sha256.New, k.mac)
	m.Write(binding(id))
	m.Write([]byte{0})
	m.Write([]byte(code))
	return hex.EncodeToString(m.Sum(nil))
}

// MAC returns what Redis keeps of code for id: HMAC-SHA256 under the
// current secret, in hex.
func (s *Seal) MAC(id ID, code string) string { return s.keys[0].sum(id, code) }

// MACs returns code's MAC under every configured secret, the current one
// first: what a live value may be for code to verify.
func (s *Seal) MACs(id ID, code string) []string {
	out := make([]string, len(s.keys))
	for i, k := range s.keys {
		out[i] = k.sum(id, code)
	}
	return out
}

// Matches reports, in constant time per secret, whether stored (a live
// value) is code's MAC for id under one of the secrets.
func (s *Seal) Matches(id ID, code, stored string) bool {
	ok := false
	for _, mac := range s.MACs(id, code) {
		if hmac.Equal([]byte(mac), []byte(stored)) {
			ok = true
		}
	}
	return ok
}

// Encrypt seals code for the task that mails it: "<key id>.<base64 of a
// random 12-byte nonce and the AES-GCM ciphertext>", bound to id (a sealed
// code opens only for its own purpose and address). rand is crypto/rand
// in production.
func (s *Seal) Encrypt(rnd io.Reader, id ID, code string) (string, error) {
	k := s.keys[0]
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := io.ReadFull(rnd, nonce); err != nil {
		return "", fmt.Errorf("seal code: %w", err)
	}
	out := k.aead.Seal(nonce, nonce, []byte(code), binding(id))
	return k.id + "." + base64.RawURLEncoding.EncodeToString(out), nil
}

// Decrypt opens what Encrypt sealed for id, under the secret it names;
// ErrSealed when none of the configured ones does.
func (s *Seal) Decrypt(id ID, sealed string) (string, error) {
	kid, b64, ok := strings.Cut(sealed, ".")
	if !ok {
		return "", ErrSealed
	}
	raw, err := base64.RawURLEncoding.DecodeString(b64)
	if err != nil {
		return "", ErrSealed
	}
	for _, k := range s.keys {
		if k.id != kid || len(raw) < k.aead.NonceSize() {
			continue
		}
		n := k.aead.NonceSize()
		code, err := k.aead.Open(nil, raw[:n], raw[n:], binding(id))
		if err != nil {
			return "", ErrSealed
		}
		return string(code), nil
	}
	return "", ErrSealed
}

// ParseSecret decodes a secret given as text (CODE_SECRET): hex, or base64
// (standard or URL alphabet, padded or not), of bytes that pass
// ValidateSecret. Its errors never repeat the text.
func ParseSecret(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) > 4*MaxSecretLen {
		return nil, errors.New("too long")
	}
	var b []byte
	if h, err := hex.DecodeString(s); err == nil {
		b = h
	} else {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if d, err := enc.DecodeString(s); err == nil {
				b = d
				break
			}
		}
		if b == nil {
			return nil, errors.New("neither hex nor base64")
		}
	}
	if err := ValidateSecret(b); err != nil {
		return nil, err
	}
	return b, nil
}
