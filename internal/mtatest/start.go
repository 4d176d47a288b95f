package mtatest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	// startAttempts bounds the starts with new ports when another process
	// took a port between its choice and Postfix's bind.
	startAttempts = 3
	// readyTimeout bounds the wait for both listeners to greet.
	readyTimeout = 15 * time.Second
	// stopTimeout bounds the wait for the master to exit after postfix stop.
	stopTimeout = 15 * time.Second
	// mailUID is the uid and gid that the virtual delivery agent delivers
	// as (Debian's nobody/nogroup): an account of no other use.
	mailUID = 65534
)

// account is a user's uid and primary gid.
type account struct{ uid, gid int }

// Start writes a Postfix configuration for opts under a new temporary
// directory, starts it (postfix -c DIR start) on two free loopback ports and
// stops it, and removes the directory, when the test ends. It fails the test
// with Postfix's log when the server does not start.
func Start(t testing.TB, opts Options) *Postfix {
	t.Helper()
	p, err := start(t, opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func start(t testing.TB, opts Options) (*Postfix, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("mtatest: starting Postfix needs root (its master binds as root and drops to the postfix user)")
	}
	if _, err := lookCommand("postfix"); err != nil {
		return nil, err
	}
	reapOrphans()
	pf, err := lookupAccount("postfix")
	if err != nil {
		return nil, err
	}
	// Not t.TempDir: its parents are private to root, and the postfix and
	// delivery users must reach the queue and the Maildirs.
	dir, err := os.MkdirTemp("", "mtatest-")
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("mtatest: remove %s: %v", dir, err)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil { //nolint:gosec // G306: a pid
		return nil, err
	}
	p := &Postfix{opts: opts, files: newLayout(dir)}
	if err := p.prepare(pf); err != nil {
		return nil, err
	}
	var startErr error
	for range startAttempts {
		if err := p.writeConfig(); err != nil {
			return nil, err
		}
		if startErr = p.startPostfix(); startErr == nil {
			break
		}
		if !strings.Contains(p.logTail(), "Address already in use") {
			return nil, startErr
		}
	}
	if startErr != nil {
		return nil, startErr
	}
	t.Cleanup(func() { p.stop(t) })
	if err := p.waitReady(); err != nil {
		return nil, err
	}
	return p, nil
}

// prepare writes the instance's directories, certificates, maps and SASL
// users.
func (p *Postfix) prepare(pf account) error {
	l := p.files
	if err := os.Chmod(l.dir, 0o755); err != nil { //nolint:gosec // G302: the postfix and delivery users traverse it
		return err
	}
	for _, d := range []struct {
		path string
		uid  int
		gid  int
	}{{l.conf, 0, 0}, {l.queue, 0, 0}, {l.data, pf.uid, pf.gid}, {l.mail, mailUID, mailUID}} {
		if err := os.Mkdir(d.path, 0o755); err != nil { //nolint:gosec // G301: Postfix's own layout; post-install narrows the queue's subdirectories
			return err
		}
		if err := os.Chown(d.path, d.uid, d.gid); err != nil {
			return err
		}
	}
	var err error
	if p.certs, err = writeCerts(l.conf); err != nil {
		return err
	}
	// postmap and saslpasswd2 read main.cf.
	if err := p.writeConfig(); err != nil {
		return err
	}
	for name, entries := range mapEntries(p.opts) {
		if err := writeMap(l, name, entries); err != nil {
			return err
		}
	}
	if len(p.opts.Users) > 0 {
		return writeSASL(l, p.opts, pf)
	}
	return nil
}

// writeConfig chooses two free ports and writes main.cf and master.cf for
// them.
func (p *Postfix) writeConfig() error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	p.submission, p.smtps = ports[0], ports[1]
	l := p.files
	for name, text := range map[string]string{
		"main.cf":   mainCF(l, p.opts, p.certs, len(p.opts.Users) > 0),
		"master.cf": masterCF(p.submission, p.smtps),
	} {
		path := l.conf + "/" + name
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil { //nolint:gosec // G306: Postfix's daemons read it
			return err
		}
		// Every Postfix command rereads a main.cf changed in the last
		// second or two, 300 ms apart, in case an editor is still writing
		// it: dated in the past, it is read once.
		past := time.Now().Add(-time.Minute)
		if err := os.Chtimes(path, past, past); err != nil {
			return err
		}
	}
	return nil
}

// startPostfix starts Postfix, which returns when the master has bound
// the ports or failed, and reads the master's pid.
func (p *Postfix) startPostfix() error {
	l := p.files
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	if err := run(ctx, "postfix", "-c", l.conf, "start"); err != nil {
		return fmt.Errorf("%w\nlog tail:\n%s", err, p.logTail())
	}
	var err error
	if p.masterPID, err = readPID(l); err != nil {
		return fmt.Errorf("mtatest: the master's pid: %w", err)
	}
	return nil
}

// waitReady waits until both listeners greet with 220.
func (p *Postfix) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	for _, addr := range []string{p.SubmissionAddr(), p.SMTPSAddr()} {
		for {
			err := probe(addr, addr == p.SMTPSAddr(), p.TLSConfig(), deadline)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("mtatest: %s did not greet within %s: %w\nlog tail:\n%s", addr, readyTimeout, err, p.logTail())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// stop runs postfix stop and waits, bounded, for the master to exit; it
// kills the master when it does not.
func (p *Postfix) stop(t testing.TB) {
	if t.Failed() {
		t.Logf("%s log tail:\n%s", p, p.logTail())
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	if err := run(ctx, "postfix", "-c", p.files.conf, "stop"); err != nil {
		t.Errorf("mtatest: %v", err)
	}
	if err := waitExit(p.masterPID, stopTimeout); err != nil {
		t.Errorf("mtatest: %v", err)
	}
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer func() { _ = l.Close() }()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func lookupAccount(name string) (account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return account{}, fmt.Errorf("mtatest: user %s: %w: %s", name, err, installHint)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return account{}, err
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return account{}, err
	}
	return account{uid, gid}, nil
}
