package codes_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
)

// secret returns a test secret of MinSecretLen bytes, one for each b.
func secret(b byte) []byte {
	s := sha256.Sum256([]byte{b})
	return s[:]
}

func newSeal(t *testing.T, cur, prev []byte) *codes.Seal {
	t.Helper()
	s, err := codes.NewSeal(cur, prev)
	require.NoError(t, err)
	return s
}

func TestSealedStoreKeepsNoCode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	seal := newSeal(t, secret(1), nil)
	s, rdb := newStore(t, codes.Config{Seal: seal, MaxAttempts: 3})
	id := codes.ID{Purpose: "reset_password", Email: "a@example.com"}

	got, err := s.GetOrCreate(ctx, id)
	require.NoError(t, err)
	require.Len(t, got.Code, 6)
	v, err := rdb.Get(ctx, s.Key(id)).Result()
	require.NoError(t, err)
	assert.Equal(t, seal.MAC(id, got.Code), v, "Redis keeps the MAC")
	assert.NotContains(t, v, got.Code)
	assert.Len(t, v, 64)
	assert.NotContains(t, got.Sealed, got.Code)
	open, err := seal.Decrypt(id, got.Sealed)
	require.NoError(t, err)
	assert.Equal(t, got.Code, open, "the task's sealed code opens to the code")
	_, err = seal.Decrypt(codes.ID{Email: id.Email}, got.Sealed)
	assert.ErrorIs(t, err, codes.ErrSealed, "bound to its purpose and address")

	// The MAC is bound to the key: moved to another address it verifies not.
	require.NoError(t, rdb.Set(ctx, "code_b@example.com", v, time.Minute).Err())
	assert.ErrorIs(t, s.Verify(ctx, codes.ID{Email: "b@example.com"}, got.Code), codes.ErrMismatch)

	// The stored MAC itself is no code.
	assert.ErrorIs(t, s.Verify(ctx, id, v), codes.ErrMismatch)
	n, err := rdb.Get(ctx, s.AttemptsKey(id)).Int()
	require.NoError(t, err)
	assert.Equal(t, 1, n, "a wrong code counts an attempt")
	require.NoError(t, s.Verify(ctx, id, got.Code))
	assert.ErrorIs(t, s.Verify(ctx, id, got.Code), codes.ErrNotFound)
}

func TestSealRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	old := newSeal(t, secret(1), nil)
	s, rdb := newStore(t, codes.Config{Seal: old})
	id := codes.ID{Email: "a@example.com"}
	issued, err := s.GetOrCreate(ctx, codes.ID{Email: id.Email})
	require.NoError(t, err)
	other, err := s.GetOrCreate(ctx, codes.ID{Email: "b@example.com"})
	require.NoError(t, err)

	rotated := newSeal(t, secret(2), secret(1))
	s2, err := codes.NewStore(rdb, codes.Config{KeyPrefix: "code_", TTL: time.Minute, Length: 6, Seal: rotated})
	require.NoError(t, err)
	open, err := rotated.Decrypt(id, issued.Sealed)
	require.NoError(t, err, "the previous secret opens what it sealed")
	assert.Equal(t, issued.Code, open)
	assert.True(t, rotated.Matches(id, issued.Code, rdb.Get(ctx, s.Key(id)).Val()))
	require.NoError(t, s2.Verify(ctx, id, issued.Code), "the previous secret verifies")

	// Without the previous secret, the old code neither verifies nor opens.
	newOnly := newSeal(t, secret(2), nil)
	s3, err := codes.NewStore(rdb, codes.Config{KeyPrefix: "code_", TTL: time.Minute, Length: 6, Seal: newOnly})
	require.NoError(t, err)
	assert.ErrorIs(t, s3.Verify(ctx, codes.ID{Email: "b@example.com"}, other.Code), codes.ErrMismatch)
	_, err = newOnly.Decrypt(codes.ID{Email: "b@example.com"}, other.Sealed)
	assert.ErrorIs(t, err, codes.ErrSealed)
}

func TestSealInputs(t *testing.T) {
	t.Parallel()
	_, err := codes.NewSeal(make([]byte, codes.MinSecretLen-1), nil)
	assert.Error(t, err)
	_, err = codes.NewSeal(secret(1), secret(1))
	assert.Error(t, err, "previous equal to current")
	_, err = codes.NewSeal(secret(1), []byte("short"))
	assert.Error(t, err)
	// A placeholder, not a random secret: one byte repeated, as the
	// current or the previous secret, raw or as text.
	for _, weak := range [][]byte{make([]byte, codes.MinSecretLen), bytes.Repeat([]byte("a"), 64), bytes.Repeat([]byte{0xff}, codes.MaxSecretLen)} {
		_, err := codes.NewSeal(weak, nil)
		require.ErrorContains(t, err, "one byte repeated")
		_, err = codes.NewSeal(secret(1), weak)
		require.ErrorContains(t, err, "previous secret: one byte repeated")
		assert.ErrorContains(t, codes.ValidateSecret(weak), "one byte repeated")
		for _, text := range []string{hex.EncodeToString(weak), base64.StdEncoding.EncodeToString(weak)} {
			_, err := codes.ParseSecret(text)
			require.ErrorContains(t, err, "one byte repeated")
			assert.NotContains(t, err.Error(), text[:16], "the secret is not echoed")
		}
	}
	assert.NoError(t, codes.ValidateSecret(append(make([]byte, codes.MinSecretLen-1), 1)), "one byte apart is enough for the rule")
	assert.ErrorContains(t, codes.ValidateSecret(nil), "0 bytes")

	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	for _, text := range []string{hex.EncodeToString(raw), base64.StdEncoding.EncodeToString(raw), base64.RawURLEncoding.EncodeToString(raw), " " + hex.EncodeToString(raw) + "\n"} {
		got, err := codes.ParseSecret(text)
		require.NoError(t, err, text)
		assert.Equal(t, raw, got)
	}
	for _, text := range []string{"", "00", strings.Repeat("!?", 40), hex.EncodeToString(raw[:31])} {
		_, err := codes.ParseSecret(text)
		require.Error(t, err)
		if text != "" {
			assert.NotContains(t, err.Error(), text, "the secret is not echoed")
		}
	}
	seal := newSeal(t, secret(1), nil)
	for _, bad := range []string{"", "nodot", "00000000.!!", "00000000.AAAA"} {
		_, err := seal.Decrypt(codes.ID{Email: "a@example.com"}, bad)
		assert.ErrorIs(t, err, codes.ErrSealed, bad)
	}
	assert.NotContains(t, seal.String(), "\x01")
}
