// Command enqueuer is verifyq's front end: it makes or reuses a code in Redis
// and enqueues a send-mail task, without waiting for SMTP.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/grpclog"

	"github.com/verifyq/verifyq/internal/platform"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
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
	level, _ := platform.ParseLevel(cfg.LogLevel) // validated by LoadConfig
	logger := platform.NewLogger(os.Stderr, level)
	grpclog.SetLoggerV2(platform.GRPCLogger{L: logger}) // before any other gRPC call
	redis.SetLogger(platform.RedisLogger{L: logger})
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
