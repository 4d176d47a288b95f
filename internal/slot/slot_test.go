package slot

import "testing"

// Of agrees with Redis Cluster's slot function, by the examples of the
// cluster specification.
func TestOf(t *testing.T) {
	for key, want := range map[string]int{
		"123456789":            12739, // CRC16/XMODEM check value 0x31C3
		"{user1000}.following": Of("user1000"),
		"foo{}{bar}":           Of("foo{}{bar}"), // empty first tag: the whole key
		"foo{{bar}}zap":        Of("{bar"),
		"foo{bar}{zap}":        Of("bar"),
	} {
		if got := Of(key); got != want {
			t.Errorf("Of(%q) = %d, want %d", key, got, want)
		}
	}
	if got := int(crc16("123456789")); got != 0x31C3 {
		t.Fatalf("crc16 check value %#x", got)
	}
}

// Every slot has a tag, and the tag lands in it.
func TestTag(t *testing.T) {
	for s := range Count {
		tag := Tag(s)
		if tag == "" || Of("{"+tag+"}:x") != s {
			t.Fatalf("Tag(%d) = %q, in slot %d", s, tag, Of("{"+tag+"}:x"))
		}
	}
}
