// Package authtest makes callers for tests: API keys with scopes, and the
// Guard that admits them, as an API_KEYS_FILE of their lines would.
package authtest

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/auth"
)

// Callers returns the Guard of cfg with a key for each "name scopes" pair
// (e.g. "gateway send,verify"), and each name's key.
func Callers(t testing.TB, cfg auth.Config, pairs ...string) (*auth.Guard, map[string]string) {
	t.Helper()
	keyOf := map[string]string{}
	var lines []string
	for _, p := range pairs {
		name, scopes, _ := strings.Cut(p, " ")
		key, line, err := auth.NewKey(name, scopes)
		require.NoError(t, err)
		keyOf[name] = key
		lines = append(lines, line)
	}
	keys, err := auth.Parse(strings.NewReader(strings.Join(lines, "\n")))
	require.NoError(t, err)
	cfg.Keys = keys
	return auth.New(cfg), keyOf
}
