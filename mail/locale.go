// Package mail owns everything about verification mails: recipient address
// validation and masking, locales, the message templates, and the SMTP
// Sender that delivers them over a pooled, deadline-bounded connection.
//
// Nothing in this package logs or returns in an error a verification code, an
// SMTP password or a full recipient address; use MaskAddress for logs.
package mail

import (
	"errors"
	"fmt"
	"strings"
)

// Locale selects the language of a verification mail.
type Locale string

// Supported locales.
const (
	// LocaleZhCN is Simplified Chinese.
	LocaleZhCN Locale = "zh-CN"
	// LocaleEN is English.
	LocaleEN Locale = "en"
	// DefaultLocale is used when no locale is given.
	DefaultLocale = LocaleZhCN
)

// ErrUnknownLocale is returned for a locale that has no templates.
var ErrUnknownLocale = errors.New("unknown locale")

// maxLocaleEcho bounds how much of a bad locale string is put in an error.
const maxLocaleEcho = 16

// ParseLocale parses a locale name. The empty string yields DefaultLocale;
// "zh-CN", "zh" and "en" are accepted case-insensitively. Anything else
// returns an error wrapping ErrUnknownLocale.
func ParseLocale(s string) (Locale, error) {
	switch strings.ToLower(s) {
	case "":
		return DefaultLocale, nil
	case "zh-cn", "zh":
		return LocaleZhCN, nil
	case "en":
		return LocaleEN, nil
	}
	if len(s) > maxLocaleEcho {
		return "", ErrUnknownLocale
	}
	return "", fmt.Errorf("%w: %q", ErrUnknownLocale, s)
}
