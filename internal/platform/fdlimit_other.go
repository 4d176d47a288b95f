//go:build !unix

package platform

// OpenFileLimit reports false: there is no RLIMIT_NOFILE to read here.
func OpenFileLimit() (uint64, bool) { return 0, false }
