// Command worker takes send-code tasks from the queue and mails the codes
// over SMTP, with retries. Run as many as the mail volume needs.
//
// With -healthcheck it instead asks the running worker's admin server
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

	"github.com/verifyq/verifyq/internal/platform"
)

func main() {
	healthcheck := flag.Bool("healthcheck", false, "check that the worker on ADMIN_ADDR is ready, exit 0 or 1")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	run := run
	if *healthcheck {
		run = checkHealth
	}
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	cfg, err := LoadConfig()
	if err != nil {
		return err
	}
	logger := cfg.SetupLogging(os.Stderr)
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

func checkHealth(ctx context.Context) error {
	cfg, err := LoadConfig()
	if err != nil {
		return err
	}
	return platform.HealthCheck(ctx, cfg.AdminAddr)
}
