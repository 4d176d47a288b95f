// Command worker takes send-code tasks from the queue and mails the codes
// over SMTP, with retries. Run as many as the mail volume needs.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/internal/platform"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
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
	level, _ := platform.ParseLevel(cfg.LogLevel) // validated by LoadConfig
	logger := platform.NewLogger(os.Stderr, level)
	redis.SetLogger(platform.RedisLogger{L: logger})
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
