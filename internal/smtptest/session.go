package smtptest

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// session is one SMTP session (from EHLO to QUIT or the next STARTTLS).
type session struct {
	s      *Server
	r      *run
	conn   *smtp.Conn
	from   string
	to     []string
	authed bool
}

// authSession adds AUTH (PLAIN and LOGIN, or WithAuthMechanisms) to
// session; go-smtp offers AUTH only when the session implements
// smtp.AuthSession.
type authSession struct{ *session }

var (
	_ smtp.Session     = (*session)(nil)
	_ smtp.AuthSession = authSession{}
)

func (s *Server) newSession(r *run, c *smtp.Conn) smtp.Session {
	sess := &session{s: s, r: r, conn: c}
	if s.cfg.auth && (s.cfg.mechs == nil || len(s.cfg.mechs) > 0) {
		return authSession{sess}
	}
	return sess
}

// AuthMechanisms implements smtp.AuthSession.
func (a authSession) AuthMechanisms() []string {
	if a.s.cfg.mechs == nil {
		return []string{sasl.Plain, sasl.Login}
	}
	return a.s.cfg.mechs
}

// Auth implements smtp.AuthSession.
func (a authSession) Auth(mech string) (sasl.Server, error) {
	if !slices.ContainsFunc(a.AuthMechanisms(), func(m string) bool { return strings.EqualFold(m, mech) }) {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			if identity != "" && identity != user {
				return errors.New("identity mismatch")
			}
			return a.login(user, pass)
		}), nil
	case sasl.Login:
		return &loginServer{check: a.login}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// login checks the credentials of an AUTH exchange and marks the session
// authenticated when they are the server's.
func (a authSession) login(user, pass string) error {
	okUser := subtle.ConstantTimeCompare([]byte(user), []byte(a.s.cfg.user)) == 1
	okPass := subtle.ConstantTimeCompare([]byte(pass), []byte(a.s.cfg.pass)) == 1
	if !okUser || !okPass {
		return smtp.ErrAuthFailed
	}
	a.authed = true
	return nil
}

// loginServer is the server side of AUTH LOGIN (draft-murchison-sasl-login),
// which go-sasl does not provide: the user name, as the initial response
// or asked for with "Username:", then the password, asked for with
// "Password:", as Postfix's Cyrus SASL and Microsoft 365 ask.
type loginServer struct {
	check func(user, pass string) error
	user  *string // nil until the user name came
	done  bool
}

// Next implements sasl.Server.
func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch {
	case l.done:
		return nil, false, sasl.ErrUnexpectedClientResponse
	case l.user == nil && response == nil: // no initial response
		return []byte("Username:"), false, nil
	case l.user == nil:
		user := string(response)
		l.user = &user
		return []byte("Password:"), false, nil
	}
	l.done = true
	return nil, true, l.check(*l.user, string(response))
}

// Reset implements smtp.Session.
func (ss *session) Reset() {
	ss.from = ""
	ss.to = nil
}

// Logout implements smtp.Session.
func (ss *session) Logout() error { return nil }

// Mail implements smtp.Session.
func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.s.cfg.auth && !ss.authed {
		return smtp.ErrAuthRequired
	}
	if err := ss.s.apply(ss.r, StageMail); err != nil {
		return err
	}
	ss.from = from
	return nil
}

// Rcpt implements smtp.Session.
func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := ss.s.apply(ss.r, StageRcpt); err != nil {
		return err
	}
	ss.to = append(ss.to, to)
	return nil
}

// Data implements smtp.Session.
func (ss *session) Data(r io.Reader) error {
	var raw []byte
	var err error
	if ss.s.cfg.envelopeOnly {
		_, err = io.Copy(io.Discard, r)
	} else {
		raw, err = io.ReadAll(r)
	}
	if err != nil {
		return fmt.Errorf("read data: %w", err)
	}
	ss.s.mu.Lock()
	latency := ss.s.latency
	ss.s.mu.Unlock()
	if !sleep(ss.r, latency) {
		return errStopped
	}
	if err := ss.s.apply(ss.r, StageData); err != nil {
		return err
	}
	_, isTLS := ss.conn.TLSConnectionState()
	var m Message
	if !ss.s.cfg.envelopeOnly {
		m = ParseMessage(raw)
	}
	m.From = ss.from
	m.To = append([]string(nil), ss.to...)
	m.TLS = isTLS
	m.Accepted = time.Now()
	ss.s.record(m)
	return nil
}
