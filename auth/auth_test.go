package auth_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/auth"
	"github.com/verifyq/verifyq/clientip"
	"github.com/verifyq/verifyq/limits"
)

// newKey makes a key and its line, or fails the test.
func newKey(t *testing.T, name, scopes string) (key, line string) {
	t.Helper()
	key, line, err := auth.NewKey(name, scopes)
	require.NoError(t, err)
	return key, line
}

func TestNewKeyLineParsesAndAuthenticates(t *testing.T) {
	t.Parallel()
	gwKey, gwLine := newKey(t, "gateway", "send,verify")
	stKey, stLine := newKey(t, "support.desk", "status")
	assert.True(t, strings.HasPrefix(gwKey, auth.KeyPrefix))
	assert.Len(t, gwKey, len(auth.KeyPrefix)+43, "32 random bytes in base64url")
	assert.NotContains(t, gwLine, gwKey, "the line holds only the hash")
	assert.Equal(t, "gateway send,verify "+auth.Hash(gwKey), gwLine)

	keys, err := auth.Parse(strings.NewReader("# callers\n\n" + gwLine + "\n\t" + stLine + "  \n"))
	require.NoError(t, err)
	assert.Equal(t, []string{"gateway", "support.desk"}, keys.Names())

	c, err := keys.Authenticate(gwKey)
	require.NoError(t, err)
	assert.Equal(t, auth.Caller{Name: "gateway", Scopes: []auth.Scope{auth.Send, auth.Verify}}, c)
	assert.True(t, c.Can(auth.Verify))
	assert.False(t, c.Can(auth.Status))
	c, err = keys.Authenticate(stKey)
	require.NoError(t, err)
	assert.Equal(t, "support.desk", c.Name)

	for _, bad := range []string{"", gwKey + "x", gwKey[:len(gwKey)-1], strings.ToUpper(gwKey), auth.Hash(gwKey), strings.Repeat("a", auth.MaxKeyBytes+1)} {
		_, err := keys.Authenticate(bad)
		assert.ErrorIs(t, err, auth.ErrUnauthenticated, "%.20q", bad)
	}
	var none *auth.Keys
	_, err = none.Authenticate(gwKey)
	assert.ErrorIs(t, err, auth.ErrUnauthenticated)

	// Two keys are never the same.
	other, _ := newKey(t, "gateway", "send")
	assert.NotEqual(t, gwKey, other)
}

func TestNewKeyRefusesBadNamesAndScopes(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, scopes string }{
		{"", "send"}, {"-x", "send"}, {"a b", "send"}, {strings.Repeat("a", 65), "send"},
		{auth.Anonymous, "send"}, {auth.Legacy, "send"},
		{"ok", ""}, {"ok", "send,"}, {"ok", "Send"}, {"ok", "send,send"}, {"ok", "admin"},
	} {
		_, _, err := auth.NewKey(tt.name, tt.scopes)
		assert.Error(t, err, "%q %q", tt.name, tt.scopes)
	}
}

// Every bad line is reported with its number; none repeats a hash.
func TestParseReportsEveryBadLine(t *testing.T) {
	t.Parallel()
	k1, l1 := newKey(t, "gateway", "send")
	_, l2 := newKey(t, "other", "verify")
	hash := auth.Hash(k1)
	file := strings.Join([]string{
		"# a comment",
		l1,
		"gateway verify " + auth.Hash("another key"),    // 3: name twice
		"twin status " + hash,                           // 4: key twice
		"short send",                                    // 5: two fields
		"bad/name send " + auth.Hash("k5"),              // 6
		"x send,admin " + auth.Hash("k6"),               // 7
		"y send " + strings.TrimPrefix(hash, "sha256:"), // 8: no prefix
		"z send " + strings.ToUpper(auth.Hash("k8")),    // 9: upper case
		"w send sha256:" + strings.Repeat("0", 63),      // 10: short
		"legacy send " + auth.Hash("k10"),               // 11: reserved
		strings.Repeat("x", auth.MaxLineBytes+1),        // 12
		l2,
	}, "\n")
	_, err := auth.Parse(strings.NewReader(file))
	require.Error(t, err)
	msg := err.Error()
	for _, want := range []string{
		`line 3: the name "gateway" is also on line 2`,
		"line 4: the same key as line 2",
		"line 5: want 3 fields",
		"line 6: a name is",
		`line 7: unknown scope "admin"`,
		"line 8: the hash must be",
		"line 9: the hash must be",
		"line 10: the hash must be",
		`line 11: the name "legacy" is reserved`,
		"line 12: longer than",
	} {
		assert.Contains(t, msg, want)
	}
	assert.NotContains(t, msg, "line 13")
	assert.NotContains(t, msg, strings.TrimPrefix(hash, "sha256:"), "never a hash")
	assert.NotContains(t, msg, strings.Repeat("0", 63), "never a hash")
	assert.Len(t, strings.Split(msg, "\n"), 10, "one line per problem")
}

