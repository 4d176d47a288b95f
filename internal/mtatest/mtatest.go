// Package mtatest starts a real Postfix (Debian's package, with Cyrus SASL)
// for a test, on free loopback ports, with its own configuration, queue and
// Maildirs under a temporary directory, and stops it when the test ends.
// Options choose the server behaviours that a test reproduces: AUTH,
// sender ownership, quota refusals, greylisting, a connection cap, a size
// limit, no SMTPUTF8. SpamScore runs SpamAssassin on a message.
//
// It needs root and the packages that scripts/install-mta.sh installs; the
// tests that use it carry the build tag mta (make test-mta).
package mtatest

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Postfix is one running instance.
type Postfix struct {
	opts       Options
	files      layout
	certs      certFiles
	submission int // the port with STARTTLS (like 587)
	smtps      int // the port with implicit TLS (like 465)

	mu        sync.Mutex // serializes SetGreylisted
	masterPID int
}

// SubmissionAddr is the host:port of the listener that offers STARTTLS,
// like port 587.
func (p *Postfix) SubmissionAddr() string { return hostPort(p.submission) }

// SMTPSAddr is the host:port of the listener with implicit TLS, like port
// 465.
func (p *Postfix) SMTPSAddr() string { return hostPort(p.smtps) }

// SubmissionPort is the port of SubmissionAddr.
func (p *Postfix) SubmissionPort() int { return p.submission }

// SMTPSPort is the port of SMTPSAddr.
func (p *Postfix) SMTPSPort() int { return p.smtps }

// Host is the address both listeners are on.
func (p *Postfix) Host() string { return "127.0.0.1" }

// ServerName is the name in the server certificate (127.0.0.1 is in it too)
// and in the greeting.
func (p *Postfix) ServerName() string { return "localhost" }

// Domain is the virtual domain of the mailboxes.
func (p *Postfix) Domain() string { return p.opts.Domain }

// Address is the address of mailbox (a local part) in Domain.
func (p *Postfix) Address(mailbox string) string { return mailbox + "@" + p.opts.Domain }

// CAFile is the path of the PEM certificate of the CA that signed the
// server certificate.
func (p *Postfix) CAFile() string { return p.certs.CA }

// CertPool is a pool holding that CA.
func (p *Postfix) CertPool() *x509.CertPool { return p.certs.Pool }

// TLSConfig is a client configuration that trusts the server certificate.
func (p *Postfix) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: p.certs.Pool, ServerName: p.ServerName(), MinVersion: tls.VersionTLS12}
}

// Dir is the instance's directory (configuration, queue, Maildirs, log).
func (p *Postfix) Dir() string { return p.files.dir }

// SetGreylisted replaces the recipients answered with 450 4.2.0 at RCPT.
// Postfix's smtpd notices the rebuilt map before its next connection, so a
// test can greylist a recipient and later let it through.
func (p *Postfix) SetGreylisted(t testing.TB, recipients ...string) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	next := Options{Domain: p.opts.Domain, Mailboxes: p.opts.Mailboxes, Greylisted: recipients}
	if err := next.validate(); err != nil {
		t.Fatal(err)
	}
	if err := writeMap(p.files, mapGreylist, mapEntries(next)[mapGreylist]); err != nil {
		t.Fatal(err)
	}
}

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// mailboxName is the local part of mailbox, which may be an address.
func mailboxName(mailbox string) string {
	if i := strings.LastIndexByte(mailbox, '@'); i >= 0 {
		return mailbox[:i]
	}
	return mailbox
}

func (p *Postfix) String() string {
	return fmt.Sprintf("postfix %s (submission %d, smtps %d)", p.files.conf, p.submission, p.smtps)
}
