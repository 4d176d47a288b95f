//go:build !linux

package redistest

import "syscall"

// sysProcAttr is nil where the kernel cannot kill a child with its parent;
// the tests' cleanups stop every process they started.
func sysProcAttr() *syscall.SysProcAttr { return nil }
