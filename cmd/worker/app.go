package main

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/verifyq/verifyq/bounce"
	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/events"
	"github.com/verifyq/verifyq/internal/metrics"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/tracing"
	"github.com/verifyq/verifyq/reconcile"
	"github.com/verifyq/verifyq/relay"
	"github.com/verifyq/verifyq/tasks"
)

// App is the running worker: the asynq server, the admin server and,
// with BOUNCE_ADDR, the bounce intake.
type App struct {
	handler *tasks.SendCodeHandler
	cfg     Config
	logger  *slog.Logger
	rdb     redis.UniversalClient
	clients []*relay.Client // one per relay
	relays  *tasks.Relays
	server  *asynq.Server
	mux     *asynq.ServeMux
	// eventServer delivers the events and runs the expiry checks, from
	// the events' queue, apart from the mail (nil: WEBHOOK_URLS unset).
	eventServer *asynq.Server
	eventMux    *asynq.ServeMux
	deliverer   *events.Deliverer
	adminSrv    *http.Server
	adminLn     net.Listener
	done        chan error
	pprof       bool

	intake     *bounce.Intake // nil without BOUNCE_ADDR
	bounceLn   net.Listener
	bounceDone chan error

	// reconciler queues lost sends again (nil: RECONCILE_INTERVAL=0);
	// stopReconcile ends its loop, reconciled is closed when it has.
	reconciler    *reconcile.Reconciler
	stopReconcile context.CancelFunc
	reconciled    chan struct{}

	// Registry holds the worker's metrics, served on /metrics.
	Registry *prometheus.Registry
}

