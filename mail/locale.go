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

	"golang.org/x/text/language"
)

// Locale selects the language of a verification mail. Its value is the
// name of one of the supported locales (Locales), as a task carries it.
type Locale string

// Supported locales.
const (
	// LocaleZhCN is Simplified Chinese, as written in mainland China.
	LocaleZhCN Locale = "zh-CN"
	// LocaleZhTW is Traditional Chinese, as written in Taiwan.
	LocaleZhTW Locale = "zh-TW"
	// LocaleEN is English.
	LocaleEN Locale = "en"
	// LocaleJA is Japanese.
	LocaleJA Locale = "ja"
	// LocaleKO is Korean.
	LocaleKO Locale = "ko"
	// LocaleES is Spanish.
	LocaleES Locale = "es"
	// LocaleFR is French.
	LocaleFR Locale = "fr"
	// LocaleDE is German.
	LocaleDE Locale = "de"
	// LocalePtBR is Portuguese, as written in Brazil.
	LocalePtBR Locale = "pt-BR"
	// LocaleRU is Russian.
	LocaleRU Locale = "ru"
	// DefaultLocale is the locale of a Message that names none, of the
	// old gateway's calls, and DEFAULT_LOCALE's default.
	DefaultLocale = LocaleZhCN
)

// locales is the one list of supported locales: the embedded templates
// have a set for each, the matcher picks among them, the phrases and the
// tests cover each, and docs/API.md's table lists them (a test compares).
var locales = []Locale{
	LocaleZhCN, LocaleZhTW, LocaleEN, LocaleJA, LocaleKO,
	LocaleES, LocaleFR, LocaleDE, LocalePtBR, LocaleRU,
}

// Locales returns the supported locales, DefaultLocale first.
func Locales() []Locale { return append([]Locale(nil), locales...) }

// ErrUnknownLocale is returned for a locale that has no templates, a tag
// that is not a BCP 47 language tag.
var ErrUnknownLocale = errors.New("unknown locale")

// Bounds on what MatchLocale and MatchAcceptLanguage read.
const (
	// MaxLocaleLen bounds a language tag, in bytes: RFC 5646 asks for 35
	// at least; this leaves room for an extension such as "-u-ca-gregory".
	MaxLocaleLen = 64
	// MaxAcceptLanguageLen bounds an Accept-Language header, in bytes:
	// a browser's list of a dozen languages with q-values fits five times.
	MaxAcceptLanguageLen = 1024
)

// maxLocaleEcho bounds how much of a bad locale string is put in an error.
const maxLocaleEcho = 16

// ParseLocale parses the name of a supported locale, as a task carries
// it. The empty string yields DefaultLocale; the names of Locales are
// accepted case-insensitively, and "zh" as zh-CN. Anything else returns an
// error wrapping ErrUnknownLocale: a language tag from a caller goes
// through MatchLocale.
func ParseLocale(s string) (Locale, error) {
	if s == "" {
		return DefaultLocale, nil
	}
	if strings.EqualFold(s, "zh") {
		return LocaleZhCN, nil
	}
	for _, l := range locales {
		if strings.EqualFold(s, string(l)) {
			return l, nil
		}
	}
	return "", unknown(s, "")
}

// unknown is the error for a locale s that is not supported, or not a tag.
func unknown(s, why string) error {
	if why != "" {
		why = ": " + why
	}
	if len(s) > maxLocaleEcho || !printable(s) {
		return fmt.Errorf("%w%s", ErrUnknownLocale, why)
	}
	return fmt.Errorf("%w: %q%s", ErrUnknownLocale, s, why)
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x21 || r > 0x7e {
			return false
		}
	}
	return true
}

// localeTags are the language tags of locales, in the same order, and
// matcher picks among them.
var (
	localeTags = func() []language.Tag {
		tags := make([]language.Tag, len(locales))
		for i, l := range locales {
			tags[i] = language.MustParse(string(l))
		}
		return tags
	}()
	matcher = language.NewMatcher(localeTags)
)

// match returns the supported locale that the matcher finds for tag, or
// false when it finds none (language.No).
func match(tag language.Tag) (Locale, bool) {
	_, i, conf := matcher.Match(tag)
	if conf == language.No {
		return "", false
	}
	return locales[i], true
}

// MatchLocale returns the supported locale for a BCP 47 language tag (such
// as "ja", "zh-HK" or "en-GB"), as golang.org/x/text/language's Matcher
// finds it: zh-HK, zh-MO and zh-Hant read as zh-TW; zh, zh-SG and zh-Hans as
// zh-CN; en-GB as en; pt and pt-PT as pt-BR; es-MX as es. The empty string
// and a valid tag the matcher finds no locale for (such as "nl" or "und")
// yield def. A tag longer than MaxLocaleLen or not a valid BCP 47 tag
// returns an error wrapping ErrUnknownLocale.
func MatchLocale(s string, def Locale) (Locale, error) {
	if s == "" {
		return def, nil
	}
	for _, l := range locales { // a supported name, as most callers send: the matcher's answer, without it
		if s == string(l) {
			return l, nil
		}
	}
	if len(s) > MaxLocaleLen {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrUnknownLocale, MaxLocaleLen)
	}
	tag, err := language.Parse(s)
	if err != nil {
		return "", unknown(s, "not a valid BCP 47 language tag")
	}
	if l, ok := match(tag); ok {
		return l, nil
	}
	return def, nil
}

// MatchAcceptLanguage returns the supported locale for an HTTP
// Accept-Language header (RFC 9110): the locale the matcher finds for the
// first of its tags, in the order of their q-values, that it finds one
// for; q=0 excludes a tag. An empty header, or one none of whose tags
// finds a locale, yields def, and so does a header longer than
// MaxAcceptLanguageLen or malformed: the header is the end user's
// browser's, passed on by the gateway, not a choice the caller made, and
// a send is not refused over it (a malformed locale, which the caller
// chose, is).
func MatchAcceptLanguage(header string, def Locale) Locale {
	if len(header) > MaxAcceptLanguageLen {
		return def
	}
	tags, _, err := language.ParseAcceptLanguage(header)
	if err != nil {
		return def
	}
	for _, tag := range tags {
		if l, ok := match(tag); ok {
			return l
		}
	}
	return def
}
