package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bounds of the start-up of one process and of the polls that follow it.
const (
	// nodeStartTimeout bounds the wait for a started redis-server to answer
	// PING.
	nodeStartTimeout = 10 * time.Second
	// pollInterval is the pause between two looks at a deployment that is
	// coming up or failing over.
	pollInterval = 25 * time.Millisecond
	// probeTimeout bounds one command of a poll.
	probeTimeout = 500 * time.Millisecond
	// checkTimeout bounds one look of a poll, which may ask several nodes.
	checkTimeout = 2 * time.Second
	// logTailLines is how many lines of a node's log an error quotes.
	logTailLines = 15
	// portAttempts is how many times a deployment picks new ports when a
	// port it picked was taken before its redis-server could bind it.
	portAttempts = 3
)

// errPortTaken marks a start that failed because another process bound the
// port between freePorts and redis-server; a fresh set of ports fixes it.
var errPortTaken = errors.New("port taken")

// node is one redis-server child process of a Cluster or a Sentinel
// deployment, with its own directory and log file. Kill and start may be
// called any number of times; the port and the directory stay.
type node struct {
	role string   // what the node is, for errors: "cluster node", "sentinel" ...
	port int      // client port on 127.0.0.1
	dir  string   // working directory: nodes.conf, sentinel.conf, AOF, log
	args []string // redis-server arguments, after the binary

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has been waited for
}

func (n *node) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }

func (n *node) logPath() string { return filepath.Join(n.dir, "redis.log") }

// outPath is the file that takes the process's stdout and stderr: what it
// says before it opens its log, such as an error in its configuration.
func (n *node) outPath() string { return filepath.Join(n.dir, "redis.out") }

// start runs the process and waits until it answers PING. A process that
// exits first, or does not answer in time, is an error quoting its log.
func (n *node) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("%s %s: already running", n.role, n.addr())
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return fmt.Errorf("redis-server not found on PATH (apt-get install redis-server): %w", err)
	}
	cmd := exec.Command(bin, n.args...) //nolint:gosec // G204: bin is redis-server from PATH, every argument is chosen by this package
	cmd.Dir = n.dir
	cmd.SysProcAttr = sysProcAttr()
	out, err := os.OpenFile(n.outPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("%s %s: %w", n.role, n.addr(), err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Start()
	_ = out.Close() // the child has its own descriptor
	if err != nil {
		return fmt.Errorf("%s %s: %w", n.role, n.addr(), err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	n.cmd, n.exited = cmd, exited

	deadline := time.Now().Add(nodeStartTimeout)
	for {
		select {
		case <-exited:
			n.cmd, n.exited = nil, nil
			tail := n.logTail()
			if strings.Contains(tail, "Address already in use") {
				return fmt.Errorf("%s %s exited: %w\n%s", n.role, n.addr(), errPortTaken, tail)
			}
			return fmt.Errorf("%s %s exited at start; its log ends:\n%s", n.role, n.addr(), tail)
		default:
		}
		own, err := answers(n.addr(), cmd.Process.Pid)
		if err == nil && own {
			return nil
		}
		if err == nil {
			// Another process took the port first and answers in the
			// node's place; the node itself exits, unable to bind it.
			n.killLocked()
			return fmt.Errorf("%s %s: another server answers on its port: %w", n.role, n.addr(), errPortTaken)
		}
		if time.Now().After(deadline) {
			n.killLocked()
			return fmt.Errorf("%s %s did not answer PING within %v (%w); its log ends:\n%s",
				n.role, n.addr(), nodeStartTimeout, err, n.logTail())
		}
		time.Sleep(pollInterval)
	}
}

// ping checks that the node at addr answers PING. It dials with net first,
// so that a port not yet listening makes no go-redis dial-failure log line.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, probeTimeout)
	if err != nil {
		return err
	}
	_ = conn.Close()
	c := probe(addr)
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	return c.Ping(ctx).Err()
}

// answers reports whether the server answering on addr is the process
// pid: a server that took the port first would answer PING as well.
func answers(addr string, pid int) (bool, error) {
	if err := ping(addr); err != nil {
		return false, err
	}
	c := probe(addr)
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return false, err
	}
	return strings.Contains(info, "process_id:"+strconv.Itoa(pid)+"\r\n"), nil
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (n *node) kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.killLocked()
}

func (n *node) killLocked() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.exited
	n.cmd, n.exited = nil, nil
}

// running reports whether the process was started and not killed.
func (n *node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// pid is the process id, or 0 when the node is not running.
func (n *node) pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// logTail is the last lines of the node's output and of its log file,
// indented, for errors.
func (n *node) logTail() string {
	var parts []string
	for _, path := range []string{n.outPath(), n.logPath()} {
		b, err := os.ReadFile(path) //nolint:gosec // G304: the node's own files in the directory this package made
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				parts = append(parts, "    ("+err.Error()+")")
			}
			continue
		}
		text := strings.TrimRight(string(b), "\n")
		if text == "" {
			continue
		}
		lines := strings.Split(text, "\n")
		if len(lines) > logTailLines {
			lines = lines[len(lines)-logTailLines:]
		}
		prefix := "    " + n.addr() + " " + filepath.Base(path) + " | "
		parts = append(parts, prefix+strings.Join(lines, "\n"+prefix))
	}
	if len(parts) == 0 {
		return "    (" + n.addr() + " wrote nothing)"
	}
	return strings.Join(parts, "\n")
}

// logTails joins the log tails of nodes, for an error about all of them.
func logTails(nodes []*node) string {
	parts := make([]string, 0, len(nodes))
	for _, n := range nodes {
		parts = append(parts, n.role+" "+n.addr()+":\n"+n.logTail())
	}
	return strings.Join(parts, "\n")
}

// freePorts returns n distinct ports that were free on 127.0.0.1. All
// listeners stay open until every port is chosen, so no port comes twice.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitFor calls check every pollInterval until it returns nil or timeout
// passes; then the error is what, the last check's error and hint().
func waitFor(timeout time.Duration, what string, check func(ctx context.Context) error, hint func() string) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
		err := check(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %v: %w\n%s", what, timeout, err, hint())
		}
		time.Sleep(pollInterval)
	}
}

// probeOptions are the options of a client for one look at one node: one
// attempt, short timeouts, no retries of a failed dial. Such a client is
// made for each look and closed after it, as a pool that failed to dial
// answers with that error for a while without dialling again. A look
// dials at most once, so with a pool of two go-redis never starts its
// background redial (a goroutine that would outlive Close by up to a second
// and fail the goleak checks of the tests that start a server).
func probeOptions(addr string) *redis.Options {
	return &redis.Options{
		Addr: addr, MaxRetries: -1, DialerRetries: 1, DialTimeout: probeTimeout,
		ReadTimeout: probeTimeout, WriteTimeout: probeTimeout, PoolSize: 2,
	}
}

// probe is a client for one look at the node at addr (see probeOptions).
func probe(addr string) *redis.Client { return redis.NewClient(probeOptions(addr)) }

// pidsOf is the process id of every running node of nodes.
func pidsOf(nodes []*node) []int {
	var pids []int
	for _, n := range nodes {
		if p := n.pid(); p != 0 {
			pids = append(pids, p)
		}
	}
	return pids
}
