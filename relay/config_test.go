package relay_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/field"
	"github.com/verifyq/verifyq/relay"
)

func TestNewClientValidates(t *testing.T) {
	t.Parallel()
	good := relay.Config{Host: "smtp.example.com", Port: 587}
	tests := []struct {
		name   string
		mutate func(*relay.Config)
		want   string // the whole error; empty when cfg is good
	}{
		{"good", func(*relay.Config) {}, ""},
		{"IPv6 host", func(c *relay.Config) { c.Host = "::1" }, ""},
		{"zero durations and cap take defaults", func(c *relay.Config) { c.Timeout, c.IdleTimeout, c.MaxConns = 0, 0, 0 }, ""},
		{"MaxConns at its limit", func(c *relay.Config) { c.MaxConns = relay.MaxConnsLimit }, ""},
		{"HelloName a domain", func(c *relay.Config) { c.HelloName = "mx1.verifyq.example" }, ""},
		{"HelloName an address literal", func(c *relay.Config) { c.HelloName = "[IPv6:2001:db8::7]" }, ""},
		{"HelloName localhost to a loopback relay", func(c *relay.Config) { c.Host, c.HelloName = "127.0.0.1", "localhost" }, ""},
		{"HelloName localhost to localhost", func(c *relay.Config) { c.Host, c.HelloName = "localhost", "localhost" }, ""},
		{"every TLS mode", func(c *relay.Config) { c.TLS = "STARTTLS" }, ""},
		{"empty host", func(c *relay.Config) { c.Host = "" }, "Host: empty or malformed"},
		{"host with space", func(c *relay.Config) { c.Host = "smtp example" }, "Host: empty or malformed"},
		{"host with slash", func(c *relay.Config) { c.Host = "smtp/example" }, "Host: empty or malformed"},
		{"port 0", func(c *relay.Config) { c.Port = 0 }, "Port: 0 is not in 1..65535"},
		{"port too big", func(c *relay.Config) { c.Port = 70000 }, "Port: 70000 is not in 1..65535"},
		{"bad TLS mode", func(c *relay.Config) { c.TLS = "ssl3" }, `TLS: "ssl3": want auto, none, starttls or tls`},
		{"password without user", func(c *relay.Config) { c.Password = "hunter2" }, "Password: set without a username"},
		{"HelloName localhost to a remote relay", func(c *relay.Config) { c.HelloName = "localhost" },
			`HelloName: "localhost" names no host to a relay that is not on loopback: set a fully qualified name`},
		{"HelloName under localhost to a remote relay", func(c *relay.Config) { c.HelloName = "box.localhost" },
			`HelloName: "box.localhost" names no host to a relay that is not on loopback: set a fully qualified name`},
		{"HelloName not a name", func(c *relay.Config) { c.HelloName = "mx_1.example.com" },
			"HelloName: not a domain name of letters, digits, hyphens and dots"},
		{"HelloName injection", func(c *relay.Config) { c.HelloName = "mx.example.com\r\nMAIL FROM:<x@y.z>" },
			"HelloName: not a domain name of letters, digits, hyphens and dots"},
		{"negative timeout", func(c *relay.Config) { c.Timeout = -1 }, "Timeout: -1ns is negative"},
		{"negative MaxConns", func(c *relay.Config) { c.MaxConns = -1 }, "MaxConns: -1 is not in 1..1000"},
		{"MaxConns over its limit", func(c *relay.Config) { c.MaxConns = relay.MaxConnsLimit + 1 }, "MaxConns: 1001 is not in 1..1000"},
		{"negative idle timeout", func(c *relay.Config) { c.IdleTimeout = -1 }, "IdleTimeout: -1ns is negative"},
		{"every problem at once", func(c *relay.Config) {
			*c = relay.Config{Password: "hunter2", Timeout: -1, HelloName: "-x", MaxConns: -1, IdleTimeout: -1, TLS: "x"}
		},
			"Host: empty or malformed\nPort: 0 is not in 1..65535\n" + `TLS: "x": want auto, none, starttls or tls` + "\n" +
				"Password: set without a username\nHelloName: not a domain name of letters, digits, hyphens and dots\n" +
				"Timeout: -1ns is negative\nMaxConns: -1 is not in 1..1000\nIdleTimeout: -1ns is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := good
			tt.mutate(&cfg)
			c, err := relay.NewClient(cfg, nil)
			if tt.want == "" {
				require.NoError(t, cfg.Validate())
				require.NoError(t, err)
				require.NoError(t, c.Close())
				return
			}
			require.Error(t, err)
			assert.Equal(t, tt.want, err.Error())
			assert.Equal(t, tt.want, cfg.Validate().Error(), "NewClient reports what Validate does")
			assert.NotContains(t, err.Error(), "hunter2", "the password is never repeated")
			var fe *field.Error
			assert.ErrorAs(t, err, &fe)
		})
	}
}

