package mtatest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// waitExit waits until the process pid has exited (gone, or a zombie that
// its parent has not reaped: postfix start leaves the master to whoever
// adopts it), and kills it after timeout.
func waitExit(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for running(pid) {
		if time.Now().After(deadline) {
			err := syscall.Kill(pid, syscall.SIGKILL)
			return errors.Join(fmt.Errorf("master %d still running %s after postfix stop: killed", pid, timeout), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// running tells whether pid is a live process, from /proc/PID/stat: its
// state follows the command name in parentheses.
func running(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

// probe connects to addr (with TLS first when implicitTLS), reads the 220
// greeting and quits, so the log shows a clean session.
func probe(addr string, implicitTLS bool, conf *tls.Config, deadline time.Time) error {
	conn, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	if implicitTLS {
		tc := tls.Client(conn, conf)
		if err := tc.Handshake(); err != nil {
			return err
		}
		conn = tc
	}
	r := bufio.NewReader(conn)
	greeting, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(greeting, "220 ") {
		return fmt.Errorf("greeting %q", strings.TrimSpace(greeting))
	}
	if _, err := conn.Write([]byte("QUIT\r\n")); err != nil {
		return err
	}
	_, err = r.ReadString('\n')
	return err
}
