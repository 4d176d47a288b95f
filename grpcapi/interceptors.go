package grpcapi

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/verifyq/verifyq/mail"
)

// logCalls logs one line per unary call: method, status, duration, the
// masked address and, on the legacy service, the error number. It reads
// nothing else of a request, so no code reaches the log.
func logCalls(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		code := status.Code(err)
		attrs := []slog.Attr{
			slog.String("method", info.FullMethod),
			slog.String("code", code.String()),
			slog.Int64("ms", time.Since(start).Milliseconds()),
		}
		if r, ok := req.(interface{ GetEmail() string }); ok {
			attrs = append(attrs, slog.String("email", mail.MaskAddress(r.GetEmail())))
		}
		level := callLevel(info.FullMethod, code)
		if r, ok := resp.(interface{ GetError() int32 }); ok && err == nil {
			n := r.GetError()
			attrs = append(attrs, slog.Int("legacy_error", int(n)))
			if n == legacyRedisErr || n == legacyException {
				level = slog.LevelWarn
			}
		}
		logger.LogAttrs(ctx, level, "grpc call", attrs...)
		return resp, err
	}
}

// observeCalls reports each call of the code services to obs with api
// "grpc", the full method as the route and an outcome from the fixed set of
// the HTTP edge. On the legacy service the outcome follows the in-band error
// number, since every outcome there is an OK status.
func observeCalls(obs RequestObserver) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if obs == nil || strings.HasPrefix(info.FullMethod, "/grpc.") {
			return handler(ctx, req)
		}
		start := time.Now()
		resp, err := handler(ctx, req)
		outcome := outcomeOf(status.Code(err))
		if r, ok := resp.(interface{ GetError() int32 }); ok && err == nil {
			outcome = legacyOutcomes[r.GetError()]
		}
		obs.ObserveRequest("grpc", info.FullMethod, outcome, time.Since(start))
		return resp, err
	}
}

// legacyOutcomes maps the legacy error numbers to request outcomes.
var legacyOutcomes = map[int32]string{
	legacySuccess:        "ok",
	legacyRedisErr:       "unavailable",
	legacyException:      "error",
	legacyInvalidAddress: "invalid",
	legacyRateLimited:    "rate_limited",
}

// outcomeOf maps a v1 status code to a request outcome; it follows statusOf.
func outcomeOf(c codes.Code) string {
	switch c {
	case codes.OK:
		return "ok"
	case codes.InvalidArgument:
		return "invalid"
	case codes.NotFound:
		return "not_found"
	case codes.FailedPrecondition:
		return "mismatch"
	case codes.ResourceExhausted:
		return "rate_limited"
	case codes.Unavailable:
		return "unavailable"
	default:
		return "error"
	}
}

// callLevel is Debug for health checks and reflection, Info for outcomes the
// caller caused and Warn or Error for failures of ours.
func callLevel(method string, code codes.Code) slog.Level {
	switch code {
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return slog.LevelError
	case codes.Unavailable, codes.DeadlineExceeded:
		return slog.LevelWarn
	}
	if strings.HasPrefix(method, "/grpc.health.") || strings.HasPrefix(method, "/grpc.reflection.") {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// errPanic is the status of a call whose handler panicked.
var errPanic = status.Error(codes.Internal, "internal error")

// logPanic logs a recovered panic with its stack, never the request.
func logPanic(ctx context.Context, logger *slog.Logger, method string, p any) {
	logger.ErrorContext(ctx, "grpc handler panicked",
		"method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
}

// recoverUnary turns a panic in a unary handler into codes.Internal.
func recoverUnary(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if p := recover(); p != nil {
				logPanic(ctx, logger, info.FullMethod, p)
				resp, err = nil, errPanic
			}
		}()
		return handler(ctx, req)
	}
}

// recoverStream turns a panic in a stream handler into codes.Internal.
func recoverStream(logger *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if p := recover(); p != nil {
				logPanic(ss.Context(), logger, info.FullMethod, p)
				err = errPanic
			}
		}()
		return handler(srv, ss)
	}
}

// defaultDeadline gives a unary call without a deadline one of d. The old
// gateway sets none; a call must not hang on a stuck dependency.
func defaultDeadline(d time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return handler(ctx, req)
	}
}

// endStreamOnStop ends a stream when Shutdown begins: its context is
// canceled and a pending receive returns. Health Watch and reflection streams
// last as long as the client wants; without this, one open stream would hold
// GracefulStop until the shutdown deadline.
func (s *Server) endStreamOnStop(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	stop := context.AfterFunc(s.stopping, cancel)
	defer stop()
	return handler(srv, stoppableStream{ServerStream: ss, ctx: ctx})
}

type stoppableStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s stoppableStream) Context() context.Context { return s.ctx }

// RecvMsg returns when a message arrives or the stream's context ends,
// whichever is first. The receive left behind returns when the handler has
// returned and gRPC closes the stream; m is not used after an error.
func (s stoppableStream) RecvMsg(m any) error {
	got := make(chan error, 1)
	go func() { got <- s.ServerStream.RecvMsg(m) }()
	select {
	case err := <-got:
		return err
	case <-s.ctx.Done():
		return status.FromContextError(s.ctx.Err()).Err()
	}
}
