// Package platform holds what both binaries set up the same way: logging,
// the Redis connection, the admin HTTP server and graceful shutdown.
package platform

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/grpclog"
)

// NewLogger returns a JSON logger on w.
func NewLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// AsynqLogger adapts slog to asynq.Logger.
type AsynqLogger struct{ L *slog.Logger }

var _ asynq.Logger = AsynqLogger{}

// Debug logs at debug level.
func (a AsynqLogger) Debug(args ...any) { a.L.Debug(fmt.Sprint(args...), "component", "asynq") }

// Info logs at info level.
func (a AsynqLogger) Info(args ...any) { a.L.Info(fmt.Sprint(args...), "component", "asynq") }

// Warn logs at warn level.
func (a AsynqLogger) Warn(args ...any) { a.L.Warn(fmt.Sprint(args...), "component", "asynq") }

// Error logs at error level.
func (a AsynqLogger) Error(args ...any) { a.L.Error(fmt.Sprint(args...), "component", "asynq") }

// Fatal logs at error level and exits, as asynq.Logger requires.
func (a AsynqLogger) Fatal(args ...any) {
	a.L.Error(fmt.Sprint(args...), "component", "asynq", "fatal", true)
	os.Exit(1)
}

// RedisLogger adapts slog to go-redis's logger (redis.SetLogger), so that a
// Redis outage is logged as JSON lines, at warn level, like the rest.
type RedisLogger struct{ L *slog.Logger }

// Printf logs one go-redis message.
func (r RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.L.WarnContext(ctx, fmt.Sprintf(format, v...), "component", "redis")
}

// GRPCLogger adapts slog to grpclog.LoggerV2, so that gRPC's own messages
// are JSON lines like the rest. gRPC's info messages are debug here: they
// are chatty and rarely useful.
type GRPCLogger struct{ L *slog.Logger }

var _ grpclog.LoggerV2 = GRPCLogger{}

func (g GRPCLogger) log(level slog.Level, msg string) {
	g.L.Log(context.Background(), level, msg, "component", "grpc")
}

// Info logs gRPC's info messages at debug level.
func (g GRPCLogger) Info(args ...any) { g.log(slog.LevelDebug, fmt.Sprint(args...)) }

// Infoln logs gRPC's info messages at debug level.
func (g GRPCLogger) Infoln(args ...any) { g.log(slog.LevelDebug, fmt.Sprint(args...)) }

// Infof logs gRPC's info messages at debug level.
func (g GRPCLogger) Infof(format string, args ...any) {
	g.log(slog.LevelDebug, fmt.Sprintf(format, args...))
}

// Warning logs at warn level.
func (g GRPCLogger) Warning(args ...any) { g.log(slog.LevelWarn, fmt.Sprint(args...)) }

// Warningln logs at warn level.
func (g GRPCLogger) Warningln(args ...any) { g.log(slog.LevelWarn, fmt.Sprint(args...)) }

// Warningf logs at warn level.
func (g GRPCLogger) Warningf(format string, args ...any) {
	g.log(slog.LevelWarn, fmt.Sprintf(format, args...))
}

// Error logs at error level.
func (g GRPCLogger) Error(args ...any) { g.log(slog.LevelError, fmt.Sprint(args...)) }

// Errorln logs at error level.
func (g GRPCLogger) Errorln(args ...any) { g.log(slog.LevelError, fmt.Sprint(args...)) }

// Errorf logs at error level.
func (g GRPCLogger) Errorf(format string, args ...any) {
	g.log(slog.LevelError, fmt.Sprintf(format, args...))
}

// Fatal logs at error level and exits, as grpclog.LoggerV2 requires.
func (g GRPCLogger) Fatal(args ...any) { g.Error(args...); os.Exit(1) }

// Fatalln logs at error level and exits.
func (g GRPCLogger) Fatalln(args ...any) { g.Error(args...); os.Exit(1) }

// Fatalf logs at error level and exits.
func (g GRPCLogger) Fatalf(format string, args ...any) { g.Errorf(format, args...); os.Exit(1) }

// V reports whether gRPC's verbose messages (level > 0) are wanted: never.
func (g GRPCLogger) V(level int) bool { return level <= 0 }

// Pinger reports whether a dependency is reachable (redis.Client).
type Pinger interface {
	Ping(ctx context.Context) *redis.StatusCmd
}

// Check is a readiness check of /readyz: an error when the process is not
// ready, and, ready or not, a line that says more (the worker's relays and
// their states), or "".
type Check func() (string, error)

// AdminMux returns the admin endpoints: /healthz (the process is up) and
// /readyz (Redis answers and every check returns nil, else 503 with what
// failed: the worker's check says when no SMTP relay can take mail). A
// ready reply is "ok", followed by each check's line.
func AdminMux(rdb Pinger, checks ...Check) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := rdb.Ping(ctx).Err(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "redis unreachable\n")
			return
		}
		var lines []string
		for _, check := range checks {
			line, err := check()
			if err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, err.Error()+"\n")
				return
			}
			if line != "" {
				lines = append(lines, line+"\n")
			}
		}
		_, _ = io.WriteString(w, "ok\n"+strings.Join(lines, ""))
	})
	return mux
}

// Timeouts of every HTTP listener of ours.
const (
	// ReadHeaderTimeout bounds the wait for a request's headers, from the
	// connection's start or the end of the previous reply: a connection
	// that sends nothing is closed after it.
	ReadHeaderTimeout = 5 * time.Second
	// IdleTimeout closes a keep-alive connection with no request for this
	// long, so idle connections do not hold the slots of a listener's
	// connection cap (MAX_CONNECTIONS) or file descriptors for long.
	IdleTimeout = 15 * time.Second
)

// WriteMargin is how much longer than its handler's deadline a server
// gives a reply (its write timeout runs from the end of the request's
// headers): time to write the reply that the deadline ends with, a 504,
// rather than drop the connection.
const WriteMargin = 10 * time.Second

// NewHTTPServer returns a server with the timeouts every listener of ours
// needs, so a slow or idle client cannot hold a connection for long. Its
// handler answers within answerWithin (the API's REQUEST_TIMEOUT): the
// write timeout is that and WriteMargin, 15 s with REQUEST_TIMEOUT's
// default 5 s.
func NewHTTPServer(h http.Handler, logger *slog.Logger, answerWithin time.Duration) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      answerWithin + WriteMargin,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// Listen opens a TCP listener on addr.
func Listen(ctx context.Context, name, addr string) (net.Listener, error) {
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", name, addr, err)
	}
	return l, nil
}
