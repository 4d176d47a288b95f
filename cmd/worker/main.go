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

// serve runs the worker until ctx ends, then lets sends in flight finish
// within SHUTDOWN_TIMEOUT.
// With tracing on (OTEL_*), the spans still queued are exported within
// SHUTDOWN_TIMEOUT after the sends in flight.
func serve(ctx context.Context, cfg Config, logger *slog.Logger) error {
	tr, logger, err := platform.StartTracing(ctx, tracing.ServiceWorker, logger)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		platform.StopTracing(sctx, tr, logger)
	}()
	app, err := NewApp(cfg, logger, tr.Provider())
	if err != nil {
		return err
	}
	if err := app.Open(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return app.Close()
}