func TestValidateHelloName(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{
		"", "mx1.example.com", "MX1.Example.COM", "localhost", "a", "x-1.example",
		"[192.0.2.7]", "[IPv6:2001:db8::7]", strings.Repeat("a.", 126) + "a",
	} {
		assert.NoError(t, relay.ValidateHelloName(ok), ok)
	}
	for _, bad := range []string{
		"-mx.example.com", "mx-.example.com", "mx..example.com", ".example.com", "example.com.",
		"mx_1.example.com", "mx 1.example.com", "mx.example.com\r\n", "bücher.de", strings.Repeat("a", 64) + ".com",
		strings.Repeat("a.", 127), "[192.0.2.7", "[300.0.2.7]", "[2001:db8::7", "[mx.example.com]", "[]",
	} {
		assert.Error(t, relay.ValidateHelloName(bad), bad)
	}
}

// DefaultHelloName depends on the host: either none, or a name that
// Validate takes and that says something about the host.
func TestDefaultHelloName(t *testing.T) {
	t.Parallel()
	name := relay.DefaultHelloName()
	if name == "" {
		return
	}
	require.NoError(t, relay.ValidateHelloName(name))
	require.Contains(t, name, ".")
	require.NoError(t, relay.Config{Host: "smtp.example.com", Port: 587, HelloName: name}.Validate())
}

func TestParseTLSMode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want relay.TLSMode
		ok   bool
	}{
		{"", relay.TLSAuto, true},
		{"auto", relay.TLSAuto, true},
		{" NONE ", relay.TLSNone, true},
		{"starttls", relay.TLSStartTLS, true},
		{"tls", relay.TLSImplicit, true},
		{"ssl", "", false},
	}
	for _, tt := range tests {
		got, err := relay.ParseTLSMode(tt.in)
		if !tt.ok {
			require.Error(t, err, tt.in)
			continue
		}
		require.NoError(t, err, tt.in)
		require.Equal(t, tt.want, got, tt.in)
	}
}

func TestParseURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want relay.Config
	}{
		{"smtp://localhost:1025", relay.Config{Host: "localhost", Port: 1025, TLS: relay.TLSAuto}},
		{"smtp://mail.example.com", relay.Config{Host: "mail.example.com", Port: 25, TLS: relay.TLSAuto}},
		{"smtps://mail.example.com", relay.Config{Host: "mail.example.com", Port: 465, TLS: relay.TLSImplicit}},
		{"smtp://u%40x.com:p%3Aa%2Fss%25@mail.example.com:587?tls=starttls&timeout=20s",
			relay.Config{Host: "mail.example.com", Port: 587, Username: "u@x.com", Password: "p:a/ss%", TLS: relay.TLSStartTLS, Timeout: 20 * time.Second}},
		{"smtp://127.0.0.1:2525/?tls=none", relay.Config{Host: "127.0.0.1", Port: 2525, TLS: relay.TLSNone}},
		{"smtp://[::1]:25?tls=AUTO", relay.Config{Host: "::1", Port: 25, TLS: relay.TLSAuto}},
		{"smtps://user@mail.example.com:2465?timeout=1m", relay.Config{Host: "mail.example.com", Port: 2465, Username: "user", TLS: relay.TLSImplicit, Timeout: time.Minute}},
		{"smtps://10.0.0.5?ca_file=/etc/verifyq/relay-ca.pem&server_name=mail.example.com",
			relay.Config{Host: "10.0.0.5", Port: 465, TLS: relay.TLSImplicit, CAFile: "/etc/verifyq/relay-ca.pem", ServerName: "mail.example.com"}},
		{"smtp://mail.internal:587?tls=starttls&ca_file=ca%20dir%2Fca.pem",
			relay.Config{Host: "mail.internal", Port: 587, TLS: relay.TLSStartTLS, CAFile: "ca dir/ca.pem"}},
	}
	for _, tt := range tests {
		got, err := relay.ParseURL(tt.in)
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.want, got, tt.in)
		if got.CAFile != "" {
			require.ErrorContains(t, got.Validate(), "CAFile: set but not loaded", "a CA file is loaded before use")
			got.RootCAs = x509.NewCertPool()
		}
		assert.NoError(t, got.Validate(), tt.in)
	}

	for in, want := range map[string]string{
		"http://hunter2@mail.example.com":              "want the scheme smtp:// or smtps://",
		"smtp://:hunter2@mail.example.com":             "a password without a user",
		"smtp://u:hunter2@mail.example.com:99999":      "the port is not in 1..65535",
		"smtp://u:hunter2@:25":                         "the host is empty or malformed",
		"smtp://u:hunter2@mail.example.com/x":          "want no path and no fragment",
		"smtp://u:hunter2@mail.example.com#x":          "want no path and no fragment",
		"smtp://u:hunter2@mail.example.com?tls=tls":    "tls: want auto, starttls or none (smtps:// for implicit TLS)",
		"smtp://u:hunter2@mail.example.com?tls=ssl":    "tls: want auto, starttls or none",
		"smtps://u:hunter2@mail.example.com?tls=none":  "tls: smtps:// is always implicit TLS",
		"smtp://u:hunter2@mail.example.com?timeout=0s": "timeout: want a positive duration",
		"smtp://u:hunter2@mail.example.com?timeout=x":  "timeout: want a positive duration",
		"smtp://mail.example.com?hunter2=1":            "an unknown parameter: want only tls, timeout, ca_file, server_name",
		"smtp://mail.example.com?tls=none&tls=auto":    "tls: given twice",
		"smtp://mail.example.com?ca_file=a&ca_file=b":  "ca_file: given twice",
		"smtp://mail.example.com?ca_file=":             "ca_file: want the path of a PEM file",
		"smtp://mail.example.com?server_name=":         "server_name: want a host name",
		"smtp://mail.example.com?server_name=a%20b":    "server_name: want a host name",
		"smtp://u:hunter2@mail.example.com?a=%zz":      "the query is malformed",
		"smtp://u:hunt%zzer2@mail.example.com":         "not a valid URL",
		"smtp:hunter2":                                 "not a valid URL",
	} {
		_, err := relay.ParseURL(in)
		require.Error(t, err, in)
		assert.Contains(t, err.Error(), want, in)
		assert.NotContains(t, err.Error(), "hunter2", "%s: the URL is never repeated", in)
		assert.NotContains(t, err.Error(), "mail.example.com", "%s: the URL is never repeated", in)
	}
	_, err := relay.ParseURL("ftp://:hunter2@:0/x?tls=tls&timeout=-1s&ca_file=")
	require.Error(t, err)
	assert.Len(t, strings.Split(err.Error(), "\n"), 8, "every problem at once: %v", err)
}

