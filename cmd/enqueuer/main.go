// Command enqueuer is verifyq's front end: it makes or reuses a code in Redis
// and enqueues a send-mail task, without waiting for SMTP.
//
// With -healthcheck it instead asks the running enqueuer's admin server
// (ADMIN_ADDR) whether it is ready and exits 0 or 1: a container health
// check for images without a shell.
package main

import (
	"context"
	"log/slog"

	"google.golang.org/grpc/grpclog"

	"github.com/verifyq/verifyq/internal/platform"
)

// binary is the enqueuer for platform.Main.
var binary = platform.Binary[Config]{
	Name:      "enqueuer",
	AdminAddr: func(cfg Config) string { return cfg.AdminAddr },
	Serve:     serve,
}

func main() { platform.Main(binary) }

// serve runs the enqueuer until ctx ends, then lets requests in flight
// finish within SHUTDOWN_TIMEOUT.
func serve(ctx context.Context, cfg Config, logger *slog.Logger) error {
	grpclog.SetLoggerV2(platform.GRPCLogger{L: logger}) // before any other gRPC call
	app, err := NewApp(cfg, logger)
	if err != nil {
		return err
	}
	if err := app.Open(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	return app.Close(shutdownCtx)
}