// NewApp wires the worker from cfg. It does not start yet. With tp
// (tracing on) each task, its Redis calls and its SMTP sends make spans,
// in the trace of the request that queued it; nil makes none.
func NewApp(cfg Config, logger *slog.Logger, tp trace.TracerProvider) (a *App, err error) {
	rdb := cfg.Redis.Client()
	var clients []*relay.Client
	var list []tasks.Relay
	defer func() {
		if err == nil {
			return
		}
		for _, r := range list {
			r.Breaker.Close()
		}
		for _, c := range clients {
			_ = c.Close()
		}
		_ = rdb.Close()
	}()
	if tp != nil {
		if err := tracing.Redis(rdb, tp); err != nil {
			return nil, err
		}
	}
	keys, err := codes.NewKeys(cfg.KeyPrefix)
	if err != nil {
		return nil, err
	}
	reg := metrics.NewRegistry()
	configs := []namedRelay{{tasks.RelayPrimary, cfg.SMTP}}
	if cfg.FallbackSMTP != nil {
		configs = append(configs, namedRelay{tasks.RelayFallback, *cfg.FallbackSMTP})
	}
	names := make([]string, len(configs))
	for i, c := range configs {
		names[i] = c.name
	}
	m := metrics.NewWorker(reg, names...)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	resume := func() (int, error) {
		total := 0
		for _, q := range tasks.Queues(cfg.QueueShards) {
			n, err := insp.RunAllRetryTasks(q)
			if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
				return total, err
			}
			total += n
		}
		return total, nil
	}
	var emitter *events.Emitter // nil: events off
	if len(cfg.WebhookURLs) > 0 {
		emitter = events.NewEmitter(asynq.NewClientFromRedisClient(rdb), cfg.WebhookURLs, m.Events, logger)
	}
	for _, c := range configs {
		rlog := logger.With("relay", c.name)
		c.cfg.Name, c.cfg.TracerProvider = c.name, tp
		client, err := relay.NewClient(c.cfg, rlog)
		if err != nil {
			return nil, err
		}
		clients = append(clients, client)
		breaker, err := tasks.NewBreaker(tasks.BreakerConfig{
			Probe:        client.Probe,
			ProbeTimeout: client.Timeout(),
			Resume:       resume,
			OnChange:     m.BreakerChanged(c.name),
			Notify:       relayNotify(emitter, c.name),
			Logger:       rlog,
		})
		if err != nil {
			return nil, err
		}
		list = append(list, tasks.Relay{Name: c.name, Mailer: client, Breaker: breaker})
	}
	relays, err := tasks.NewRelays(logger, list...)
	if err != nil {
		return nil, err
	}
	records := delivery.NewRecords(rdb, keys, insp)
	suppressions := delivery.NewSuppressions(rdb, cfg.Identity())
	hcfg := tasks.HandlerConfig{
		Deliveries:  records,
		Author:      cfg.Author,
		ReturnPath:  cfg.ReturnPath,
		Mailer:      relays,
		TTL:         cfg.TTL,
		PurposeTTL:  cfg.Purposes,
		Seal:        cfg.Seal,
		Suppressor:  suppressions,
		SuppressFor: cfg.SuppressFor,
		Logger:      logger,
	}
	if emitter != nil {
		hcfg.Events = emitter
	}
	handler, err := tasks.NewSendCodeHandler(hcfg)
	if err != nil {
		return nil, err
	}
	var intake *bounce.Intake
	if cfg.BounceAddr != "" {
		bcfg := bounce.Config{
			Path:        cfg.ReturnPath,
			Purposes:    slices.Collect(maps.Keys(cfg.Purposes)),
			Records:     records,
			Suppressor:  suppressions,
			SuppressFor: cfg.SuppressFor,
			Observer:    m,
			Hostname:    cfg.SMTP.HelloName,
			Logger:      logger,
		}
		if emitter != nil {
			bcfg.Events = emitter
		}
		intake, err = bounce.New(bcfg)
		if err != nil {
			return nil, err
		}
	}
	var reconciler *reconcile.Reconciler
	if cfg.ReconcileInterval > 0 {
		reconciler, err = reconcile.New(reconcile.Config{
			Redis: rdb, Records: records, Tasks: insp,
			Queue:       asynq.NewClientFromRedisClient(rdb), // shares rdb; closing rdb closes it
			QueueShards: cfg.QueueShards, TTLOf: cfg.TTLOf, Interval: cfg.ReconcileInterval, Observer: m, Logger: logger,
		})
		if err != nil {
			return nil, err
		}
	}
	mux := asynq.NewServeMux()
	chain := []asynq.MiddlewareFunc{tasks.ReserveStack}
	if tp != nil {
		chain = append(chain, tasks.Trace(tp))
	}
	mux.Use(append(chain, tasks.Logging(logger), tasks.Hold(relays), tasks.Observe(m))...)
	mux.Handle(tasks.TypeSendCode, handler)

	server := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:    cfg.Concurrency,
		Queues:         queues(cfg.QueueShards),
		RetryDelayFunc: tasks.RetryDelay,
		// A send the breaker let go at shutdown is not a failed attempt.
		IsFailure:       tasks.IsFailure,
		ErrorHandler:    tasks.ErrorHandler(logger, m),
		ShutdownTimeout: cfg.ShutdownTimeout,
		// Move due retries to the queue every second, not every five:
		// codes are short-lived.
		DelayedTaskCheckInterval: time.Second,
		// asynq polls the queue and, when it finds it empty, sleeps half
		// to one and a half TaskCheckInterval before it looks again. At
		// its default of 1 s a worker that keeps up with the requests
		// (and so often finds the queue empty) adds up to 1.5 s to a
		// code's delivery. See pollInterval.
		TaskCheckInterval: pollInterval,
		Logger:            platform.AsynqLogger{L: logger},
		LogLevel:          asynqLevel(logger),
	})
	var eventServer *asynq.Server
	var eventMux *asynq.ServeMux
	var deliverer *events.Deliverer
	if emitter != nil {
		if eventMux, deliverer, err = newEventMux(cfg, records, emitter, m.Events, logger); err != nil {
			return nil, err
		}
		eventServer = asynq.NewServerFromRedisClient(rdb, asynq.Config{
			// Its own slots: an endpoint that hangs holds at most these,
			// never one of the mail's (WORKER_CONCURRENCY).
			Concurrency:     events.DeliverConcurrency,
			Queues:          map[string]int{events.Queue: 1},
			RetryDelayFunc:  events.RetryDelay,
			ShutdownTimeout: cfg.ShutdownTimeout,
			Logger:          platform.AsynqLogger{L: logger},
			LogLevel:        asynqLevel(logger),
		})
	}
	a = &App{
		eventServer: eventServer,
		eventMux:    eventMux,
		deliverer:   deliverer,
		cfg:         cfg,
		logger:      logger,
		rdb:         rdb,
		clients:     clients,
		relays:      relays,
		server:      server,
		mux:         mux,
		handler:     handler,
		done:        make(chan error, 1),
		Registry:    reg,

		intake:     intake,
		bounceDone: make(chan error, 1),

		reconciler: reconciler,
	}
	a.adminSrv = platform.NewAdminServer(a.adminMux(), logger)
	return a, nil
}

