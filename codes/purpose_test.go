package codes_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/field"
)

func TestNilPurposesAreTheDefaults(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t, codes.Config{})
	for _, p := range codes.DefaultPurposes {
		_, err := s.GetOrCreate(ctx, codes.ID{Email: "a@example.com", Purpose: p})
		assert.NoError(t, err, p)
	}
	none, _ := newStore(t, codes.Config{Purposes: map[string]time.Duration{}})
	_, err := none.GetOrCreate(ctx, codes.ID{Email: "a@example.com", Purpose: "register"})
	assert.ErrorIs(t, err, codes.ErrInvalidPurpose)
}

func TestValidatePurposes(t *testing.T) {
	t.Parallel()
	assert.NoError(t, codes.ValidatePurposes(nil))
	assert.NoError(t, codes.ValidatePurposes(map[string]time.Duration{"a": 0, "reset_password": time.Second}))
	for name, tc := range map[string]struct {
		purposes map[string]time.Duration
		field    string
	}{
		"empty":     {map[string]time.Duration{"": 0}, "Purposes"},
		"upper":     {map[string]time.Duration{"Reset": 0}, "Purposes"},
		"colon":     {map[string]time.Duration{"a:b": 0}, "Purposes"},
		"too long":  {map[string]time.Duration{"a234567890123456789012345678901234": 0}, "Purposes"},
		"short ttl": {map[string]time.Duration{"login": time.Millisecond}, "TTL_LOGIN"},
	} {
		err := codes.ValidatePurposes(tc.purposes)
		var fe *field.Error
		require.True(t, errors.As(err, &fe), name)
		assert.Equal(t, tc.field, fe.Field, name)
	}
	many := map[string]time.Duration{}
	for i := range codes.MaxPurposes + 1 {
		many["p"+string(rune('a'+i%26))+string(rune('a'+i/26))] = 0
	}
	assert.Error(t, codes.ValidatePurposes(many))
	_, err := codes.NewStore(nil, codes.Config{KeyPrefix: "code_", TTL: time.Minute, Length: 6, Purposes: map[string]time.Duration{"Bad": 0}})
	assert.Error(t, err)
}

func TestValidatePurpose(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"", "login", "reset_password", "change_email", "a1", strings.Repeat("a", 32)} {
		assert.NoError(t, codes.ValidatePurpose(ok), "%q", ok)
	}
	for _, bad := range []string{"1a", "_a", "Login", "a-b", "a b", "a/b", "..", "é", strings.Repeat("a", 33)} {
		assert.Error(t, codes.ValidatePurpose(bad), "%q", bad)
	}
}
