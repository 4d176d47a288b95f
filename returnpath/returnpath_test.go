package returnpath_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/returnpath"
)

var (
	secret   = bytes.Repeat([]byte("0123456789abcdef"), 2)
	previous = bytes.Repeat([]byte("fedcba9876543210"), 2)
	other    = bytes.Repeat([]byte("an-other-secret!"), 2)
)

var purposes = []string{"", "login", "register"}

func newPath(t *testing.T, secrets ...[]byte) *returnpath.Path {
	t.Helper()
	p, err := returnpath.New("bounces@Bounce.Example", secrets...)
	require.NoError(t, err)
	return p
}

// tokenOf returns the token of the VERP address addr of p.
func tokenOf(t *testing.T, p *returnpath.Path, addr string) string {
	t.Helper()
	tok, ours := p.TokenOf(addr)
	require.True(t, ours, addr)
	require.Len(t, tok, returnpath.TokenLen)
	return tok
}

func TestForAndOpen(t *testing.T) {
	t.Parallel()
	p := newPath(t, secret)
	at := time.Date(2026, 3, 1, 10, 59, 0, 0, time.UTC)
	send := returnpath.Send{Task: "0b8a7f4e-6f7e-4b8e-9d7a-1c2b3d4e5f60", Purpose: "login", Email: "Alice+x@Example.COM"}
	addr := p.For(send, at)
	assert.Regexp(t, `^bounces\+[a-z2-7]{32}@bounce\.example$`, addr)
	assert.LessOrEqual(t, strings.IndexByte(addr, '@'), 64, "a local part of at most 64 octets")

	m, err := p.Open(tokenOf(t, p, addr), at.Add(time.Minute), purposes, []string{"someone@example.com", "Alice+x@example.com"})
	require.NoError(t, err)
	assert.Equal(t, returnpath.Match{
		SendID: returnpath.SendID(send.Task), Purpose: "login", Exact: "Alice+x@example.com",
		Issued: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC).Local(),
	}, m)
	assert.Len(t, m.SendID, 16)

	// An MTA that folds the case of the local part changes nothing.
	m2, err := p.Open(tokenOf(t, p, strings.ToUpper(addr)), at, purposes, []string{"Alice+x@example.com"})
	require.NoError(t, err)
	assert.Equal(t, m, m2)
}

// The token binds the exact address and the purpose: a recipient who sees
// its own token cannot make it count for another address, nor for another
// purpose of its own.
func TestOpenRefusesOtherAddresses(t *testing.T) {
	t.Parallel()
	p := newPath(t, secret)
	now := time.Now()
	tok := tokenOf(t, p, p.For(returnpath.Send{Task: "t1", Purpose: "", Email: "alice@example.com"}, now))
	for _, addrs := range [][]string{
		{"bob@example.com"},
		{"Alice@example.com"},    // the local part is exact
		{"alice+x@example.com"},  // another spelling of the mailbox
		{"alice@example.org"},    // another domain
		{"not an address", "@x"}, // nothing valid
		{},                       // nothing at all
	} {
		_, err := p.Open(tok, now, purposes, addrs)
		assert.ErrorIs(t, err, returnpath.ErrForged, "%v", addrs)
	}
	_, err := p.Open(tok, now, []string{"login", "register"}, []string{"alice@example.com"})
	assert.ErrorIs(t, err, returnpath.ErrForged, "another purpose")
	_, err = p.Open(tok, now, purposes, []string{"alice@EXAMPLE.com"})
	assert.NoError(t, err, "the domain in any case is the same exact address")
}

// Every byte of a token counts: a change anywhere, or the token of another
// secret, is refused; so is what is not a token at all.
func TestOpenRefusesTampering(t *testing.T) {
	t.Parallel()
	p := newPath(t, secret)
	now := time.Now()
	addrs := []string{"alice@example.com"}
	tok := tokenOf(t, p, p.For(returnpath.Send{Task: "t1", Email: addrs[0]}, now))
	_, err := p.Open(tok, now, purposes, addrs)
	require.NoError(t, err)
	for i := range tok {
		b := []byte(tok)
		b[i] = map[bool]byte{true: 'b', false: 'a'}[b[i] == 'a']
		// 20 bytes are 32 characters exactly: every character carries
		// five bits of the token.
		_, err := p.Open(string(b), now, purposes, addrs)
		assert.Error(t, err, "character %d changed", i)
	}
	forged := tokenOf(t, newPath(t, other), newPath(t, other).For(returnpath.Send{Task: "t1", Email: addrs[0]}, now))
	_, err = p.Open(forged, now, purposes, addrs)
	assert.ErrorIs(t, err, returnpath.ErrForged, "another secret")
	for _, bad := range []string{"", "abc", strings.Repeat("a", returnpath.TokenLen), strings.Repeat("1", returnpath.TokenLen), tok + "aa", tok[:31]} {
		_, err := p.Open(bad, now, purposes, addrs)
		assert.Error(t, err, "%q", bad)
	}
	_, err = newPath(t).Open(tok, now, purposes, addrs)
	assert.ErrorIs(t, err, returnpath.ErrMalformed, "a path without secrets opens nothing")
}

