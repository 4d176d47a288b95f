package mtatest

import (
	"os"
	"strings"
	"testing"
	"time"
)

// logTailLines is how many lines of the log an error quotes.
const logTailLines = 40

// Log returns the lines that Postfix has logged so far (maillog_file,
// written by postlogd). The daemons log through postlogd's socket, so a
// line may come a moment after the event: WaitLog waits for one.
func (p *Postfix) Log() []string {
	b, err := os.ReadFile(p.files.log)
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

// WaitLog waits until a line of the log contains substr and returns it;
// it fails the test after timeout, quoting the log's tail.
func (p *Postfix) WaitLog(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, line := range p.Log() {
			if strings.Contains(line, substr) {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("mtatest: no log line with %q within %s; log tail:\n%s", substr, timeout, p.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logTail is the last lines of the log, for error messages.
func (p *Postfix) logTail() string {
	lines := p.Log()
	if len(lines) == 0 {
		return "(the log " + p.files.log + " is empty or missing)"
	}
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return strings.Join(lines, "\n")
}
