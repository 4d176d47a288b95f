package mtatest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// ownerFile, in an instance's directory, holds the pid of the test binary
// that started it.
const ownerFile = "owner.pid"

var reapOnce sync.Once

// reapOrphans stops and removes the instances whose test binary died
// without its cleanups (a panic, go test's -timeout): postfix start leaves
// its master to whoever adopts it, so nothing else would. It runs once per
// test binary, before its first Start.
func reapOrphans() {
	reapOnce.Do(func() {
		dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "mtatest-*"))
		for _, dir := range dirs {
			owner, err := os.ReadFile(filepath.Join(dir, ownerFile)) //nolint:gosec // G304: a directory this package makes
			if err != nil {
				continue // not an instance, or one being set up
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(owner)))
			if err != nil || running(pid) {
				continue
			}
			l := newLayout(dir)
			ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
			_ = run(ctx, "postfix", "-c", l.conf, "abort")
			cancel()
			if pid, err := readPID(l); err == nil {
				_ = waitExit(pid, stopTimeout)
			}
			_ = os.RemoveAll(dir)
		}
	})
}

// readPID reads the pid of an instance's master.
func readPID(l layout) (int, error) {
	b, err := os.ReadFile(l.queue + "/pid/master.pid")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
