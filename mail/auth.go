package mail

import (
	"errors"
	"net"
	"net/smtp"
	"strings"
)

// errInsecureAuth is returned when credentials would cross an unencrypted
// connection to a non-loopback host.
var errInsecureAuth = errors.New("mail: refusing to send credentials over an unencrypted connection")

// plainAuth is SASL PLAIN (RFC 4616) that, unlike smtp.PlainAuth, accepts any
// loopback address, and otherwise requires TLS.
type plainAuth struct {
	user, pass, host string
}

var _ smtp.Auth = (*plainAuth)(nil)

// Start implements smtp.Auth.
func (a *plainAuth) Start(server *smtp.ServerInfo) (string, []byte, error) {
	if !server.TLS && !isLoopback(a.host) {
		return "", nil, errInsecureAuth
	}
	resp := make([]byte, 0, 2+len(a.user)+len(a.pass))
	resp = append(resp, 0)
	resp = append(resp, a.user...)
	resp = append(resp, 0)
	resp = append(resp, a.pass...)
	return "PLAIN", resp, nil
}

// Next implements smtp.Auth. PLAIN has no challenges.
func (a *plainAuth) Next(_ []byte, more bool) ([]byte, error) {
	if more {
		return nil, errors.New("mail: unexpected challenge during AUTH PLAIN")
	}
	return nil, nil
}

// isLoopback reports whether host is "localhost" or a loopback IP.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// offersPlain reports whether an EHLO "AUTH" parameter list includes PLAIN.
func offersPlain(params string) bool {
	for _, m := range strings.Fields(params) {
		if strings.EqualFold(m, "PLAIN") {
			return true
		}
	}
	return false
}
