package relay

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// maxHelloName bounds Config.HelloName, in bytes (a domain name's limit).
const maxHelloName = 253

// ValidateHelloName reports whether s can follow EHLO: empty (an address
// literal of the connection's own address), a domain name of letters,
// digits, hyphens and dots, or an address literal such as "[192.0.2.7]"
// or "[IPv6:2001:db8::7]".
func ValidateHelloName(s string) error {
	switch {
	case s == "":
		return nil
	case len(s) > maxHelloName:
		return errors.New("longer than 253 bytes")
	case strings.HasPrefix(s, "["):
		lit, ok := strings.CutSuffix(s[1:], "]")
		lit = strings.TrimPrefix(lit, "IPv6:")
		if _, err := netip.ParseAddr(lit); !ok || err != nil {
			return errors.New("not an address literal such as [192.0.2.7]")
		}
		return nil
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' ||
			strings.ContainsFunc(label, func(r rune) bool {
				return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-'
			}) {
			return errors.New("not a domain name of letters, digits, hyphens and dots")
		}
	}
	return nil
}

// isLocalName reports whether name says nothing about the host to another
// one: localhost or a name under it.
func isLocalName(name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	return name == "localhost" || name == "localhost.localdomain" || strings.HasSuffix(name, ".localhost")
}

// DefaultHelloName returns the host's fully qualified domain name, as
// resolved from its host name (a name with a dot that is not under
// localhost), or "" when it has none: a Client then introduces itself by
// an address literal of each connection's own address, which RFC 5321
// allows and spam filters do not hold against it.
func DefaultHelloName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		return ""
	}
	if fqdn(host) {
		return host
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if cname, err := net.DefaultResolver.LookupCNAME(ctx, host); err == nil && fqdn(strings.TrimSuffix(cname, ".")) {
		return strings.TrimSuffix(cname, ".")
	}
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		names, _ := net.DefaultResolver.LookupAddr(ctx, a)
		for _, n := range names {
			if n = strings.TrimSuffix(n, "."); fqdn(n) {
				return n
			}
		}
	}
	return ""
}

// fqdn reports whether name looks fully qualified: a valid domain name with
// a dot, not under localhost.
func fqdn(name string) bool {
	return strings.Contains(name, ".") && !isLocalName(name) && ValidateHelloName(name) == nil && !strings.HasPrefix(name, "[")
}

// addressLiteral is the EHLO name of a connection whose own address is a:
// "[192.0.2.7]" or "[IPv6:2001:db8::7]".
func addressLiteral(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return "[127.0.0.1]"
	}
	ip := ap.Addr().Unmap()
	if ip.Is6() {
		return "[IPv6:" + ip.String() + "]"
	}
	return "[" + ip.String() + "]"
}