func TestParseBounds(t *testing.T) {
	t.Parallel()
	_, err := auth.Parse(strings.NewReader("# nobody\n\n"))
	assert.ErrorContains(t, err, "no caller in the file")

	_, err = auth.Parse(strings.NewReader(strings.Repeat("#\n", auth.MaxFileBytes/2+1)))
	assert.ErrorContains(t, err, "larger than")

	var b strings.Builder
	for i := range auth.MaxCallers + 1 {
		fmt.Fprintf(&b, "c%d send %s\n", i, auth.Hash(strconv.Itoa(i)))
	}
	_, err = auth.Parse(strings.NewReader(b.String()))
	assert.ErrorContains(t, err, "line 1001: more than 1000 callers")

	path := filepath.Join(t.TempDir(), "keys")
	_, line := newKey(t, "gateway", "send")
	require.NoError(t, os.WriteFile(path, []byte(line+"\n"), 0o600))
	keys, err := auth.LoadFile(path)
	require.NoError(t, err)
	assert.Equal(t, 1, keys.Len())
	_, err = auth.LoadFile(path + ".missing")
	assert.Error(t, err)
}

func TestBearerKey(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{ //nolint:gosec // G101: made-up keys
		"Bearer vq_abc":    "vq_abc",
		"bearer vq_abc":    "vq_abc",
		"BEARER  vq_abc ":  "vq_abc",
		"Basic dXNlcjpw":   "",
		"vq_abc":           "",
		"":                 "",
		"Bearer":           "",
		"Bearer vq_a vq_b": "vq_a vq_b",
	} {
		assert.Equal(t, want, auth.BearerKey(in), "%q", in)
	}
}

func guardOf(t *testing.T, cfg auth.Config, lines ...string) *auth.Guard {
	t.Helper()
	if len(lines) > 0 {
		keys, err := auth.Parse(strings.NewReader(strings.Join(lines, "\n")))
		require.NoError(t, err)
		cfg.Keys = keys
	}
	return auth.New(cfg)
}

func TestGuardAdmit(t *testing.T) {
	t.Parallel()
	sendKey, sendLine := newKey(t, "gateway", "send,verify")
	statusKey, statusLine := newKey(t, "support", "status")
	g := guardOf(t, auth.Config{}, sendLine, statusLine)
	require.False(t, g.Open())

	c, err := g.Admit("Bearer "+sendKey, auth.Send)
	require.NoError(t, err)
	assert.Equal(t, "gateway", c.Name)

	_, err = g.Admit("", auth.Send)
	assert.ErrorIs(t, err, auth.ErrUnauthenticated)
	_, err = g.Admit(sendKey, auth.Send) // no scheme
	assert.ErrorIs(t, err, auth.ErrUnauthenticated)
	_, err = g.Admit("Bearer vq_unknown", auth.Send)
	assert.ErrorIs(t, err, auth.ErrUnauthenticated)

	c, err = g.Admit("Bearer "+sendKey, auth.Status)
	assert.ErrorIs(t, err, auth.ErrPermissionDenied)
	var se *auth.ScopeError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, auth.Status, se.Scope)
	assert.Equal(t, "gateway", c.Name, "named for the log line")
	_, err = g.Admit("Bearer "+statusKey, auth.Send)
	assert.ErrorIs(t, err, auth.ErrPermissionDenied)

	// Open: everyone, with every scope, as anonymous.
	for _, open := range []*auth.Guard{nil, auth.New(auth.Config{})} {
		assert.True(t, open.Open())
		c, err := open.Admit("", auth.Status)
		require.NoError(t, err)
		assert.Equal(t, auth.Anonymous, c.Name)
		c, err = open.AdmitLegacy("", "", netip.MustParseAddr("192.0.2.1"))
		require.NoError(t, err)
		assert.Equal(t, auth.Anonymous, c.Name)
	}
}

