package platform

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Config is what Load and Main need of a binary's configuration, a struct
// that embeds Common: its fields with an envconfig tag are the variables, and
// Resolve checks the rules across them (calling Common.Resolve) and builds
// the ready values, once.
type Config interface {
	Resolve() error
	SetupLogging(w io.Writer) *slog.Logger
	common() *Common
}

// Load reads a C from the environment and resolves it: it returns ready
// values or every problem at once, each naming its variable, none
// repeating a value. A variable of an earlier release that is set is a
// problem that names what replaces it.
func Load[C any, P interface {
	*C
	Config
}]() (C, error) {
	var cfg C
	errs, failed := decode(&cfg)
	errs = append(errs, retiredSet(P(&cfg).common().Purposes)...)
	// A variable that did not parse is reported once: the rules, which
	// judged its zero value, do not speak of it again.
	for _, err := range leaves(P(&cfg).Resolve()) {
		if err != nil && !speaksOf(err, failed) {
			errs = append(errs, err)
		}
	}
	return cfg, errors.Join(errs...)
}

// Binary describes a verifyq command for Main.
type Binary[C any] struct {
	// Name is the command's name, put before its error messages.
	Name string
	// AdminAddr returns the ADMIN_ADDR of cfg, which -healthcheck asks.
	AdminAddr func(cfg C) string
	// Serve runs the command until ctx ends (SIGINT or SIGTERM), then shuts
	// it down within SHUTDOWN_TIMEOUT. logger is set up from LOG_LEVEL.
	Serve func(ctx context.Context, cfg C, logger *slog.Logger) error
	// GCPercent is the garbage collector's target (GOGC) while serving,
	// unless the environment sets GOGC; 0 leaves the runtime's default.
	GCPercent int
	// Usage is more of -h's text, after the flags Run parses: the flags
	// the command's main handles before it (the enqueuer's -new-key), in
	// the flag package's layout.
	Usage string
}

// Main is the main function of a verifyq command: it runs b with the
// process's arguments until SIGINT or SIGTERM and exits with Run's status.
func Main[C any, P interface {
	*C
	Config
}](b Binary[C]) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Run[C, P](ctx, b, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// Run parses args, loads and validates the configuration, and serves b
// until ctx ends, logging JSON to stderr. It returns the exit status: 0 on
// a clean shutdown, 1 when the configuration is bad (the message names the
// variable) or serving fails, 2 on bad arguments.
//
// With -healthcheck it instead asks the running command's admin server
// (ADMIN_ADDR) whether it is ready and returns 0 or 1: a container health
// check for images without a shell.
func Run[C any, P interface {
	*C
	Config
}](ctx context.Context, b Binary[C], args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet(b.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = fmt.Fprintf(stderr, "Usage of %s:\n", b.Name)
		fs.PrintDefaults()
		_, _ = fmt.Fprint(stderr, b.Usage)
	}
	healthcheck := fs.Bool("healthcheck", false, "check that the "+b.Name+" on ADMIN_ADDR is ready, exit 0 or 1")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		_, _ = fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", b.Name, fs.Args())
		fs.Usage()
		return 2
	}
	cfg, err := Load[C, P]()
	if err == nil {
		if *healthcheck {
			err = HealthCheck(ctx, b.AdminAddr(cfg))
		} else {
			setGCPercent(b.GCPercent)
			err = b.Serve(ctx, cfg, P(&cfg).SetupLogging(stderr))
		}
	}
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "%s: %v\n", b.Name, err)
		return 1
	}
	return 0
}

// setGCPercent sets the garbage collector's target to percent unless it
// is 0 or GOGC is set: the operator's GOGC wins.
func setGCPercent(percent int) {
	if _, set := os.LookupEnv("GOGC"); percent != 0 && !set {
		debug.SetGCPercent(percent)
	}
}

// An App is a command's process: Open starts it, Close stops it within
// ctx.
type App interface {
	Open(ctx context.Context) error
	Close(ctx context.Context) error
}

// ServeApp starts tracing (before any other gRPC call: the OTLP exporter over
// gRPC is one), opens the App that newApp makes with the logger and the
// tracer provider to use, and runs it until ctx ends (SIGINT or SIGTERM).
// Then it closes the App and exports the spans still queued, within one
// shutdownTimeout (SHUTDOWN_TIMEOUT) from then for the two together.
func ServeApp(ctx context.Context, service string, shutdownTimeout time.Duration, logger *slog.Logger,
	newApp func(*slog.Logger, trace.TracerProvider) (App, error)) error {
	tr, logger, err := startTracing(ctx, service, logger)
	if err != nil {
		return err
	}
	app, err := newApp(logger, tr.Provider())
	if err == nil {
		err = app.Open(ctx)
	}
	if err == nil {
		<-ctx.Done()
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err == nil {
		err = app.Close(sctx)
	}
	stopTracing(sctx, tr, logger)
	return err
}
