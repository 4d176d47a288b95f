package codes

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/verifyq/verifyq/internal/field"
)

// ErrInvalidPurpose is returned for a purpose that is not configured
// (Config.Purposes).
var ErrInvalidPurpose = errors.New("unknown purpose")

// DefaultPurposes are the purposes besides the default one (PURPOSES).
var DefaultPurposes = []string{"register", "login", "reset_password", "change_email"}

// MaxPurposes bounds Config.Purposes.
const MaxPurposes = 32

// MaxPurposeLen bounds a purpose's name.
const MaxPurposeLen = 32

// ValidatePurpose reports whether s names a purpose: empty (the default
// purpose), or 1 to MaxPurposeLen characters of a-z, 0-9 and "_", starting
// with a letter, e.g. "reset_password". Mail templates are named after
// purposes, so package mail checks their names with it too.
func ValidatePurpose(s string) error {
	if s == "" {
		return nil
	}
	if len(s) > MaxPurposeLen {
		return fmt.Errorf("longer than %d characters", MaxPurposeLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (i == 0 || (c < '0' || c > '9') && c != '_') {
			return errors.New("want a-z, 0-9 and _, starting with a letter")
		}
	}
	return nil
}

// ID names one code: the address it is mailed to and the purpose it is for.
// Each purpose of an address has its own code, attempts, status and resend
// cooldown, so a code asked for one purpose never verifies for another.
//
// The empty Purpose is the default purpose, whose code key is KeyPrefix
// and the address, as the old gateway reads it. A named purpose's key is
// KeyPrefix, the purpose, ":" and the address (code_reset_password:a@b):
// no address written without quotes holds a ':', so no purpose's key is
// ever another address's default key.
type ID struct {
	// Purpose is what the code is for; empty is the default purpose.
	Purpose string
	// Email is the address exactly as the client sent it (validated).
	Email string
}

// ValidatePurposes checks Config.Purposes (field "Purposes"): at most
// MaxPurposes names, each as ValidatePurpose wants and not empty; a
// lifetime, when set, checked like TTL (field "TTL_<PURPOSE>", the purpose
// in upper case).
func ValidatePurposes(purposes map[string]time.Duration) error {
	var errs []error
	if len(purposes) > MaxPurposes {
		errs = append(errs, field.Errorf("Purposes", "%d purposes, more than %d", len(purposes), MaxPurposes))
	}
	names := make([]string, 0, len(purposes))
	for name := range purposes {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		ttl := purposes[name]
		if name == "" {
			errs = append(errs, field.Errorf("Purposes", "a purpose must not be empty"))
			continue
		}
		if err := ValidatePurpose(name); err != nil {
			errs = append(errs, field.Errorf("Purposes", "%q: %v", cut(name), err))
			continue
		}
		if ttl != 0 {
			if err := ValidateTTL(ttl); err != nil {
				errs = append(errs, field.Errorf("TTL_"+upper(name), "%s is shorter than %s", ttl, MinTTL))
			}
		}
	}
	return errors.Join(errs...)
}

// TTLOf is the lifetime of a new code of purpose: its own when set, else
// TTL.
func (c Config) TTLOf(purpose string) time.Duration {
	if ttl := c.Purposes[purpose]; ttl > 0 {
		return ttl
	}
	return c.TTL
}

// upper is s in upper case (ASCII), as the purpose's environment variable
// names it.
func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// cut bounds a purpose quoted in an error.
func cut(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
