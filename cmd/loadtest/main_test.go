package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestUsage(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	for _, args := range [][]string{nil, {"launch"}} {
		err := run(context.Background(), args, &out, &errb)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "usage")
	}
	assert.Error(t, run(context.Background(), []string{"run", "-target", "smtp"}, &out, &errb))
}

func TestRunAgainstHTTP(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"expires_in":600}`))
	}))
	t.Cleanup(srv.Close)
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"run", "-target", "http", "-addr", strings.TrimPrefix(srv.URL, "http://"),
		"-c", "2", "-d", "200ms", "-warmup", "0s", "-n", "50"}, &out, &errb)
	require.NoError(t, err, errb.String())
	assert.Contains(t, out.String(), "requests   50")
	assert.Contains(t, out.String(), "stopped by -n")
	assert.Contains(t, out.String(), "outcomes   ok=50")
}

func TestSink(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"sink", "-latency", "1ms", "-d", "100ms"}, &out, &errb))
	assert.Contains(t, out.String(), "SMTP_TLS=none")
	assert.Contains(t, out.String(), "accepted 0 mails")
}
