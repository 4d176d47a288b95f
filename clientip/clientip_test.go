package clientip_test

import (
	"fmt"
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

// An IPv4-mapped entry (::ffff:10.0.0.1, ::ffff:10.0.0.0/104) is the IPv4
// address or network it maps: a peer is unmapped before it is looked up,
// so a mapped entry left mapped would never match. A mapped prefix shorter
// than /96 reaches beyond the mapped addresses and is refused, naming the
// entry.
func TestParseTrustedUnmaps(t *testing.T) {
	t.Parallel()
	trusted, err := clientip.ParseTrusted([]string{"::ffff:10.0.0.1", "::ffff:192.0.2.0/120", "::ffff:0:0/96"})
	require.NoError(t, err)
	assert.Equal(t, clientip.Trusted{
		netip.MustParsePrefix("10.0.0.1/32"),
		netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("0.0.0.0/0"),
	}, trusted)

	some, err := clientip.ParseTrusted([]string{"::ffff:10.0.0.1", "::ffff:192.0.2.0/120"})
	require.NoError(t, err)
	for _, a := range []string{"10.0.0.1", "::ffff:10.0.0.1", "192.0.2.77", "::ffff:192.0.2.77"} {
		assert.True(t, some.Contains(netip.MustParseAddr(a)), a)
	}
	for _, a := range []string{"10.0.0.2", "192.0.3.1", "::ffff:198.51.100.1", "2001:db8::1"} {
		assert.False(t, some.Contains(netip.MustParseAddr(a)), a)
	}
	assert.Equal(t, "1.2.3.4", some.Client(netip.MustParseAddr("10.0.0.1"), []string{"1.2.3.4"}), "a mapped proxy is believed")
	assert.Equal(t, "1.2.3.4", some.Client(netip.MustParseAddr("10.0.0.1"), []string{"1.2.3.4, ::ffff:192.0.2.9"}),
		"a mapped proxy's hop is skipped")

	for _, entry := range []string{"::ffff:10.0.0.0/95", "::ffff:0:0/80", "::ffff:10.0.0.1/0"} {
		_, err := clientip.ParseTrusted([]string{"10.0.0.0/8", entry})
		require.Error(t, err, entry)
		assert.Contains(t, err.Error(), fmt.Sprintf("%q", entry))
		assert.Contains(t, err.Error(), "/96", entry)
	}
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
