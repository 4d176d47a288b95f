package mtatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// commandTimeout bounds every Postfix, Cyrus SASL or SpamAssassin command
// the harness runs.
const commandTimeout = 60 * time.Second

// installHint is the advice of every "not installed" error.
const installHint = "run `bash scripts/install-mta.sh` (make test-mta does)"

// lookCommand finds a command on PATH or in the sbin directories, which a
// test's PATH may lack.
func lookCommand(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin"} {
		if p, err := exec.LookPath(dir + "/" + name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("mtatest: %s is not installed: %s", name, installHint)
}

// run runs a command and returns an error that quotes its output when it
// fails.
func run(ctx context.Context, name string, args ...string) error {
	return runInput(ctx, "", name, args...)
}

// runInput runs a command with input on its standard input.
func runInput(ctx context.Context, input, name string, args ...string) error {
	_, err := output(ctx, input, name, args...)
	return err
}

// output runs a command with input on its standard input and returns its
// standard output; a failure quotes both outputs.
func output(ctx context.Context, input, name string, args ...string) ([]byte, error) {
	path, err := lookCommand(name)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, path, args...) //nolint:gosec // G204: a Postfix, SASL or SpamAssassin command from PATH, every argument chosen by this package
	cmd.Stdin = strings.NewReader(input)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return nil, fmt.Errorf("mtatest: %s %s: %w\n%s%s", name, strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), nil
}
