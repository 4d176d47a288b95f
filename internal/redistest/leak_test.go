package redistest

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Close ends every process of a deployment and removes its directories.
func TestCloseLeavesNoProcessNorDirectory(t *testing.T) {
	t.Parallel()
	type started struct {
		close func()
		pids  []int
		dir   string
	}
	var all []started
	srv, err := New()
	require.NoError(t, err)
	all = append(all, started{srv.Close, pidsOf([]*node{srv.n}), srv.n.dir})
	cl, err := NewCluster()
	require.NoError(t, err)
	all = append(all, started{cl.Close, cl.pids(), cl.dir})
	se, err := NewSentinel()
	require.NoError(t, err)
	all = append(all, started{se.Close, se.pids(), se.dir})

	for _, s := range all {
		require.NotEmpty(t, s.pids)
		for _, pid := range s.pids {
			require.True(t, alive(pid), "pid %d runs before Close", pid)
		}
		require.DirExists(t, s.dir)
		s.close()
		for _, pid := range s.pids {
			assert.False(t, alive(pid), "pid %d is gone after Close", pid)
		}
		assert.NoDirExists(t, s.dir)
	}
	assert.Equal(t, 1+ClusterMasters+2+SentinelCount, len(all[0].pids)+len(all[1].pids)+len(all[2].pids))
}

const orphanEnv = "REDISTEST_ORPHAN_PARENT"

// A test binary that dies without its cleanups (a panic, go test -timeout)
// takes its redis-server children with it.
func TestChildrenDieWithTheTestBinary(t *testing.T) {
	if os.Getenv(orphanEnv) == "1" {
		// The child: start a server, say its pid, and exit without Close.
		s, err := New()
		if err != nil {
			t.Fatal(err)
		}
		_, _ = os.Stdout.WriteString("pid=" + strconv.Itoa(s.n.pid()) + "\ndir=" + s.n.dir + "\n")
		os.Exit(0)
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildrenDieWithTheTestBinary$")
	cmd.Env = append(os.Environ(), orphanEnv+"=1")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	pid := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "pid="); ok {
			pid, err = strconv.Atoi(v)
			require.NoError(t, err)
		}
		if v, ok := strings.CutPrefix(sc.Text(), "dir="); ok && strings.Contains(v, "verifyq-redis-") {
			t.Cleanup(func() { _ = os.RemoveAll(v) }) // the child could not remove it
		}
	}
	require.NoError(t, cmd.Wait())
	require.NotZero(t, pid, "the child reported its redis-server")
	assert.Eventually(t, func() bool { return !alive(pid) }, 5*time.Second, 20*time.Millisecond,
		"redis-server %d died with the process that started it", pid)
	if alive(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// alive reports whether pid is a process that has not exited; a zombie
// waiting to be reaped by init counts as exited.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