// adminMux serves /healthz, /readyz and /metrics openly, to any Host, and
// pprof behind platform.AdminGuard (a Host of ADMIN_ADDR or
// DASHBOARD_HOSTS, and basic auth when DASHBOARD_AUTH is set); without
// credentials pprof is served only on a loopback ADMIN_ADDR.
func (a *App) adminMux() *http.ServeMux {
	mux := platform.AdminMux(a.rdb, a.relays.Ready)
	mux.Handle("GET /metrics", metrics.Handler(a.Registry))
	if a.cfg.DashboardAuth.Set() || platform.IsLoopback(a.cfg.AdminAddr) {
		a.pprof = true
		platform.MountPprof(mux, platform.AdminGuard(a.cfg.AdminHosts(a.cfg.AdminAddr), a.cfg.DashboardAuth, a.logger))
	}
	return mux
}

// Open listens on ADMIN_ADDR (and BOUNCE_ADDR) and starts processing
// tasks.
func (a *App) Open(ctx context.Context) error {
	var err error
	if a.adminLn, err = platform.Listen(ctx, "ADMIN_ADDR", a.cfg.AdminAddr); err != nil {
		return err
	}
	if a.intake != nil {
		ln, err := platform.Listen(ctx, "BOUNCE_ADDR", a.cfg.BounceAddr)
		if err != nil {
			_ = a.adminLn.Close()
			return err
		}
		a.bounceLn = platform.LimitListener(ln, platform.ConnLimits{Max: bounce.MaxConnections, PerSource: bounce.MaxPerSource})
	}
	if err := a.server.Start(a.mux); err != nil {
		_ = a.adminLn.Close()
		if a.bounceLn != nil {
			_ = a.bounceLn.Close()
		}
		return err
	}
	if a.eventServer != nil {
		if err := a.eventServer.Start(a.eventMux); err != nil {
			a.server.Shutdown()
			_ = a.adminLn.Close()
			if a.bounceLn != nil {
				_ = a.bounceLn.Close()
			}
			return err
		}
	}
	if a.intake != nil {
		go func() { a.bounceDone <- a.intake.Serve(a.bounceLn) }()
		a.logger.Info("bounce intake listening", "bounce_addr", a.bounceLn.Addr().String(), "return_path", a.cfg.ReturnPath.String())
	}
	go func() {
		if err := a.adminSrv.Serve(a.adminLn); !errors.Is(err, http.ErrServerClosed) {
			a.done <- err
			return
		}
		a.done <- nil
	}()
	a.reconciled = make(chan struct{})
	rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	a.stopReconcile = stop
	go func() {
		defer close(a.reconciled)
		if a.reconciler != nil {
			a.reconciler.Run(rctx)
		}
	}()
	a.logger.Info("worker started", "admin_addr", a.adminLn.Addr().String(),
		"concurrency", a.cfg.Concurrency, "queues", tasks.Queues(a.cfg.QueueShards), "pprof", a.pprof,
		"reconcile_interval", a.cfg.ReconcileInterval.String(), "webhook_endpoints", len(a.cfg.WebhookURLs))
	return nil
}

// AdminAddr is the address the admin server listens on.
func (a *App) AdminAddr() string { return a.adminLn.Addr().String() }

// BounceAddr is the address the bounce intake listens on; "" without one.
func (a *App) BounceAddr() string {
	if a.bounceLn == nil {
		return ""
	}
	return a.bounceLn.Addr().String()
}

