// Package logtest gives tests a JSON logger whose lines show in the test's
// log and can be read back, decoded.
package logtest

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// Buffer collects JSON log lines and shows each in the test log. It is safe
// for concurrent use.
type Buffer struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

// New returns a debug-level JSON logger writing to a new Buffer.
func New(t testing.TB) (*slog.Logger, *Buffer) {
	buf := &Buffer{t: t}
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// Write takes one log line.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Log(strings.TrimSpace(string(p)))
	return l.b.Write(p)
}

// String is everything logged so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Lines decodes every line logged so far.
func (l *Buffer) Lines(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		out = append(out, m)
	}
	return out
}

// Matching returns the decoded lines whose "msg" is msg.
func (l *Buffer) Matching(t testing.TB, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range l.Lines(t) {
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}
