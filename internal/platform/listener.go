package platform

import (
	"net"
	"net/netip"
	"sync"
)

// ConnLimits bound the connections a public listener holds open at once,
// in all and from one source, so that no one client can hold the listener.
type ConnLimits struct {
	// Max bounds the connections open at once; past it, new ones wait in
	// the kernel's accept queue until one closes.
	Max int
	// PerSource bounds the connections of one source (see Source). One
	// past it is closed at once, with a TCP reset, without taking one of
	// Max's slots. 0: no bound per source.
	PerSource int
	// Exempt reports the peers that PerSource does not bound: trusted
	// proxies, whose connections carry many clients. nil: none.
	Exempt func(netip.Addr) bool
	// Refused, when not nil, is called for each connection closed past
	// PerSource, with its source.
	Refused func(source netip.Prefix)
}

// IPv6SourceBits is the prefix of an IPv6 address that is one source: a
// /64 is one network (one LAN, one host's privacy addresses), and a host
// given a /64 picks any address in it at will.
const IPv6SourceBits = 64

// Source is the source whose share a connection from addr takes: the IPv4
// address itself, or its IPv6 address's /64. An IPv4 address in IPv6 form
// (::ffff:192.0.2.1) is the IPv4 address; a zone is dropped.
func Source(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap().WithZone("")
	if addr.Is4() {
		return netip.PrefixFrom(addr, 32)
	}
	p, _ := addr.Prefix(IPv6SourceBits) // an IPv6 address: no error
	return p
}

// LimitListener returns ln bounded by lim: Accept waits while lim.Max
// connections are open, and closes at once, and does not return, a
// connection whose source already holds lim.PerSource. The source is the
// peer's address as the kernel sees it, never anything the peer sends. A
// connection without an IP address (a Unix socket) has no source and
// counts against Max alone.
func LimitListener(ln net.Listener, lim ConnLimits) net.Listener {
	return &limitListener{
		Listener: ln,
		lim:      lim,
		slots:    make(chan struct{}, lim.Max),
		done:     make(chan struct{}),
		bySource: map[netip.Prefix]int{},
	}
}

type limitListener struct {
	net.Listener
	lim       ConnLimits
	slots     chan struct{} // one per open connection, lim.Max in all
	done      chan struct{} // closed by Close
	closeOnce sync.Once

	mu       sync.Mutex
	bySource map[netip.Prefix]int // connections open per bounded source
}

// Accept waits for a slot, then for a connection whose source is within
// its share.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			return l.closed()
		}
		c, err := l.Listener.Accept()
		if err != nil {
			<-l.slots
			return nil, err
		}
		src, bounded, ok := l.admit(c.RemoteAddr())
		if ok {
			return &limitConn{Conn: c, l: l, src: src, bounded: bounded}, nil
		}
		<-l.slots
		refuse(c)
		if l.lim.Refused != nil {
			l.lim.Refused(src)
		}
	}
}

// closed returns the closed listener's own error, closing any connection
// it still hands out.
func (l *limitListener) closed() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		_ = c.Close()
	}
}

// admit takes a place in the share of addr's source, or reports false
// when the source holds its share. bounded is false for a connection no
// share bounds.
func (l *limitListener) admit(addr net.Addr) (src netip.Prefix, bounded, ok bool) {
	tcp, isTCP := addr.(*net.TCPAddr)
	if l.lim.PerSource <= 0 || !isTCP {
		return src, false, true
	}
	peer := tcp.AddrPort().Addr()
	if !peer.IsValid() || (l.lim.Exempt != nil && l.lim.Exempt(peer.Unmap())) {
		return src, false, true
	}
	src = Source(peer)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bySource[src] >= l.lim.PerSource {
		return src, false, false
	}
	l.bySource[src]++
	return src, true, true
}

// release gives back the slot and the share's place of a connection.
func (l *limitListener) release(src netip.Prefix, bounded bool) {
	if bounded {
		l.mu.Lock()
		if l.bySource[src]--; l.bySource[src] <= 0 {
			delete(l.bySource, src)
		}
		l.mu.Unlock()
	}
	<-l.slots
}

func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

// refuse closes c with a reset, so that neither side keeps its socket in
// TIME_WAIT: a client turned away many times leaves nothing behind.
func refuse(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// limitConn gives back its place when it is closed, once.
type limitConn struct {
	net.Conn
	l           *limitListener
	src         netip.Prefix
	bounded     bool
	releaseOnce sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.releaseOnce.Do(func() { c.l.release(c.src, c.bounded) })
	return err
}