// Close stops taking tasks and waits up to SHUTDOWN_TIMEOUT for sends in
// flight; asynq puts a send it had to cut off back on the queue. What
// follows them (the admin server's requests in flight, the bounce reports
// being recorded, the records of mails sent) finishes until ctx ends,
// which platform.ServeApp sets SHUTDOWN_TIMEOUT after the signal: one
// budget for the whole shutdown, as the orchestrator's grace period
// expects.
func (a *App) Close(ctx context.Context) error {
	// Stop the reconciler (a pass in flight ends at its next Redis call),
	// then stop taking tasks, then let the sends the breakers hold back
	// go (back to the queue, no retry counted), then wait for the rest.
	if a.stopReconcile != nil {
		a.stopReconcile()
		<-a.reconciled
	}
	// The events' server shuts down beside the mail's, not after it, so
	// that SHUTDOWN_TIMEOUT bounds both together: the events the last
	// sends queue wait in Redis for the next worker.
	a.server.Stop()
	if a.eventServer != nil {
		a.eventServer.Stop()
	}
	a.relays.Close()
	eventsDone := make(chan struct{})
	go func() {
		defer close(eventsDone)
		if a.eventServer != nil {
			a.eventServer.Shutdown()
			a.deliverer.Close()
		}
	}()
	a.server.Shutdown()
	<-eventsDone
	err := a.adminSrv.Shutdown(ctx)
	// Reports being recorded finish before Redis closes; an MTA sends
	// again whatever the intake had not taken.
	if a.intake != nil {
		err = errors.Join(err, a.intake.Shutdown(ctx), <-a.bounceDone)
	}
	// Sent mails whose record Redis has not taken yet: try until the
	// shutdown deadline, so that a re-run does not mail again.
	if werr := a.handler.Wait(ctx); werr != nil {
		a.logger.Warn("shutdown before every sent mail was recorded", "err", werr)
	}
	err = errors.Join(err, <-a.done)
	for _, c := range a.clients {
		err = errors.Join(err, c.Close())
	}
	err = errors.Join(err, a.rdb.Close())
	a.logger.Info("worker stopped")
	return err
}

// newEventMux routes the events' tasks: deliveries, signed with
// WEBHOOK_SECRET, and the expiry checks. It returns the deliverer too,
// whose connections the worker closes at shutdown.
func newEventMux(cfg Config, records *delivery.Records, emitter *events.Emitter, obs events.Observer, logger *slog.Logger) (*asynq.ServeMux, *events.Deliverer, error) {
	deliverer, err := events.NewDeliverer(cfg.WebhookURLs, cfg.WebhookSecret.Keys(), obs, logger)
	if err != nil {
		return nil, nil, err
	}
	checker, err := events.NewExpiryChecker(records, emitter, logger)
	if err != nil {
		return nil, nil, err
	}
	mux := asynq.NewServeMux()
	mux.Handle(events.TypeDeliver, deliverer)
	mux.Handle(events.TypeExpiry, checker)
	return mux, deliverer, nil
}

// relayNotify is the breaker's Notify of the relay name: its events, or
// nil without an emitter.
func relayNotify(emitter *events.Emitter, name string) func(tasks.Transition) {
	if emitter == nil {
		return nil
	}
	return tasks.RelayEvents(emitter, name, workerName())
}

// workerName names this worker process in relay events: host:pid.
func workerName() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return host + ":" + strconv.Itoa(os.Getpid())
}

// namedRelay is one relay's client configuration and its name.
type namedRelay struct {
	name string
	cfg  relay.Config
}

// pollInterval is asynq's TaskCheckInterval: an idle worker looks at the
// queue about 20 times a second, one small Lua script each, and a code
// waits at most 75 ms in the queue for a worker that has a free slot
// (BENCHMARKS.md measures request to SMTP accept).
const pollInterval = 50 * time.Millisecond

func asynqLevel(l *slog.Logger) asynq.LogLevel {
	if l.Enabled(context.Background(), slog.LevelDebug) {
		return asynq.DebugLevel
	}
	return asynq.InfoLevel
}

// queues weighs every shard of the send queue alike.
func queues(shards int) map[string]int {
	m := map[string]int{}
	for _, q := range tasks.Queues(shards) {
		m[q] = 1
	}
	return m
}
