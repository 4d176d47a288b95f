package codes

import (
	"testing"
)

// The slot function agrees with Redis Cluster's, by the examples of the
// cluster specification and a few of our own keys.
func TestSlotOf(t *testing.T) {
	for key, want := range map[string]int{
		"123456789":            12739, // CRC16/XMODEM check value 0x31C3
		"{user1000}.following": slotOf("user1000"),
		"foo{}{bar}":           slotOf("foo{}{bar}"), // empty first tag: the whole key
		"foo{{bar}}zap":        slotOf("{bar"),
		"foo{bar}{zap}":        slotOf("bar"),
	} {
		if got := slotOf(key); got != want {
			t.Errorf("slotOf(%q) = %d, want %d", key, got, want)
		}
	}
	if got := int(crc16("123456789")); got != 0x31C3 {
		t.Fatalf("crc16 check value %#x", got)
	}
}

// Keys beside a code key share its slot, braces in the address or not.
func TestBesideKeySharesTheSlot(t *testing.T) {
	r := Keys{prefix: "code_"}
	for _, email := range []string{"a@example.com", "a}b@example.com", "{x}@example.com", "a{b@example.com", "}{@x", "{}@x"} {
		code := r.Key(ID{Email: email})
		for _, k := range []string{r.AttemptsKey(ID{Email: email}), r.StatusKey(ID{Email: email})} {
			if slotOf(k) != slotOf(code) {
				t.Errorf("%q: %q is in slot %d, the code key %q in %d", email, k, slotOf(k), code, slotOf(code))
			}
		}
	}
	if got := r.StatusKey(ID{Email: "a@example.com"}); got != "{code_a@example.com}:status" {
		t.Errorf("plain addresses keep the readable form, got %q", got)
	}
}
