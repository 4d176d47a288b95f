package platform

import (
	"context"
	"log/slog"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/grpclog"

	"github.com/verifyq/verifyq/internal/tracing"
)

// startTracing sets up the process's tracing from the OTEL_* variables
// (package tracing), service being the default service name, and returns
// it with the logger to use from then on: with tracing on, its lines, the
// standard logger's and go-redis's carry the trace and span ID of their
// context's span. It first routes gRPC's own messages through logger
// (GRPCLogger), before any gRPC call: the OTLP exporter over gRPC is one.
// The caller stops it with stopTracing.
func startTracing(ctx context.Context, service string, logger *slog.Logger) (*tracing.Tracing, *slog.Logger, error) {
	grpclog.SetLoggerV2(GRPCLogger{L: logger})
	tr, err := tracing.Start(ctx, service, logger)
	if err != nil {
		return nil, nil, err
	}
	s := tr.Settings()
	if !tr.Enabled() {
		logger.Debug("tracing off", "why", s.Off)
		return tr, logger, nil
	}
	logger = tr.Logger(logger)
	slog.SetDefault(logger)
	redis.SetLogger(RedisLogger{L: logger})
	logger.Info("tracing on: spans exported over OTLP", "protocol", s.Protocol, "default_service_name", service)
	return tr, logger, nil
}

// stopTracing exports the spans still queued within ctx (what is left of
// SHUTDOWN_TIMEOUT) and logs a failure.
func stopTracing(ctx context.Context, tr *tracing.Tracing, logger *slog.Logger) {
	if err := tr.Shutdown(ctx); err != nil {
		logger.Warn("spans lost at shutdown", "err", err)
	}
}
