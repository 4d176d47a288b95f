package platform_test

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/platform"
)

// held is a listener under test whose accepted connections are greeted
// with one byte and kept open, in the order accepted, until the test
// closes them.
type held struct {
	addr     string
	accepted chan net.Conn

	mu      sync.Mutex
	refused []netip.Prefix
}

// hold serves platform.LimitListener(127.0.0.1:0, lim) until the test ends,
// then checks that Accept returned the closed listener's error.
func hold(t *testing.T, lim platform.ConnLimits) *held {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h := &held{addr: inner.Addr().String(), accepted: make(chan net.Conn, 64)}
	lim.Refused = func(src netip.Prefix) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.refused = append(h.refused, src)
	}
	ln := platform.LimitListener(inner, lim)
	done := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				done <- err
				return
			}
			_, _ = c.Write([]byte("+"))
			h.accepted <- c
		}
	}()
	t.Cleanup(func() {
		require.NoError(t, ln.Close())
		assert.ErrorIs(t, <-done, net.ErrClosed, "Accept after Close")
		close(h.accepted)
		for c := range h.accepted {
			_ = c.Close()
		}
	})
	return h
}

// dial connects from the loopback address from (Linux routes all of
// 127/8 to the loopback interface, so each is a source of its own).
func (h *held) dial(from string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	return d.Dial("tcp", h.addr)
}

// try connects from the loopback address from and reports whether the
// listener accepted the connection (its greeting came) or reset it (at
// once: even before the dial returned). The deadline only keeps a broken
// listener from hanging the test.
func (h *held) try(t *testing.T, from string) bool {
	t.Helper()
	c, err := h.dial(from)
	if err != nil {
		require.ErrorIs(t, err, syscall.ECONNRESET)
		return false
	}
	t.Cleanup(func() { _ = c.Close() })
	return served(t, c)
}

// served reports whether the listener accepted c or reset it.
func served(t *testing.T, c net.Conn) bool {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err := c.Read(make([]byte, 1))
	if err != nil {
		require.ErrorIs(t, err, syscall.ECONNRESET, "reset, not timed out or ended")
	}
	return err == nil
}

// next is the server's side of the connection accepted next.
func (h *held) next(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-h.accepted:
		return c
	case <-time.After(10 * time.Second):
		require.FailNow(t, "no connection accepted")
		return nil
	}
}

func (h *held) refusals() []netip.Prefix {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]netip.Prefix(nil), h.refused...)
}

// One source holds its share and no more: its next connection is closed at
// once, and another source is still served; a connection closed gives its
// source's place back.
func TestLimitListenerPerSource(t *testing.T) {
	t.Parallel()
	h := hold(t, platform.ConnLimits{Max: 8, PerSource: 2})
	require.True(t, h.try(t, "127.0.0.1"))
	firstSrv := h.next(t)
	require.True(t, h.try(t, "127.0.0.1"))
	h.next(t)

	assert.False(t, h.try(t, "127.0.0.1"), "past the source's share")
	assert.False(t, h.try(t, "127.0.0.1"), "and again")
	// The client can see the reset before the listener has counted it.
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("127.0.0.1/32")}
	assert.Eventually(t, func() bool { return slices.Equal(want, h.refusals()) }, 5*time.Second, 5*time.Millisecond, "refusals: %v", h.refusals())

	for range 2 {
		assert.True(t, h.try(t, "127.0.0.2"), "another source is served")
		h.next(t)
	}
	assert.False(t, h.try(t, "127.0.0.2"), "the other source's share is its own")

	require.NoError(t, firstSrv.Close())
	assert.True(t, h.try(t, "127.0.0.1"), "a closed connection gives its place back")
}

// A refused connection takes no slot of Max: with every slot but one
// taken, one source refused over and over leaves the last for another.
func TestLimitListenerRefusedTakesNoSlot(t *testing.T) {
	t.Parallel()
	h := hold(t, platform.ConnLimits{Max: 3, PerSource: 2})
	for range 2 {
		require.True(t, h.try(t, "127.0.0.1"))
	}
	for range 10 {
		require.False(t, h.try(t, "127.0.0.1"))
	}
	assert.True(t, h.try(t, "127.0.0.3"), "the last slot")
	assert.Eventually(t, func() bool { return len(h.refusals()) == 10 }, 5*time.Second, 5*time.Millisecond, "refusals: %v", h.refusals())
}

// Past Max, a connection waits in the kernel until one closes; it is not
// refused.
func TestLimitListenerMax(t *testing.T) {
	t.Parallel()
	h := hold(t, platform.ConnLimits{Max: 2})
	for range 2 {
		require.True(t, h.try(t, "127.0.0.1"))
	}
	first := h.next(t)
	h.next(t)
	waiting, err := h.dial("127.0.0.1")
	require.NoError(t, err, "the kernel completes the handshake")
	t.Cleanup(func() { _ = waiting.Close() })
	// Not served yet (a listener that did not wait would greet it at once;
	// a slow machine can only make this pass, never fail).
	require.NoError(t, waiting.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
	_, err = waiting.Read(make([]byte, 1))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "waits for a slot")

	require.NoError(t, first.Close())
	assert.True(t, served(t, waiting), "served once a slot is free")
	assert.Empty(t, h.refusals())
}

// An exempt peer (a trusted proxy) is bounded by Max alone.
func TestLimitListenerExempt(t *testing.T) {
	t.Parallel()
	proxy := netip.MustParseAddr("127.0.0.4")
	h := hold(t, platform.ConnLimits{Max: 8, PerSource: 1, Exempt: func(a netip.Addr) bool { return a == proxy }})
	for range 4 {
		assert.True(t, h.try(t, "127.0.0.4"), "the proxy")
	}
	assert.True(t, h.try(t, "127.0.0.5"))
	assert.False(t, h.try(t, "127.0.0.5"), "another peer keeps its share")
}

func TestSource(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]string{
		"192.0.2.7":                   "192.0.2.7/32",
		"::ffff:192.0.2.7":            "192.0.2.7/32",
		"2001:db8:1:2:a:b:c:d":        "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1":        "2001:db8:1:2::/64",
		"2001:db8:1:3::1":             "2001:db8:1:3::/64",
		"fe80::1%eth0":                "fe80::/64",
		"::1":                         "::/64",
		"2001:db8:ffff:ffff:ffff::ff": "2001:db8:ffff:ffff::/64",
	} {
		assert.Equal(t, netip.MustParsePrefix(want), platform.Source(netip.MustParseAddr(addr)), addr)
	}
}
