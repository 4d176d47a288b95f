// Command enqueuer is verifyq's front end: it makes or reuses a code in Redis
// and enqueues a send-mail task, without waiting for SMTP.
//
// With -healthcheck it instead asks the running enqueuer's admin server
// (ADMIN_ADDR) whether it is ready and exits 0 or 1: a container health
// check for images without a shell.
//
// With -new-key NAME SCOPES (as its first argument) it makes an API key
// for a caller and prints the key and the line to add to API_KEYS_FILE;
// it reads no configuration and starts nothing.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"go.opentelemetry.io/otel/trace"

	"github.com/verifyq/verifyq/auth"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/tracing"
)

// binary is the enqueuer for platform.Main.
var binary = platform.Binary[Config]{
	Name:      "enqueuer",
	AdminAddr: func(cfg Config) string { return cfg.AdminAddr },
	Serve:     serve,
	GCPercent: gcPercent,
	Usage: "  -new-key NAME SCOPES\n    \tprint a new API key for the caller NAME and its line for API_KEYS_FILE, then exit\n" +
		"    \t(" + newKeyScopes + ")\n",
}

// newKeyScopes says what -new-key's SCOPES are.
const newKeyScopes = "SCOPES: a comma-separated set of send, verify, status"

// gcPercent is the enqueuer's GOGC unless the environment sets one: a send
// allocates much and keeps little, so with the runtime's 100 the collector
// ran every few hundred sends (docs/CONFIGURATION.md, BENCHMARKS.md).
const gcPercent = 200

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-new-key" || os.Args[1] == "--new-key") {
		os.Exit(newKey(os.Args[2:], os.Stdout, os.Stderr))
	}
	platform.Main(binary)
}

// newKey is -new-key NAME SCOPES: it prints a new key and its key file
// line, and returns the exit status (2 for bad arguments).
func newKey(args []string, stdout, stderr io.Writer) int {
	if len(args) != 2 {
		_, _ = fmt.Fprintln(stderr, "usage: enqueuer -new-key NAME SCOPES   ("+newKeyScopes+")")
		return 2
	}
	key, line, err := auth.NewKey(args[0], args[1])
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "enqueuer: -new-key: %v\n", err)
		return 2
	}
	_, _ = fmt.Fprintf(stdout, "# The key, for the caller only (it is not stored; a lost key is replaced, not recovered):\n"+
		"%s\n# The line to add to API_KEYS_FILE (read at start: restart the enqueuer):\n%s\n", key, line)
	return 0
}

// serve runs the enqueuer until ctx ends, then lets requests in flight
// finish within SHUTDOWN_TIMEOUT (platform.ServeApp).
func serve(ctx context.Context, cfg Config, logger *slog.Logger) error {
	return platform.ServeApp(ctx, tracing.ServiceEnqueuer, cfg.ShutdownTimeout, logger,
		func(logger *slog.Logger, tp trace.TracerProvider) (platform.App, error) {
			return NewApp(cfg, logger, tp)
		})
}
