package mail

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// isPlainAddress takes the common addresses, and leaves to the full checks
// everything it is not sure of.
func TestIsPlainAddress(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"a@b", "user@example.com", "Mixed.Case+tag_x-y@Sub-1.Example.COM", "x@localhost", "1@2.3",
		strings.Repeat("a", maxLocalPartLen) + "@" + strings.Repeat("b", 63) + ".example",
		"a@" + strings.Repeat(strings.Repeat("b", 62)+".", 3) + strings.Repeat("c", maxAddressLen-2-3*63),
	} {
		assert.True(t, isPlainAddress(s), "%q", s)
		assert.NoError(t, validateAddress(s), "%q", s)
	}
	for _, s := range []string{
		"", "@", "a@", "@b", "a@b@c", ".a@b", "a.@b", "a..b@c", "a@.b", "a@b.", "a@b..c", "a@-b", "a@b-", "a@b-.c",
		"a@b--c", "a@xn--bcher-kva.example", "a b@c", `"a"@b`, "a@[127.0.0.1]", "a@b_c", "a!b@c", "用户@例子.广告",
		"a\r\n@b", strings.Repeat("a", maxLocalPartLen+1) + "@b", "a@" + strings.Repeat("b", 64),
		"a@" + strings.Repeat("b.", 127) + "c",
	} {
		assert.False(t, isPlainAddress(s), "%q", s)
	}
}

// Every address isPlainAddress takes passes every check.
func FuzzIsPlainAddress(f *testing.F) {
	for _, s := range []string{"user@example.com", "a.b+c_d-e@x-y.z", "a@b--c", "a@b-.c", ".a@b", "x@localhost"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if isPlainAddress(s) {
			if err := validateAddress(s); err != nil {
				t.Fatalf("isPlainAddress(%q), but %v", s, err)
			}
		}
	})
}
