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
func serve(ctx context.Context, cfg Config, logger *slog.Logger) error {
	app, err := NewApp(cfg, logger)
	if err != nil {
		return err
	}
	if err := app.Open(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return app.Close()
}