func TestOpenExpiry(t *testing.T) {
	t.Parallel()
	p := newPath(t, secret)
	sent := time.Date(2026, 3, 1, 10, 30, 0, 0, time.UTC)
	addrs := []string{"alice@example.com"}
	tok := tokenOf(t, p, p.For(returnpath.Send{Task: "t1", Email: addrs[0]}, sent))
	for _, tt := range []struct {
		now time.Time
		err error
	}{
		{sent, nil},
		{sent.Add(returnpath.Window), nil},
		{sent.Add(-time.Hour), nil}, // a worker's clock a little ahead
		{sent.Add(returnpath.Window + time.Hour), returnpath.ErrExpired},
		{sent.Add(-3 * time.Hour), returnpath.ErrExpired}, // from the future
	} {
		m, err := p.Open(tok, tt.now, purposes, addrs)
		if tt.err == nil {
			assert.NoError(t, err, "at %s", tt.now)
			continue
		}
		assert.ErrorIs(t, err, tt.err, "at %s", tt.now)
		assert.Equal(t, "alice@example.com", m.Exact, "an expired token still says whose it was")
	}
}

// During a rotation (secret,previous) tokens of both verify; new ones are
// signed with the new secret only.
func TestRotation(t *testing.T) {
	t.Parallel()
	now := time.Now()
	addrs := []string{"alice@example.com"}
	send := returnpath.Send{Task: "t1", Email: addrs[0]}
	old := newPath(t, previous)
	rotating := newPath(t, secret, previous)
	done := newPath(t, secret)

	oldTok := tokenOf(t, old, old.For(send, now))
	newTok := tokenOf(t, rotating, rotating.For(send, now))
	for _, tok := range []string{oldTok, newTok} {
		_, err := rotating.Open(tok, now, purposes, addrs)
		assert.NoError(t, err)
	}
	_, err := done.Open(newTok, now, purposes, addrs)
	assert.NoError(t, err, "new tokens are the new secret's")
	_, err = done.Open(oldTok, now, purposes, addrs)
	assert.ErrorIs(t, err, returnpath.ErrForged, "once the previous secret is dropped")
}

func TestNew(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		addr    string
		secrets [][]byte
		err     string
	}{
		{"bounces@example.com", nil, ""},
		{"bounces+x@example.com", nil, ""},
		{"bounces+x@example.com", [][]byte{secret}, `Address: the local part holds "+"`},
		{strings.Repeat("b", 31) + "@example.com", [][]byte{secret}, ""},
		{strings.Repeat("b", 32) + "@example.com", [][]byte{secret}, "at most 31"},
		{"Bounces <bounces@example.com>", nil, "not a bare address"},
		{"bóunces@example.com", nil, "not ASCII"},
		{"bounces@example.com", [][]byte{[]byte("short")}, "the secret: 5 bytes"},
		{"bounces@example.com", [][]byte{secret, bytes.Repeat([]byte("a"), 32)}, "the previous secret: one byte repeated"},
		{"bounces@example.com", [][]byte{secret, secret}, "Secrets: the previous secret is the same as the secret"},
		{"bounces@example.com", [][]byte{secret, previous, other}, "at most 2"},
	} {
		p, err := returnpath.New(tt.addr, tt.secrets...)
		if tt.err == "" {
			assert.NoError(t, err, tt.addr)
			continue
		}
		require.Error(t, err, tt.addr)
		assert.Contains(t, err.Error(), tt.err, tt.addr)
		assert.Nil(t, p)
		for _, s := range tt.secrets {
			assert.NotContains(t, err.Error(), string(s), "never the secret")
		}
	}
}

func TestTokenOf(t *testing.T) {
	t.Parallel()
	p := newPath(t, secret)
	tok := strings.Repeat("a", returnpath.TokenLen)
	for _, tt := range []struct {
		addr  string
		token string
		ours  bool
	}{
		{"bounces@bounce.example", "", true},
		{"<Bounces@BOUNCE.example>", "", true},
		{" bounces+" + tok + "@bounce.example ", tok, true},
		{"BOUNCES+" + strings.ToUpper(tok) + "@bounce.example", tok, true},
		{"bounces+x@bounce.example", "x", true}, // a token Open refuses
		{"bounces+@bounce.example", "", false},
		{"bounces-x@bounce.example", "", false},
		{"bouncesx@bounce.example", "", false},
		{"alice@bounce.example", "", false},
		{"bounces@other.example", "", false},
		{"bounces", "", false},
	} {
		token, ours := p.TokenOf(tt.addr)
		assert.Equal(t, tt.ours, ours, tt.addr)
		assert.Equal(t, tt.token, token, tt.addr)
	}
	bare := newPath(t)
	_, ours := bare.TokenOf("bounces+" + tok + "@bounce.example")
	assert.False(t, ours, "without secrets a VERP address is not the return path")
	assert.Equal(t, "bounces@bounce.example", bare.For(returnpath.Send{Task: "t1", Email: "a@example.com"}, time.Now()))
	assert.Equal(t, "bounces@bounce.example", p.For(returnpath.Send{Email: "a@example.com"}, time.Now()), "no task, no token")
}

func TestPathHidesSecrets(t *testing.T) {
	t.Parallel()
	p := newPath(t, secret)
	for _, s := range []string{fmt.Sprint(p), fmt.Sprintf("%v %+v %#v %s", p, p, p, p)} {
		assert.NotContains(t, s, string(secret))
		assert.NotContains(t, s, fmt.Sprintf("%x", secret))
	}
}

func TestSendID(t *testing.T) {
	t.Parallel()
	// The first 16 hex digits of SHA-1("task-1") (printf task-1 | sha1sum):
	// delivery's report script computes the same with redis.sha1hex.
	assert.Equal(t, "04dd758407493ffc", returnpath.SendID("task-1"))
}

func BenchmarkFor(b *testing.B) {
	p, err := returnpath.New("bounces@bounce.example", secret)
	require.NoError(b, err)
	s := returnpath.Send{Task: "0b8a7f4e-6f7e-4b8e-9d7a-1c2b3d4e5f60", Purpose: "login", Email: "alice@example.com"}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		_ = p.For(s, now)
	}
}
