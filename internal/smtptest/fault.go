package smtptest

import (
	"fmt"
	"time"

	"github.com/emersion/go-smtp"
)

// Stage is the point of an SMTP session at which a Fault applies.
type Stage int

// Stages at which a fault can be injected. The zero Stage means "no fault".
const (
	// StageNone disables fault injection.
	StageNone Stage = iota
	// StageConnect applies when a connection is accepted: a reply fault
	// sends the code instead of the 220 greeting and closes the connection;
	// a hang never sends the greeting (with WithImplicitTLS, never completes
	// the TLS handshake).
	StageConnect
	// StageMail applies to the MAIL FROM command.
	StageMail
	// StageRcpt applies to each RCPT TO command.
	StageRcpt
	// StageData applies to the reply after the message data has been
	// received (the end of DATA). A faulted message is not recorded.
	StageData
)

// String returns the stage's name.
func (s Stage) String() string {
	switch s {
	case StageNone:
		return "none"
	case StageConnect:
		return "connect"
	case StageMail:
		return "MAIL"
	case StageRcpt:
		return "RCPT"
	case StageData:
		return "DATA"
	default:
		return fmt.Sprintf("Stage(%d)", int(s))
	}
}

// NoEnhancedCode as a Fault's EnhancedCode sends the reply without an
// enhanced status code of the server's own.
var NoEnhancedCode = [3]int(smtp.NoEnhancedCode)

// Fault describes an injected failure. The zero Fault injects nothing.
//
// Examples:
//
//	srv.SetFault(smtptest.Fault{Stage: smtptest.StageRcpt, Code: 550, EnhancedCode: [3]int{5, 1, 1}})
//	srv.SetFault(smtptest.Fault{Stage: smtptest.StageData, Code: 451})
//	srv.SetFault(smtptest.Fault{Stage: smtptest.StageConnect, Hang: true})
//	srv.SetFault(smtptest.Fault{Stage: smtptest.StageMail, Code: 421, Times: 1})
type Fault struct {
	// Stage selects where the fault applies.
	Stage Stage
	// Code is the reply code to send, 400-599. Ignored when Hang is set.
	Code int
	// EnhancedCode is the RFC 3463 status, e.g. {5, 1, 1}. The zero value
	// means {Code/100, 0, 0}; NoEnhancedCode, none: the server sends
	// Message as it is, which lets a test write the code itself, as some
	// servers do ("550-5.7.1", then "550 5.7.1 Relaying denied").
	EnhancedCode [3]int
	// Message is the reply text. Empty means a generic text. Each line of
	// it ("\n") is a line of the reply.
	Message string
	// Hang makes the server accept the command (or connection) and never
	// answer it, until the fault is replaced or cleared (then the command
	// proceeds normally) or the server stops (then the connection is
	// dropped). A message hung at StageData is therefore recorded when the
	// fault is cleared, even if its client gave up meanwhile, like a real
	// server that accepted the data late.
	Hang bool
	// Times limits the fault to that many commands (or connections); after
	// that it clears itself, without releasing commands already hung. Zero
	// means until replaced or cleared.
	Times int
}

// SetFault replaces the current fault. Commands hung by the previous fault
// are released and proceed normally. SetFault panics if f.Code is not in
// 400..599 for a non-hang fault with a stage.
func (s *Server) SetFault(f Fault) {
	if f.Stage != StageNone && !f.Hang && (f.Code < 400 || f.Code > 599) {
		panic(fmt.Sprintf("smtptest: fault code %d is not in 400..599", f.Code))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
	s.releaseLocked()
}

// ClearFault removes the current fault and releases hung commands. It is
// SetFault(Fault{}).
func (s *Server) ClearFault() { s.SetFault(Fault{}) }

// releaseLocked wakes every command hung so far. s.mu must be held.
func (s *Server) releaseLocked() {
	close(s.release)
	s.release = make(chan struct{})
}

// fire reports what the current fault does at stage: hang (with the channel
// that releases it), or reply with an error, or nothing.
func (s *Server) fire(stage Stage) (hang bool, reply *smtp.SMTPError, release <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fault
	if f.Stage == StageNone || f.Stage != stage {
		return false, nil, nil
	}
	if f.Times > 0 {
		s.fault.Times--
		if s.fault.Times == 0 {
			s.fault = Fault{}
		}
	}
	if f.Hang {
		return true, nil, s.release
	}
	return false, f.smtpError(), nil
}

func (f Fault) smtpError() *smtp.SMTPError {
	// The zero EnhancedCode is smtp.EnhancedCodeNotSet, which go-smtp
	// answers as X.0.0.
	msg := f.Message
	if msg == "" {
		msg = "Injected temporary failure"
		if f.Code >= 500 {
			msg = "Injected permanent failure"
		}
	}
	return &smtp.SMTPError{Code: f.Code, EnhancedCode: smtp.EnhancedCode(f.EnhancedCode), Message: msg}
}

// line formats e as a single SMTP reply line.
func line(e *smtp.SMTPError) string {
	ec := e.EnhancedCode
	if ec == smtp.EnhancedCodeNotSet {
		ec = smtp.EnhancedCode{e.Code / 100, 0, 0}
	}
	return fmt.Sprintf("%d %d.%d.%d %s\r\n", e.Code, ec[0], ec[1], ec[2], e.Message)
}

// apply runs the fault for stage inside a session command: it hangs until
// released (returning an error if the server stopped meanwhile), or returns
// the injected reply, or nil.
func (s *Server) apply(r *run, stage Stage) error {
	hang, reply, release := s.fire(stage)
	if reply != nil {
		return reply
	}
	if hang {
		select {
		case <-release:
		case <-r.done:
		}
		select {
		case <-r.done:
			return errStopped
		default:
		}
	}
	return nil
}

// sleep waits d, or less if the run stops. It reports whether the run is
// still up.
func sleep(r *run, d time.Duration) bool {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.done:
		}
	}
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

var errStopped = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Server stopping"}
