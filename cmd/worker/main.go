// Command worker takes send-code tasks from the queue and mails the codes
// over SMTP, with retries. Run as many as the mail volume needs.
//
// With -healthcheck it instead asks the running worker's admin server
// (ADMIN_ADDR) whether it is ready and exits 0 or 1: a container health
// check for images without a shell.
package main

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"

	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/tracing"
)

// binary is the worker for platform.Main.
var binary = platform.Binary[Config]{
	Name:      "worker",
	AdminAddr: func(cfg Config) string { return cfg.AdminAddr },
	Serve:     serve,
}

func main() { platform.Main(binary) }

// serve runs the worker until ctx ends, then lets sends in flight
// finish within SHUTDOWN_TIMEOUT (platform.ServeApp).
func serve(ctx context.Context, cfg Config, logger *slog.Logger) error {
	return platform.ServeApp(ctx, tracing.ServiceWorker, cfg.ShutdownTimeout, logger,
		func(logger *slog.Logger, tp trace.TracerProvider) (platform.App, error) {
			return NewApp(cfg, logger, tp)
		})
}