func TestGuardAdmitLegacy(t *testing.T) {
	t.Parallel()
	sendKey, sendLine := newKey(t, "gateway", "send")
	verifyKey, verifyLine := newKey(t, "checker", "verify")
	loopback, err := clientip.ParseTrusted([]string{"127.0.0.0/8", "::1"})
	require.NoError(t, err)
	g := guardOf(t, auth.Config{LegacyCallers: loopback}, sendLine, verifyLine)

	for _, peer := range []string{"127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"} {
		c, err := g.AdmitLegacy("", "", netip.MustParseAddr(peer))
		require.NoError(t, err, peer)
		assert.Equal(t, auth.Legacy, c.Name, peer)
	}
	for _, peer := range []string{"192.0.2.1", "10.0.0.1", "::2", "fe80::1"} {
		_, err := g.AdmitLegacy("", "", netip.MustParseAddr(peer))
		assert.ErrorIs(t, err, auth.ErrUnauthenticated, peer)
	}
	_, err = g.AdmitLegacy("", "", netip.Addr{})
	assert.ErrorIs(t, err, auth.ErrUnauthenticated, "no peer address")

	// A link-local gateway, its zone as the connection reports it.
	linkLocal, err := clientip.ParseTrusted([]string{"fe80::/10"})
	require.NoError(t, err)
	c, err := guardOf(t, auth.Config{LegacyCallers: linkLocal}, sendLine).AdmitLegacy("", "", netip.MustParseAddr("fe80::1%eth0"))
	require.NoError(t, err)
	assert.Equal(t, auth.Legacy, c.Name)

	// A key is checked wherever the call comes from.
	c, err = g.AdmitLegacy("Bearer "+sendKey, "", netip.MustParseAddr("192.0.2.1"))
	require.NoError(t, err)
	assert.Equal(t, "gateway", c.Name)
	_, err = g.AdmitLegacy("Bearer "+verifyKey, "", netip.MustParseAddr("192.0.2.1"))
	assert.ErrorIs(t, err, auth.ErrPermissionDenied)
	_, err = g.AdmitLegacy("Bearer vq_wrong", "", netip.MustParseAddr("127.0.0.1"))
	assert.ErrorIs(t, err, auth.ErrUnauthenticated, "a wrong key is wrong on loopback too")

	// Another scheme is no key: the old gateway behind a proxy that adds
	// one is still answered from its network, and from nowhere else.
	basic := auth.Authorization([]string{"Basic dXNlcjpwYXNz"})
	c, err = g.AdmitLegacy(basic, "", netip.MustParseAddr("127.0.0.1"))
	require.NoError(t, err)
	assert.Equal(t, auth.Legacy, c.Name)
	_, err = g.AdmitLegacy(basic, "", netip.MustParseAddr("192.0.2.1"))
	assert.ErrorIs(t, err, auth.ErrUnauthenticated)
	_, err = g.AdmitLegacy(auth.Authorization([]string{"Bearer " + sendKey, "Bearer " + sendKey}), "", netip.MustParseAddr("127.0.0.1"))
	assert.ErrorIs(t, err, auth.ErrUnauthenticated, "two keys are no key, on loopback too")
}

