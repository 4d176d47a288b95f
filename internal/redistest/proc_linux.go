package redistest

import "syscall"

// sysProcAttr has the kernel kill a redis-server child when the test binary
// dies without running its cleanups (a panic, go test's -timeout), so no
// process outlives the tests.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