func TestConfigNeverShowsThePassword(t *testing.T) {
	t.Parallel()
	cfg := relay.Config{Host: "mail.example.com", Port: 587, Username: "u", Password: "hunter2", TLS: relay.TLSStartTLS, Timeout: time.Second}
	for _, s := range []string{cfg.String(), fmt.Sprint(cfg), fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg)} {
		assert.NotContains(t, s, "hunter2")
	}
	assert.Equal(t, "smtp u:[redacted]@mail.example.com:587 tls=starttls timeout=1s", cfg.String())
	cfg.Username, cfg.Password = "", ""
	assert.Equal(t, "smtp mail.example.com:587 tls=starttls timeout=1s", cfg.String())
}

func TestErrorText(t *testing.T) {
	t.Parallel()
	e := &relay.Error{Stage: relay.StageRcpt, Code: 550, Enhanced: "5.1.1", Text: "<alice@example.com>: user unknown"}
	assert.Equal(t, "smtp rcpt: server replied 550 5.1.1", e.Error())
	assert.True(t, e.Replied())
	assert.Nil(t, e.Unwrap())
	e = &relay.Error{Stage: relay.StageMail, Code: 451, Text: "try later"}
	assert.Equal(t, "smtp mail: server replied 451", e.Error())
	e = &relay.Error{Stage: relay.StageConnect, Err: relay.ErrClosed}
	assert.Equal(t, "smtp connect: relay: client closed", e.Error())
	assert.False(t, e.Replied())
	assert.ErrorIs(t, e, relay.ErrClosed)

	wrapped := fmt.Errorf("send: %w", &relay.Error{Stage: relay.StageData, Code: 554})
	assert.Equal(t, relay.StageData, relay.StageOf(wrapped))
	assert.Equal(t, 554, relay.ReplyError(wrapped).Code)
	assert.Nil(t, relay.ReplyError(e), "no reply")
	assert.Nil(t, relay.ReplyError(errors.New("x")))
	assert.Nil(t, relay.ReplyError(nil))
	assert.Equal(t, relay.Stage(""), relay.StageOf(errors.New("x")))
	assert.Equal(t, relay.Stage(""), relay.StageOf(nil))
}

func TestIsTimeout(t *testing.T) {
	t.Parallel()
	for _, err := range []error{
		context.DeadlineExceeded,
		os.ErrDeadlineExceeded,
		&relay.Error{Stage: relay.StageData, Err: fmt.Errorf("read: %w", os.ErrDeadlineExceeded)},
		&net.OpError{Op: "dial", Err: timeoutError{}},
	} {
		assert.True(t, relay.IsTimeout(err), "%v", err)
	}
	for _, err := range []error{nil, context.Canceled, io.EOF, &relay.Error{Stage: relay.StageRcpt, Code: 451}} {
		assert.False(t, relay.IsTimeout(err), "%v", err)
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
