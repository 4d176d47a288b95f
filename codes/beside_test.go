package codes

import (
	"testing"

	"github.com/verifyq/verifyq/internal/slot"
)

// Keys beside a code key share its slot, braces in the address or not.
func TestBesideKeySharesTheSlot(t *testing.T) {
	r := Keys{prefix: "code_"}
	for _, email := range []string{"a@example.com", "a}b@example.com", "{x}@example.com", "a{b@example.com", "}{@x", "{}@x"} {
		code := r.Key(ID{Email: email})
		for _, k := range []string{r.AttemptsKey(ID{Email: email}), r.StatusKey(ID{Email: email})} {
			if slot.Of(k) != slot.Of(code) {
				t.Errorf("%q: %q is in slot %d, the code key %q in %d", email, k, slot.Of(k), code, slot.Of(code))
			}
		}
	}
	if got := r.StatusKey(ID{Email: "a@example.com"}); got != "{code_a@example.com}:status" {
		t.Errorf("plain addresses keep the readable form, got %q", got)
	}
}
