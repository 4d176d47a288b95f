// Package platform holds what both binaries set up the same way: logging,
// the Redis connection, the admin HTTP server and graceful shutdown.
package platform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// ParseLevel parses LOG_LEVEL: debug, info, warn or error.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("LOG_LEVEL %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// NewLogger returns a JSON logger on w.
func NewLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// ParseRedisURL parses REDIS_URL (redis:// or rediss:// for TLS). The error
// never repeats the URL, which may hold a password.
func ParseRedisURL(s string) (*redis.Options, error) {
	opt, err := redis.ParseURL(s)
	if err != nil {
		return nil, errors.New("REDIS_URL: not a valid redis:// or rediss:// URL")
	}
	return opt, nil
}

// NewRedis returns a client for opt with timeouts fit for a request path:
// a request must fail fast, not hang, when Redis goes away.
func NewRedis(opt *redis.Options) *redis.Client {
	o := withTimeouts(opt)
	return redis.NewClient(&o)
}

// withTimeouts returns a copy of opt with the timeouts NewRedis promises.
func withTimeouts(opt *redis.Options) redis.Options {
	o := *opt
	if o.DialTimeout == 0 {
		o.DialTimeout = 2 * time.Second
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = 2 * time.Second
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = 2 * time.Second
	}
	return o
}

// AsynqLogger adapts slog to asynq.Logger.
type AsynqLogger struct{ L *slog.Logger }

var _ asynq.Logger = AsynqLogger{}

func (a AsynqLogger) Debug(args ...any) { a.L.Debug(fmt.Sprint(args...), "component", "asynq") }
func (a AsynqLogger) Info(args ...any)  { a.L.Info(fmt.Sprint(args...), "component", "asynq") }
func (a AsynqLogger) Warn(args ...any)  { a.L.Warn(fmt.Sprint(args...), "component", "asynq") }
func (a AsynqLogger) Error(args ...any) { a.L.Error(fmt.Sprint(args...), "component", "asynq") }

// Fatal logs at error level and exits, as asynq.Logger requires.
func (a AsynqLogger) Fatal(args ...any) {
	a.L.Error(fmt.Sprint(args...), "component", "asynq", "fatal", true)
	os.Exit(1)
}

// Pinger reports whether a dependency is reachable (redis.Client).
type Pinger interface {
	Ping(ctx context.Context) *redis.StatusCmd
}

// AdminMux returns the admin endpoints: /healthz (the process is up) and
// /readyz (Redis answers, else 503).
func AdminMux(rdb Pinger) *http.ServeMux {
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
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

// NewHTTPServer returns a server with the timeouts every listener of ours
// needs, so a slow client cannot hold a connection forever.
func NewHTTPServer(h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       2 * time.Minute,
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
