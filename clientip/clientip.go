// Package clientip decides who the end user behind a request is, the one
// rule both edges follow: the client is the forwarded address when the
// peer is a trusted proxy, else the peer itself.
//
// Forwarding headers (HTTP X-Forwarded-For, gRPC x-forwarded-for or
// x-client-ip metadata) are believed only from a peer in the trusted
// proxies, and then only up to the rightmost hop that is not a trusted
// proxy itself. A caller that is no trusted proxy is the client, whatever
// it sends: a stranger calling directly is limited by its own address. A
// trusted proxy that names nobody is the gateway asking on its own
// account (the old gateway sends no forwarding metadata): it is no end
// user, and has no per-client limit. DefaultTrusted trusts loopback, where
// a gateway on the same host calls from.
package clientip

import (
	"fmt"
	"net/netip"
	"strings"
)

// Trusted is the set of proxies whose forwarding headers are believed.
type Trusted []netip.Prefix

// DefaultTrusted are the trusted proxies unless configured
// (TRUSTED_PROXIES): loopback, IPv4 and IPv6.
const DefaultTrusted = "127.0.0.0/8,::1"

// ParseTrusted parses a list of CIDRs or single addresses (TRUSTED_PROXIES,
// LEGACY_CALLERS). Empty entries are skipped. An IPv4-mapped IPv6 entry
// (::ffff:10.0.0.1, ::ffff:10.0.0.0/104) is the IPv4 address or network it
// maps (10.0.0.1/32, 10.0.0.0/8), since Contains unmaps the address it is
// asked about; a mapped prefix shorter than /96 would reach beyond the
// mapped addresses and is refused. The error names the entry, never
// anything else.
func ParseTrusted(list []string) (Trusted, error) {
	var out Trusted
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%q is not a CIDR or an IP address", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			if p.Bits() < mappedBits {
				return nil, fmt.Errorf("%q is an IPv4-mapped prefix shorter than /%d: write its IPv4 network "+
					"(::ffff:10.0.0.0/104 is 10.0.0.0/8)", s, mappedBits)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-mappedBits)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// mappedBits is the length of the IPv4-mapped prefix ::ffff:0:0/96: an
// IPv4 prefix of n bits is the mapped prefix of n+96.
const mappedBits = 96

// Contains reports whether addr is a trusted proxy. An IPv6 zone (a
// link-local peer's interface, fe80::1%eth0) is ignored: netip's prefixes
// never contain a zoned address.
func (t Trusted) Contains(addr netip.Addr) bool {
	addr = addr.Unmap().WithZone("")
	for _, p := range t {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Client returns the end user's address for a request from peer that
// carries the forwarding chain hops (each element one header value, which
// may hold a comma-separated list, oldest hop first), or "" when there is
// no end user: a trusted proxy that names nobody, or a peer that is no IP
// address (a Unix socket, an in-process pipe: no network caller).
//
// A peer that is no trusted proxy is the client; its hops are ignored.
// From a trusted proxy the chain is read from the right: each entry was
// written by the hop to its right, starting with peer. The first entry
// that is not a trusted proxy is the client. An entry that is not an
// address (nor an address with a port) is not skipped: the request counts
// against the trusted hop that wrote it. A chain of trusted proxies only
// names its oldest one.
func (t Trusted) Client(peer netip.Addr, hops []string) string {
	peer = peer.Unmap().WithZone("")
	if !peer.IsValid() {
		return ""
	}
	if !t.Contains(peer) {
		return peer.String()
	}
	var entries []string
	for _, h := range hops {
		entries = append(entries, strings.Split(h, ",")...)
	}
	writer := peer
	for i := len(entries) - 1; i >= 0; i-- {
		addr, ok := ParseHop(entries[i])
		if !ok {
			return writer.String()
		}
		if !t.Contains(addr) {
			return addr.String()
		}
		writer = addr
	}
	if len(entries) == 0 {
		return "" // a trusted proxy that names nobody: the gateway itself
	}
	return writer.String()
}

// ParseHop parses one forwarding entry: an IPv4 or IPv6 address, with or
// without a port ("203.0.113.7:4711", "[2001:db8::1]:4711"). The address
// comes back unmapped and without a zone.
func ParseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	return netip.Addr{}, false
}
