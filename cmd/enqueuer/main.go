// Command enqueuer is verifyq's front end: it makes or reuses a code in Redis
// and enqueues a send-mail task, without waiting for SMTP.
//
// With -healthcheck it instead asks the running enqueuer's admin server
// (ADMIN_ADDR) whether it is ready and exits 0 or 1: a container health
// check for images without a shell.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc/grpclog"

	"github.com/verifyq/verifyq/internal/platform"
)

func main() {
	healthcheck := flag.Bool("healthcheck", false, "check that the enqueuer on ADMIN_ADDR is ready, exit 0 or 1")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	run := run
	if *healthcheck {
		run = checkHealth
	}
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "enqueuer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	cfg, err := LoadConfig()
	if err != nil {
		return err
	}
	logger := cfg.SetupLogging(os.Stderr)
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

func checkHealth(ctx context.Context) error {
	cfg, err := LoadConfig()
	if err != nil {
		return err
	}
	return platform.HealthCheck(ctx, cfg.AdminAddr)
}
