package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// build compiles the enqueuer and the worker from the module at root into
// dir, so that every run measures binaries built from the tree as it is.
func build(ctx context.Context, root, dir string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(os.PathSeparator), "./cmd/enqueuer", "./cmd/worker")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}

// proc is one binary started by the harness.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan error
	// admin is its ADMIN_ADDR.
	admin string

	stopOnce sync.Once
	stopErr  error
}

// startProc runs bin with env (and PATH), its output appended to logPath,
// and waits until its admin server reports ready.
func startProc(ctx context.Context, name, bin, logPath string, env map[string]string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, err
	}
	p := &proc{name: name, cmd: cmd, log: f, done: make(chan error, 1), admin: env["ADMIN_ADDR"]}
	go func() { p.done <- cmd.Wait() }()
	if err := waitReady(ctx, p, 20*time.Second); err != nil {
		_ = p.stop(5 * time.Second)
		return nil, err
	}
	return p, nil
}

func waitReady(ctx context.Context, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("%s exited before it was ready: %v (log: %s)", p.name, err, p.log.Name())
		default:
		}
		res, err := client.Get("http://" + p.admin + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s (log: %s)", p.name, timeout, p.log.Name())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pid is the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM and waits up to timeout for a clean exit, then kills.
// Later calls return the first one's result.
func (p *proc) stop(timeout time.Duration) error {
	p.stopOnce.Do(func() { p.stopErr = p.doStop(timeout) })
	return p.stopErr
}

func (p *proc) doStop(timeout time.Duration) error {
	defer p.log.Close()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			return fmt.Errorf("%s: %w (log: %s)", p.name, err, p.log.Name())
		}
		return nil
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %s after SIGTERM", p.name, timeout)
	}
}

// peakRSS returns VmHWM of pid, the peak resident set size, in bytes.
func peakRSS(pid int) (int64, error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM in /proc/pid/status")
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/pid/stat; 100
// on every Linux this runs on.
const clockTicks = 100

// cpuTime returns the user plus system CPU time pid has used so far.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after its ')' are
	// fixed: utime and stime are fields 14 and 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc/pid/stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("malformed /proc/pid/stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// machineCPU returns the busy and the stolen CPU time of the whole machine
// so far, all cores together, from the first line of /proc/stat.
func machineCPU() (busy, steal time.Duration, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, errors.New("malformed /proc/stat")
	}
	var v [8]int64
	for i := range v {
		if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return 0, 0, err
		}
	}
	tick := func(n int64) time.Duration { return time.Duration(n) * time.Second / clockTicks }
	// user + nice + system + irq + softirq; idle, iowait and steal are not busy.
	return tick(v[0] + v[1] + v[2] + v[5] + v[6]), tick(v[7]), nil
}

// Names of the machine-wide entries of a cpuMeter reading.
const (
	cpuOthers = "others"
	cpuSteal  = "steal"
)

// cpuMeter measures the CPU used by a set of processes, and by everything
// else on the machine, over an interval.
type cpuMeter struct {
	pids          map[string]int
	start         map[string]time.Duration
	busy0, steal0 time.Duration
	at            time.Time
}

func newCPUMeter(pids map[string]int) *cpuMeter {
	m := &cpuMeter{pids: pids, start: map[string]time.Duration{}, at: time.Now()}
	for name, pid := range pids {
		m.start[name], _ = cpuTime(pid)
	}
	m.busy0, m.steal0, _ = machineCPU()
	return m
}

// read returns each process's CPU use since newCPUMeter as a share of one
// core (1.0 is one core busy all the time), plus cpuOthers, what every
// other process on the machine used, and cpuSteal, the time the
// hypervisor gave the machine's cores to someone else.
func (m *cpuMeter) read() map[string]float64 {
	wall := time.Since(m.at)
	out := map[string]float64{}
	var ours time.Duration
	for name, pid := range m.pids {
		now, err := cpuTime(pid)
		if err != nil {
			continue
		}
		ours += now - m.start[name]
		out[name] = float64(now-m.start[name]) / float64(wall)
	}
	if busy, steal, err := machineCPU(); err == nil {
		out[cpuOthers] = max(0, float64(busy-m.busy0-ours)/float64(wall))
		out[cpuSteal] = float64(steal-m.steal0) / float64(wall)
	}
	return out
}

// freeAddr returns a free loopback host:port.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// quietCores is how much CPU other processes may use before a phase
// starts.
const quietCores = 0.25

// waitQuiet waits, at most limit, until the processes outside pids used
// less than quietCores over a second, so that a phase does not start while
// something else on the machine (a build, another test) is busy. It returns
// how long it waited and what the others used at the last look.
func waitQuiet(ctx context.Context, pids map[string]int, limit time.Duration) (time.Duration, float64) {
	start := time.Now()
	for {
		m := newCPUMeter(pids)
		select {
		case <-ctx.Done():
			return time.Since(start), 0
		case <-time.After(time.Second):
		}
		others := m.read()[cpuOthers]
		if others < quietCores || time.Since(start) >= limit {
			return time.Since(start), others
		}
	}
}