// Authorization picks a request's key from its Authorization values: the
// one Bearer value; none is no key (other schemes are not verifyq's), and
// several a key that cannot be told.
func TestAuthorization(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		values []string
		want   string
	}{
		{nil, ""},
		{[]string{""}, ""},
		{[]string{"Basic dXNlcjpw"}, ""},
		{[]string{"vq_abc"}, ""},
		{[]string{"Bearer vq_abc"}, "Bearer vq_abc"},
		{[]string{"bearer vq_abc", "Basic dXNlcjpw"}, "bearer vq_abc"},
		{[]string{" Bearer vq_abc "}, " Bearer vq_abc "},
		{[]string{"Bearer vq_a", "Bearer vq_a"}, "Bearer"},
		{[]string{"Bearer"}, "Bearer"},
	} {
		got := auth.Authorization(tt.values)
		assert.Equal(t, tt.want, got, "%q", tt.values)
		assert.Equal(t, auth.BearerKey(tt.want), auth.BearerKey(got))
	}
}

// Each caller has its own status reads: a bucket of the minute's reads,
// refilled over the minute.
func TestGuardStatusReadsPerCaller(t *testing.T) {
	t.Parallel()
	aKey, aLine := newKey(t, "a", "status")
	bKey, bLine := newKey(t, "b", "status,send")
	now := time.Unix(1_700_000_000, 0)
	g := guardOf(t, auth.Config{StatusReadsPerMinute: 3, Now: func() time.Time { return now }}, aLine, bLine)

	for range 3 {
		_, err := g.Admit("Bearer "+aKey, auth.Status)
		require.NoError(t, err)
	}
	c, err := g.Admit("Bearer "+aKey, auth.Status)
	var le *limits.Error
	require.ErrorAs(t, err, &le)
	assert.Equal(t, auth.StatusLimit, le.Limit)
	assert.Equal(t, 20*time.Second, le.RetryAfter, "one read every 20 s")
	assert.Equal(t, "a", c.Name)

	_, err = g.Admit("Bearer "+bKey, auth.Status)
	require.NoError(t, err, "b has its own reads")
	for range 10 {
		_, err = g.Admit("Bearer "+aKey, auth.Send)
		assert.ErrorIs(t, err, auth.ErrPermissionDenied, "a refused request costs no read")
		_, err = g.Admit("Bearer "+bKey, auth.Send)
		require.NoError(t, err, "sends do not count")
	}

	now = now.Add(20 * time.Second)
	_, err = g.Admit("Bearer "+aKey, auth.Status)
	require.NoError(t, err, "refilled")
	_, err = g.Admit("Bearer "+aKey, auth.Status)
	require.Error(t, err)

	// Open, the one anonymous caller has the bound too; 0 is no bound.
	open := auth.New(auth.Config{StatusReadsPerMinute: 1, Now: func() time.Time { return now }})
	_, err = open.Admit("", auth.Status)
	require.NoError(t, err)
	_, err = open.Admit("", auth.Status)
	assert.True(t, errors.Is(err, limits.ErrRateLimited))
	off := auth.New(auth.Config{})
	for range 100 {
		_, err = off.Admit("", auth.Status)
		require.NoError(t, err)
	}
}

