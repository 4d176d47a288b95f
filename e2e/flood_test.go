//go:build linux

package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/verifyq/verifyq/internal/redistest"
)

// flood opens n connections to addr from floodSources loopback addresses
// in turn, writes hello on each, and reports
// how many got a reply (at least want bytes) within wait: the connections
// the server accepted. Connections past the server's cap wait in its accept
// queue and get none; those past their source's share are reset. All are opened before any reply is awaited, so that
// the flood takes less time than the server's idle timeouts. Every
// connection stays open until end is called or the test ends.
func flood(t *testing.T, addr string, n int, hello []byte, want int, wait time.Duration) (replied int, end func()) {
	t.Helper()
	var (
		mu   sync.Mutex
		open []net.Conn
		wg   sync.WaitGroup
		next = make(chan int)
	)
	end = func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range open {
			_ = c.Close()
		}
	}
	t.Cleanup(end)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i%floodSources))}} //nolint:gosec // G115: 1..floodSources
				c, err := d.Dial("tcp", addr)
				if err != nil {
					continue // the accept queue is full: flooded all the same
				}
				mu.Lock()
				open = append(open, c)
				mu.Unlock()
				_, _ = c.Write(hello)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()

	var got atomic.Int64
	deadline := time.Now().Add(wait)
	for _, c := range open {
		wg.Go(func() {
			_ = c.SetReadDeadline(deadline)
			if _, err := io.ReadAtLeast(c, make([]byte, want), want); err == nil {
				got.Add(1)
			}
			_ = c.SetReadDeadline(time.Time{})
		})
	}
	wg.Wait()
	t.Logf("%s: %d connections open, %d answered", addr, len(open), got.Load())
	return int(got.Load()), end
}

// floodSources are the addresses a flood comes from (127.0.1.1 to
// 127.0.1.32; Linux routes all of 127/8 to the loopback interface): enough
// that their shares (MAX_CONNECTIONS_PER_SOURCE) add up to more than the
// cap.
const floodSources = 32

// procStatus returns a field of /proc/<pid>/status in kB (VmRSS, VmHWM).
func procStatus(t *testing.T, pid int, field string) int {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			require.NoError(t, err)
			return kb
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// openFiles returns how many file descriptors pid has open.
func openFiles(t *testing.T, pid int) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	require.NoError(t, err)
	return len(fds)
}

// Each public listener holds at most MAX_CONNECTIONS connections, so a flood of idle connections
// from many sources, more
// than the process has file descriptors, leaves descriptors for the admin
// server: /healthz and /readyz answer within 1 s, memory stays small, and
// the API serves again once the flood is gone.
func TestConnectionFloodLeavesAdminAnswering(t *testing.T) {
	t.Parallel()
	const (
		fdLimit  = 512
		connCap  = 150       // MAX_CONNECTIONS, on each listener
		httpConn = 600       // more than the cap and than fdLimit
		grpcConn = 200       // more than the cap
		maxRSS   = 200 << 10 // kB
	)
	rds := redistest.Start(t)
	p := start(t, "enqueuer", map[string]string{"REDIS_URL": rds.URL(), "MAX_CONNECTIONS": strconv.Itoa(connCap)})
	api, grpcAddr, admin := p.env["HTTP_ADDR"], p.env["GRPC_ADDR"], p.env["ADMIN_ADDR"]
	pid := p.cmd.Process.Pid
	// ulimit -n 512 for the running enqueuer alone (soft and hard, so
	// nothing can raise it again).
	require.NoError(t, unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: fdLimit, Max: fdLimit}, nil))
	var lim unix.Rlimit
	require.NoError(t, unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &lim))
	require.Equal(t, uint64(fdLimit), lim.Cur)
	rssBefore := procStatus(t, pid, "VmRSS")

	// Idle keep-alive connections: one request each (404: no such path),
	// then nothing. Only the first connCap are served.
	answered, endHTTP := flood(t, api, httpConn, []byte("GET /flood HTTP/1.1\r\nHost: verifyq\r\n\r\n"), len("HTTP/1.1 404"), 3*time.Second)
	assert.Equal(t, connCap, answered, "HTTP connections served: the cap")
	// gRPC connections that sent the HTTP/2 preface and empty SETTINGS:
	// only the first connCap get the server's SETTINGS.
	preface := append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)
	answered, endGRPC := flood(t, grpcAddr, grpcConn, preface, 9, 3*time.Second)
	assert.Equal(t, connCap, answered, "gRPC connections served: the cap")

	fds := openFiles(t, pid)
	t.Logf("enqueuer: %d of %d file descriptors open", fds, fdLimit)
	assert.Less(t, fds, fdLimit, "descriptors left over")

	probe := &http.Client{Timeout: time.Second}
	for range 5 {
		for _, path := range []string{"/healthz", "/readyz"} {
			start := time.Now()
			res, err := probe.Get("http://" + admin + path)
			require.NoError(t, err, "admin %s under the flood", path)
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			assert.Equal(t, http.StatusOK, res.StatusCode, path)
			t.Logf("admin %s: %d in %s", path, res.StatusCode, time.Since(start))
		}
	}

	rss := procStatus(t, pid, "VmRSS")
	t.Logf("enqueuer RSS: %d kB before the flood, %d kB under it", rssBefore, rss)
	assert.Less(t, rss, maxRSS, "memory stays bounded")

	// The flood gone, the API serves again.
	endHTTP()
	endGRPC()
	require.Eventually(t, func() bool {
		res, err := probe.Get("http://" + api + "/flood")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusNotFound
	}, 10*time.Second, 50*time.Millisecond, "the API answers after the flood")
}
