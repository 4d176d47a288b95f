package codes

// Every script of this package touches the keys of the code's Redis
// Cluster slot, which each key names by its hash tag (the part in braces):
// code_<email>, {code_<email>}:attempts and {code_<email>}:status (for a
// named purpose code_<purpose>:<email>, {code_<purpose>:<email>}:attempts
// and so on; see ID), the only keys besides the code's that hold the
// address (for an address with braces, which would move that tag to
// another slot, a tag of the code key's slot and a hash: see besideKey).
// The limits' keys live in slots of their own (package limits). On one
// Redis the tags change nothing.

// Keys names the keys of a code's slot, under a key prefix.
type Keys struct{ prefix string }

// NewKeys returns the keys under keyPrefix, checked with ValidateKeyPrefix.
// That is all the worker needs to find a code and its status.
func NewKeys(keyPrefix string) (Keys, error) {
	if err := ValidateKeyPrefix(keyPrefix); err != nil {
		return Keys{}, err
	}
	return Keys{prefix: keyPrefix}, nil
}

// Key is the Redis key of id's code: for the default purpose the prefix and
// the address, as the old gateway reads it; for a named one the prefix, the
// purpose, ":" and the address.
func (k Keys) Key(id ID) string {
	if id.Purpose == "" {
		return k.prefix + id.Email
	}
	return k.prefix + id.Purpose + ":" + id.Email
}

// AttemptsKey counts wrong codes for the live code of id.
func (k Keys) AttemptsKey(id ID) string { return besideKey(k.Key(id), "attempts") }

// StatusKey holds the delivery status of id's code (package delivery).
func (k Keys) StatusKey(id ID) string { return besideKey(k.Key(id), "status") }
