package codes

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/verifyq/verifyq/internal/slot"
)

// besideKey names a key of verifyq's own that lives in the slot of codeKey,
// so that one script may use both: "{code_<email>}:suffix" for an address
// without braces (readable, and what gateways expect), else a tag of the
// same slot and a hash of the code key, since braces in the address would
// move "{code_<email>}" to another slot.
func besideKey(codeKey, suffix string) string {
	if !strings.ContainsAny(codeKey, "{}") {
		return "{" + codeKey + "}:" + suffix
	}
	sum := sha256.Sum256([]byte(codeKey))
	return "{" + slot.Tag(slot.Of(codeKey)) + "}:" + hex.EncodeToString(sum[:12]) + ":" + suffix
}
