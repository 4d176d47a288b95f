package smtptest

import (
	"bytes"
	"encoding/pem"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// WithMaxConnections makes the server refuse a connection while n others
// are open, as relays that cap an account's concurrent connections do: it
// answers "421 4.7.0" in place of the greeting and hangs up. A refused
// connection counts in Connections, not in PeakConnections.
func WithMaxConnections(n int) Option {
	return func(c *config) { c.maxConns = n }
}

// WithCommands makes the server record the command lines each connection
// sends (see Commands): EHLO, AUTH (with its base64 responses), MAIL, RCPT,
// DATA, RSET, QUIT and any other line, but not the message data. Only the
// clear text is recorded: nothing of a connection with WithImplicitTLS,
// and nothing after STARTTLS.
func WithCommands() Option {
	return func(c *config) { c.commands = true }
}

// WithoutPipelining makes the server leave PIPELINING (RFC 2920) out of
// its EHLO reply, as a server that wants one command at a time does. It
// works on clear text only: not with WithImplicitTLS, nor after STARTTLS.
func WithoutPipelining() Option {
	return func(c *config) { c.noPipelining = true }
}

// pipeliningLine is the line of go-smtp's EHLO reply that WithoutPipelining
// removes (never the last one: 8BITMIME and others follow it).
var pipeliningLine = []byte("250-PIPELINING\r\n")

// errTooMany is WithMaxConnections' refusal.
var errTooMany = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many connections"}

// PeakConnections returns the most connections that were open at once
// since the server was created.
func (s *Server) PeakConnections() int { return int(s.peak.Load()) }

func (s *Server) notePeak(n int) {
	for {
		p := s.peak.Load()
		if int64(n) <= p || s.peak.CompareAndSwap(p, int64(n)) {
			return
		}
	}
}

// Commands returns, with WithCommands, the command lines received so far:
// one slice per connection, in the order the connections were accepted
// (refused ones and those of WithImplicitTLS left out), each line without
// its CRLF.
func (s *Server) Commands() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]string, len(s.cmds))
	for i, c := range s.cmds {
		out[i] = slices.Clone(c)
	}
	return out
}

// WaitCommand waits until a connection has sent the command line line
// (exactly, without CRLF) and returns Commands. It fails the test with
// t.Fatalf if that does not happen within timeout. It needs WithCommands.
func (s *Server) WaitCommand(tb testing.TB, line string, timeout time.Duration) [][]string {
	tb.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		for _, c := range s.cmds {
			if slices.Contains(c, line) {
				s.mu.Unlock()
				return s.Commands()
			}
		}
		ch := s.cmdCh
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			tb.Fatalf("smtptest: no connection sent %q within %s", line, timeout)
			return nil
		}
	}
}

// CertificatePEM returns the server's self-signed certificate in PEM, as a
// CA file holds it, or nil when neither WithTLS nor WithImplicitTLS was
// given.
func (s *Server) CertificatePEM() []byte {
	if s.tlsConf == nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.tlsConf.Certificates[0].Certificate[0]})
}

// maxCommandLine bounds a recorded line, in bytes; the rest is dropped.
const maxCommandLine = 1024

// transcript records one connection's command lines (WithCommands).
type transcript struct {
	s *Server
	i int // index in s.cmds

	mu     sync.Mutex
	buf    []byte // the line being read
	inData bool   // between the 354 reply and the final "."
	done   bool   // after STARTTLS: the rest is TLS
}

func (s *Server) newTranscript() *transcript {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cmds = append(s.cmds, nil)
	return &transcript{s: s, i: len(s.cmds) - 1}
}

// wrote sees what the server writes: a 354 reply starts the message data.
func (t *transcript) wrote(p []byte) {
	if bytes.HasPrefix(p, []byte("354")) {
		t.mu.Lock()
		t.inData = true
		t.mu.Unlock()
	}
}

// read records the complete lines in p, which the server read.
func (t *transcript) read(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(p) > 0 && !t.done {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.buf = appendBounded(t.buf, p)
			return
		}
		t.buf = appendBounded(t.buf, p[:i])
		p = p[i+1:]
		l := strings.TrimSuffix(string(t.buf), "\r")
		t.buf = t.buf[:0]
		if t.inData {
			t.inData = l != "."
			continue
		}
		t.done = strings.EqualFold(l, "STARTTLS")
		t.s.recordCommand(t.i, l)
	}
}

func appendBounded(buf, p []byte) []byte {
	if room := maxCommandLine - len(buf); len(p) > room {
		p = p[:max(room, 0)]
	}
	return append(buf, p...)
}

func (s *Server) recordCommand(i int, l string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cmds[i] = append(s.cmds[i], l)
	close(s.cmdCh)
	s.cmdCh = make(chan struct{})
}