// A "cert" line is a caller by client certificate: its name admits it
// without a key, with its scopes; a key caller's name does not, nor does a
// certificate name not in the file; a key, when sent, decides.
func TestCertificateCallers(t *testing.T) {
	key, line := newKey(t, "gateway", "send")
	keys, err := auth.Parse(strings.NewReader(line + "\nbilling  verify,status  cert\nops.example.com send cert\n"))
	require.NoError(t, err)
	assert.Equal(t, 2, keys.CertCallers())
	g := auth.New(auth.Config{Keys: keys})

	c, err := g.AdmitPeer("", "billing", auth.Verify)
	require.NoError(t, err)
	assert.Equal(t, auth.Caller{Name: "billing", Scopes: []auth.Scope{auth.Verify, auth.Status}}, c)
	c, err = g.AdmitPeer("", "billing", auth.Send)
	assert.ErrorIs(t, err, auth.ErrPermissionDenied)
	assert.Equal(t, "billing", c.Name)
	_, err = g.AdmitPeer("", "gateway", auth.Send)
	assert.ErrorIs(t, err, auth.ErrUnauthenticated, "a key caller's name is no certificate caller")
	_, err = g.AdmitPeer("", "stranger", auth.Send)
	assert.ErrorIs(t, err, auth.ErrUnauthenticated)
	c, err = g.AdmitPeer("Bearer "+key, "stranger", auth.Send)
	require.NoError(t, err)
	assert.Equal(t, "gateway", c.Name, "the key decides")
	_, err = g.AdmitPeer("Bearer vq_wrong", "billing", auth.Verify)
	assert.ErrorIs(t, err, auth.ErrUnauthenticated, "a wrong key is not saved by a certificate")
	_, err = keys.Authenticate("cert")
	assert.ErrorIs(t, err, auth.ErrUnauthenticated)
	c, err = g.AdmitLegacy("", "ops.example.com", netip.MustParseAddr("192.0.2.1"))
	require.NoError(t, err)
	assert.Equal(t, "ops.example.com", c.Name)

	// What a proxy in front may add: an Authorization of another scheme is
	// no key, so a certificate caller keeps its access, and a caller
	// without a certificate gains none; several Bearer values are a key
	// that cannot be told, refused whatever the certificate.
	for _, values := range [][]string{{"Basic dXNlcjpwYXNz"}, {"Basic dXNlcjpwYXNz", ""}, {"Negotiate abc", "Basic x"}, {""}, nil} {
		c, err = g.AdmitPeer(auth.Authorization(values), "billing", auth.Verify)
		require.NoError(t, err, "%q", values)
		assert.Equal(t, "billing", c.Name, "%q", values)
		_, err = g.AdmitPeer(auth.Authorization(values), "", auth.Verify)
		assert.ErrorIs(t, err, auth.ErrUnauthenticated, "%q without a certificate", values)
		_, err = g.AdmitPeer(auth.Authorization(values), "stranger", auth.Verify)
		assert.ErrorIs(t, err, auth.ErrUnauthenticated, "%q with an unlisted certificate", values)
	}
	for _, values := range [][]string{
		{"Bearer " + key, "Bearer " + key},
		{"Bearer " + key, "bearer vq_other"},
		{"Bearer vq_wrong", "Bearer vq_wrong2", "Basic x"},
	} {
		_, err = g.AdmitPeer(auth.Authorization(values), "billing", auth.Verify)
		assert.ErrorIs(t, err, auth.ErrUnauthenticated, "%d Bearer values, with a certificate", len(values))
		_, err = g.AdmitPeer(auth.Authorization(values), "", auth.Send)
		assert.ErrorIs(t, err, auth.ErrUnauthenticated, "%d Bearer values", len(values))
	}
	c, err = g.AdmitPeer(auth.Authorization([]string{"Basic dXNlcjpwYXNz", "Bearer " + key}), "billing", auth.Send)
	require.NoError(t, err)
	assert.Equal(t, "gateway", c.Name, "the one Bearer key decides, beside another scheme")
	_, err = g.AdmitPeer(auth.Authorization([]string{"Basic dXNlcjpwYXNz", "Bearer vq_wrong"}), "billing", auth.Verify)
	assert.ErrorIs(t, err, auth.ErrUnauthenticated, "a wrong key beside another scheme is not saved by a certificate")

	_, err = auth.Parse(strings.NewReader("billing send cert\nbilling verify cert\n"))
	assert.ErrorContains(t, err, `line 2: the name "billing" is also on line 1`)
	_, err = auth.Parse(strings.NewReader("billing send CERT\n"))
	assert.ErrorContains(t, err, "or cert for a certificate caller")

	assert.Equal(t, "billing", auth.CertName(&x509.Certificate{Subject: pkix.Name{CommonName: "billing"}, DNSNames: []string{"b.example"}}))
	assert.Equal(t, "b.example", auth.CertName(&x509.Certificate{DNSNames: []string{"b.example", "c.example"}}))
	assert.Empty(t, auth.CertName(&x509.Certificate{}))
}
