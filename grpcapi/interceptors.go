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
	"github.com/verifyq/verifyq/outcome"
)

// exchange is what a call's handler tells the observe interceptor: the
// outcome, the error behind it and the address. It travels in the call's
// context.
type exchange struct {
	outcome *outcome.Outcome
	caller  string
	err     error
}

type exchangeKey struct{}

// record notes that the call in ctx ended with err and returns its outcome.
func record(ctx context.Context, err error) *outcome.Outcome {
	return note(ctx, outcome.Of(ctx, err), err)
}

// note tells the observe interceptor that the call in ctx ended with
// outcome o and error err, and returns o.
func note(ctx context.Context, o *outcome.Outcome, err error) *outcome.Outcome {
	if x, ok := ctx.Value(exchangeKey{}).(*exchange); ok {
		x.outcome, x.err = o, err
	}
	return o
}

// observe logs one line per unary call (method, status, outcome, the
// caller's name, the masked address, the legacy error number on the old
// service, duration)
// and records the calls of the code services in obs with api "grpc". The
// outcome is the one the handler recorded; a call that never reached one
// (a panic, a deadline in the framework) gets it from its status. It reads
// nothing of a request but the address, so no code reaches the log.
func observe(logger *slog.Logger, obs RequestObserver) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		x := &exchange{}
		resp, err := handler(context.WithValue(ctx, exchangeKey{}, x), req)
		d := time.Since(start)
		o := x.outcome
		if o == nil {
			o = outcomeOfStatus(err)
			x.err = err
		}
		code := status.Code(err)
		attrs := []slog.Attr{
			slog.String("method", info.FullMethod),
			slog.String("code", code.String()),
			slog.String("outcome", o.Name),
			slog.Int64("ms", d.Milliseconds()),
		}
		if x.caller != "" {
			attrs = append(attrs, slog.String("caller", x.caller))
		}
		if r, ok := req.(interface{ GetEmail() string }); ok {
			attrs = append(attrs, slog.String("email", mail.MaskAddress(r.GetEmail())))
		}
		if r, ok := resp.(interface{ GetError() int32 }); ok && err == nil {
			attrs = append(attrs, slog.Int("legacy_error", int(r.GetError())))
		}
		if x.err != nil && o.Level >= slog.LevelWarn {
			attrs = append(attrs, slog.String("err", x.err.Error()))
		}
		level := o.Level
		if infra := strings.HasPrefix(info.FullMethod, "/grpc."); infra {
			if level <= slog.LevelInfo {
				level = slog.LevelDebug // health checks and reflection
			}
		} else if obs != nil {
			obs.ObserveRequest("grpc", info.FullMethod, x.caller, o.Metric, d)
		}
		logger.LogAttrs(ctx, level, "grpc call", attrs...)
		return resp, err
	}
}

// outcomeOfStatus is the outcome of a call whose handler recorded none:
// OK, the context's outcome, or Internal (a panic, a bug).
func outcomeOfStatus(err error) *outcome.Outcome {
	switch status.Code(err) {
	case codes.OK:
		return outcome.OK
	case codes.Canceled:
		return outcome.Canceled
	case codes.DeadlineExceeded:
		return outcome.DeadlineExceeded
	default:
		return outcome.Internal
	}
}

// errPanic is the status of a call whose handler panicked.
var errPanic = status.Error(outcome.Internal.GRPCCode, outcome.Internal.Message)

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
