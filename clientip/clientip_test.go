package clientip_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/clientip"
)

func TestClient(t *testing.T) {
	t.Parallel()
	trusted, err := clientip.ParseTrusted([]string{"127.0.0.1/32", " 10.0.0.0/8", "", "2001:db8::1"})
	require.NoError(t, err)
	gateway := netip.MustParseAddr("127.0.0.1")
	stranger := netip.MustParseAddr("198.51.100.1")
	tests := []struct {
		name string
		peer netip.Addr
		hops []string
		want string
	}{
		{"no chain", gateway, nil, ""},
		{"one hop", gateway, []string{"1.2.3.4"}, "1.2.3.4"},
		{"with a port", gateway, []string{"1.2.3.4:5555"}, "1.2.3.4"},
		{"v6 with a port", gateway, []string{"[2001:db8::7]:443"}, "2001:db8::7"},
		{"mapped v4", gateway, []string{"::ffff:1.2.3.4"}, "1.2.3.4"},
		{"rightmost untrusted", gateway, []string{"6.6.6.6, 1.2.3.4, 10.1.1.1"}, "1.2.3.4"},
		{"several headers", gateway, []string{"6.6.6.6", "1.2.3.4", "10.1.1.1"}, "1.2.3.4"},
		{"spoofed left part is never reached", gateway, []string{"10.9.9.9, 1.2.3.4"}, "1.2.3.4"},
		{"garbage counts against its writer", gateway, []string{"unknown"}, "127.0.0.1"},
		{"garbage behind a proxy", gateway, []string{"1.2.3.4, bogus, 10.1.1.1"}, "10.1.1.1"},
		{"empty entry", gateway, []string{""}, "127.0.0.1"},
		{"only trusted hops: the oldest", gateway, []string{"10.2.2.2, 10.1.1.1"}, "10.2.2.2"},
		{"untrusted peer is the client", stranger, []string{"1.2.3.4"}, "198.51.100.1"},
		{"untrusted peer without a chain", stranger, nil, "198.51.100.1"},
		{"mapped untrusted peer", netip.MustParseAddr("::ffff:198.51.100.1"), nil, "198.51.100.1"},
		{"no peer address", netip.Addr{}, []string{"1.2.3.4"}, ""},
		{"mapped trusted peer", netip.MustParseAddr("::ffff:127.0.0.1"), []string{"1.2.3.4"}, "1.2.3.4"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, trusted.Client(tt.peer, tt.hops), tt.name)
	}
	assert.Equal(t, "127.0.0.1", clientip.Trusted(nil).Client(gateway, []string{"1.2.3.4"}),
		"nothing trusted, nothing believed: every peer is a client")
	def, err := clientip.ParseTrusted(strings.Split(clientip.DefaultTrusted, ","))
	require.NoError(t, err)
	assert.Empty(t, def.Client(netip.MustParseAddr("::1"), nil), "by default a gateway on loopback is no client")
	assert.Equal(t, "1.2.3.4", def.Client(gateway, []string{"1.2.3.4"}), "and is believed")
	assert.Equal(t, "198.51.100.1", def.Client(stranger, []string{"1.2.3.4"}), "a stranger is limited as itself")
}

func TestParseTrusted(t *testing.T) {
	t.Parallel()
	_, err := clientip.ParseTrusted([]string{"10.0.0.0/8", "not-an-ip"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"not-an-ip"`)
	p, err := clientip.ParseTrusted([]string{"10.1.2.3/8"})
	require.NoError(t, err)
	assert.Equal(t, clientip.Trusted{netip.MustParsePrefix("10.0.0.0/8")}, p)
}

// A link-local peer comes with its interface's zone (fe80::1%eth0), as the
// connection reports it. The zone names an interface, not another
// address: the peer is in fe80::/10 all the same, for TRUSTED_PROXIES (the
// connection caps' exemption), LEGACY_CALLERS and Client alike.
func TestContainsIgnoresTheZone(t *testing.T) {
	t.Parallel()
	trusted, err := clientip.ParseTrusted([]string{"fe80::/10", "127.0.0.1"})
	require.NoError(t, err)
	for _, a := range []string{"fe80::1", "fe80::1%eth0", "fe80::1%2", "127.0.0.1", "::ffff:127.0.0.1"} {
		assert.True(t, trusted.Contains(netip.MustParseAddr(a)), a)
	}
	for _, a := range []string{"2001:db8::1%eth0", "127.0.0.2", "::1"} {
		assert.False(t, trusted.Contains(netip.MustParseAddr(a)), a)
	}
	assert.Equal(t, "1.2.3.4", trusted.Client(netip.MustParseAddr("fe80::1%eth0"), []string{"1.2.3.4"}))
}
