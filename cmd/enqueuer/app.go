package main

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/verifyq/verifyq/clientip"
	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/events"
	"github.com/verifyq/verifyq/grpcapi"
	"github.com/verifyq/verifyq/httpapi"
	"github.com/verifyq/verifyq/internal/metrics"
	"github.com/verifyq/verifyq/internal/platform"
	"github.com/verifyq/verifyq/internal/tracing"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/replication"
	"github.com/verifyq/verifyq/service"
	"github.com/verifyq/verifyq/tasks"
)

// DashboardPath is where the asynqmon queue dashboard is mounted on
// ADMIN_ADDR.
const DashboardPath = "/monitoring/"

// SuppressionsPath serves the suppression list on ADMIN_ADDR (list, lift;
// lifting refused with DASHBOARD_READONLY).
const SuppressionsPath = "/suppressions"

// App is the running enqueuer: the public HTTP API, the gRPC server and the
// admin server.
type App struct {
	cfg       Config
	logger    *slog.Logger
	rdb       redis.UniversalClient
	dashboard *asynqmon.HTTPHandler
	// Registry holds the enqueuer's metrics, served on /metrics.
	Registry *prometheus.Registry
	// Metrics is the enqueuer's metric set; the gRPC edge records its
	// requests with Metrics.ObserveRequest.
	Metrics *metrics.Enqueuer

	httpSrv, adminSrv       *http.Server
	grpcSrv                 *grpcapi.Server
	httpLn, adminLn, grpcLn net.Listener
	// tls is the public listeners' TLS (nil: plaintext); with it,
	// legacySrv serves the old service alone in plaintext on legacyLn.
	tls       *tls.Config
	legacySrv *grpcapi.Server
	legacyLn  net.Listener
	done      chan error
}

// NewApp wires the enqueuer from cfg. It does not listen yet. With tp
// (tracing on) the public HTTP and gRPC servers, the Redis calls and the
// enqueue make spans; nil makes none.
func NewApp(cfg Config, logger *slog.Logger, tp trace.TracerProvider) (*App, error) {
	// One client for everything: codes, the queue, its metrics, the
	// dashboard and the readiness checks.
	rdb := cfg.Redis.Client()
	var err error
	if tp != nil {
		err = tracing.Redis(rdb, tp)
	}
	var store *codes.Store
	if err == nil {
		store, err = codes.NewStore(rdb, cfg.codes())
	}
	var limiter *limits.Limiter
	if err == nil {
		limiter, err = limits.New(rdb, cfg.limits(), store)
	}
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	reg := metrics.NewRegistry()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	m := metrics.NewEnqueuer(reg, insp)
	queue := asynq.NewClientFromRedisClient(rdb) // shares rdb; closed with it
	core := service.New(store, limiter, delivery.NewRecords(rdb, store.Keys, insp), m.Queue(queue), logger)
	core.QueueShards = cfg.QueueShards
	core.DefaultLocale = cfg.Locale
	core.Tracer = tracing.Tracer(tp, "github.com/verifyq/verifyq/service")
	if cfg.MinReplicas > 0 {
		core.Replicas = replication.New(rdb, cfg.MinReplicas, cfg.MinReplicasTimeout)
	}
	if len(cfg.WebhookURLs) > 0 {
		core.Events = events.NewEmitter(queue, cfg.WebhookURLs, m.Events, logger)
	}
	svc := m.Service(core)

	dashboard := asynqmon.New(asynqmon.Options{
		RootPath:         DashboardPath,
		RedisConnOpt:     platform.SharedRedis{C: rdb},
		PayloadFormatter: asynqmon.PayloadFormatterFunc(tasks.FormatPayload),
		ReadOnly:         cfg.DashboardReadOnly,
	})

	tlsConfig, err := cfg.tlsFiles().Config(logger)
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	guard := cfg.guard()
	grpcConfig := grpcapi.Config{
		CallTimeout:    cfg.RequestTimeout,
		Ready:          func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		Metrics:        m,
		TrustedProxies: clientip.Trusted(cfg.TrustedProxies),
		Guard:          guard,
		TLS:            tlsConfig,
	}
	var api http.Handler = httpapi.NewHandler(svc, logger, httpapi.Config{
		TrustedProxies: clientip.Trusted(cfg.TrustedProxies),
		RequestTimeout: cfg.RequestTimeout,
		Metrics:        m,
		Guard:          guard,
	})
	if tp != nil {
		grpcConfig.StatsHandler = tracing.GRPC(tp)
		api = httpapi.KnownPaths(tracing.HTTP(api, tp))
	}
	a := &App{
		cfg:       cfg,
		logger:    logger,
		rdb:       rdb,
		dashboard: dashboard,
		Registry:  reg,
		Metrics:   m,
		httpSrv:   platform.NewHTTPServer(api, logger, cfg.RequestTimeout),
		grpcSrv:   grpcapi.New(svc, logger, grpcConfig),
		tls:       tlsConfig,
		done:      make(chan error, 4),
	}
	if tlsConfig != nil {
		legacy := grpcConfig
		legacy.TLS, legacy.LegacyOnly = nil, true
		a.legacySrv = grpcapi.New(svc, logger, legacy)
	}
	a.adminSrv = platform.NewAdminServer(a.adminMux(), logger)
	return a, nil
}

// adminMux serves /healthz, /readyz, /metrics and the OpenAPI document of
// the HTTP API (httpapi.OpenAPIPath and OpenAPIJSONPath: the public
// contract, nothing secret) openly, to any Host, and the dashboard, the
// suppression list and pprof behind platform.AdminGuard:
// only to a Host of ADMIN_ADDR or DASHBOARD_HOSTS, and with basic auth when
// DASHBOARD_AUTH is set. The dashboard takes state changes (POST,
// DELETE) only from its own pages (platform.SameOrigin): a form on another
// site can POST. Every state-changing request that passes the guard is an
// audit record (platform.Audit); with DASHBOARD_READONLY none changes
// anything: asynqmon refuses its writes, /suppressions its DELETE, and
// pprof only reads. The suppression list changes only by DELETE, which a page
// on another site cannot send without a CORS preflight, never granted here.
// Config refuses a non-loopback ADMIN_ADDR without DASHBOARD_AUTH.
func (a *App) adminMux() *http.ServeMux {
	guard := platform.AdminGuard(a.cfg.AdminHosts(a.cfg.AdminAddr), a.cfg.DashboardAuth, a.logger)
	mux := platform.AdminMux(a.rdb)
	mux.Handle("GET /metrics", metrics.Handler(a.Registry))
	openAPI := httpapi.NewOpenAPIHandler()
	mux.Handle("GET "+httpapi.OpenAPIPath, openAPI)
	mux.Handle("GET "+httpapi.OpenAPIJSONPath, openAPI)
	mux.Handle(DashboardPath, guard(platform.SameOrigin(a.dashboard)))
	suppressions := delivery.NewSuppressions(a.rdb, a.cfg.Identity())
	mux.Handle(SuppressionsPath, guard(httpapi.NewSuppressionsHandler(suppressions,
		httpapi.SuppressionsConfig{ReadOnly: a.cfg.DashboardReadOnly})))
	platform.MountPprof(mux, guard)
	return mux
}

// fdReserve is the file descriptors the enqueuer needs besides the
// connections of its public listeners: the admin server's, Redis's (the
// pool and the dashboard's), the listeners, logs.
const fdReserve = 256

// Open listens on HTTP_ADDR, GRPC_ADDR and ADMIN_ADDR, and with TLS on
// LEGACY_GRPC_ADDR, and serves in the background. With TLS the handshake
// runs on a connection the caps have admitted: they count TCP
// connections, handshaken or not. Each public listener accepts at most MAX_CONNECTIONS
// connections at once; further ones wait in the kernel's accept queue
// until one closes. Of those, one source holds at most
// MAX_CONNECTIONS_PER_SOURCE (Config.PerSource); its next one is closed at
// once (connListener). ADMIN_ADDR has no such bound, so
// it keeps answering while they are full, as long as the file descriptor
// limit leaves room: Open warns when it does not.
func (a *App) Open(ctx context.Context) error {
	var err error
	if a.httpLn, err = platform.Listen(ctx, "HTTP_ADDR", a.cfg.HTTPAddr); err != nil {
		return err
	}
	a.httpLn = a.connListener(a.httpLn, "http")
	if a.tls != nil {
		a.httpLn = tls.NewListener(a.httpLn, a.tls)
	}
	if a.grpcLn, err = platform.Listen(ctx, "GRPC_ADDR", a.cfg.GRPCAddr); err != nil {
		_ = a.httpLn.Close()
		return err
	}
	a.grpcLn = a.connListener(a.grpcLn, "grpc") // the gRPC server handshakes (grpcapi.Config.TLS)
	if a.legacySrv != nil {
		if a.legacyLn, err = platform.Listen(ctx, "LEGACY_GRPC_ADDR", a.cfg.LegacyGRPCAddr); err != nil {
			_ = a.httpLn.Close()
			_ = a.grpcLn.Close()
			return err
		}
		a.legacyLn = a.connListener(a.legacyLn, "grpc_legacy")
	}
	if a.adminLn, err = platform.Listen(ctx, "ADMIN_ADDR", a.cfg.AdminAddr); err != nil {
		_ = a.httpLn.Close()
		_ = a.grpcLn.Close()
		if a.legacyLn != nil {
			_ = a.legacyLn.Close()
		}
		return err
	}
	go a.serve(a.httpSrv, a.httpLn)
	go a.serve(a.adminSrv, a.adminLn)
	go a.serveGRPC(a.grpcSrv, a.grpcLn)
	listeners, legacyAddr := 2, ""
	if a.legacySrv != nil {
		go a.serveGRPC(a.legacySrv, a.legacyLn)
		listeners, legacyAddr = 3, a.legacyLn.Addr().String()
	}
	a.logger.Info("enqueuer started", "http_addr", a.httpLn.Addr().String(),
		"grpc_addr", a.grpcLn.Addr().String(), "admin_addr", a.adminLn.Addr().String(),
		"tls", a.tls != nil, "client_certificates", a.cfg.TLSClientCAFile != "", "legacy_grpc_addr", legacyAddr,
		"dashboard", DashboardPath, "dashboard_auth", a.cfg.DashboardAuth.Set(), "dashboard_readonly", a.cfg.DashboardReadOnly,
		"max_connections", a.cfg.MaxConnections, "max_connections_per_source", a.cfg.PerSource(), "callers", a.cfg.Keys.Len(),
		"redis_min_replicas", a.cfg.MinReplicas)
	if a.cfg.Unauthenticated() {
		a.logger.Warn("serving every caller without an API key on an address other hosts can reach "+
			"(ALLOW_UNAUTHENTICATED=true): anyone who reaches it can ask for codes, verify them and read their status; "+
			"set API_KEYS_FILE", "http_addr", a.cfg.HTTPAddr, "grpc_addr", a.cfg.GRPCAddr)
	}
	need := uint64(listeners*a.cfg.MaxConnections + fdReserve) //nolint:gosec // G115: positive, bounded by Resolve
	if limit, ok := platform.OpenFileLimit(); ok && limit < need {
		a.logger.Warn("the open file limit is below the connection caps and a reserve: under a connection flood "+
			"the admin server and Redis may run out of descriptors; raise the limit (ulimit -n) or lower the caps",
			"open_file_limit", limit, "max_connections", a.cfg.MaxConnections, "listeners", listeners, "reserve", fdReserve)
	}
	return nil
}

// connListener bounds ln, the public listener name ("http", "grpc",
// "grpc_legacy"), by
// MAX_CONNECTIONS and MAX_CONNECTIONS_PER_SOURCE. The source is the peer's
// address, never a forwarding header; the trusted proxies, whose
// connections carry many clients, are bounded by MAX_CONNECTIONS alone. A
// connection refused is counted and logged at debug level.
func (a *App) connListener(ln net.Listener, name string) net.Listener {
	perSource := a.cfg.PerSource()
	return platform.LimitListener(ln, platform.ConnLimits{
		Max:       a.cfg.MaxConnections,
		PerSource: perSource,
		Exempt:    clientip.Trusted(a.cfg.TrustedProxies).Contains,
		Refused: func(src netip.Prefix) {
			a.Metrics.ConnectionRefused(name)
			a.logger.Debug("connection closed: its source holds its share of the listener",
				"listener", name, "source", src.String(), "max_connections_per_source", perSource)
		},
	})
}

func (a *App) serve(srv *http.Server, ln net.Listener) {
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		a.done <- err
		return
	}
	a.done <- nil
}

// serveGRPC serves srv on ln until Close stops it. A Close that came
// before this goroutine reached Serve makes Serve return ErrServerStopped
// at once: the stop that Close asked for, not a failure.
func (a *App) serveGRPC(srv *grpcapi.Server, ln net.Listener) {
	if err := srv.Serve(ln); !errors.Is(err, grpc.ErrServerStopped) {
		a.done <- err
		return
	}
	a.done <- nil
}

// HTTPAddr is the address the public API listens on.
func (a *App) HTTPAddr() string { return a.httpLn.Addr().String() }

// GRPCAddr is the address the gRPC server listens on.
func (a *App) GRPCAddr() string { return a.grpcLn.Addr().String() }

// LegacyGRPCAddr is the address the old service listens on in plaintext
// beside TLS listeners; "" without TLS.
func (a *App) LegacyGRPCAddr() string {
	if a.legacyLn == nil {
		return ""
	}
	return a.legacyLn.Addr().String()
}

// AdminAddr is the address the admin server listens on.
func (a *App) AdminAddr() string { return a.adminLn.Addr().String() }

// Close stops taking requests on every listener at once, lets those in
// flight finish until ctx ends, and closes the Redis connections. The
// servers shut down side by side: a call that holds one server's drain
// (a gRPC call whose client never sends its request) must not keep the
// others taking new requests, nor eat the time of those in flight on them.
func (a *App) Close(ctx context.Context) error {
	shutdowns := []func(context.Context) error{a.grpcSrv.Shutdown, a.httpSrv.Shutdown, a.adminSrv.Shutdown}
	if a.legacySrv != nil {
		shutdowns = append(shutdowns, a.legacySrv.Shutdown)
	}
	errc := make(chan error, len(shutdowns))
	for _, shutdown := range shutdowns {
		go func() { errc <- shutdown(ctx) }()
	}
	var err error
	for range shutdowns {
		err = errors.Join(err, <-errc)
	}
	for range shutdowns { // each server's Serve has returned
		err = errors.Join(err, <-a.done)
	}
	// The asynq client, the inspectors and the dashboard share rdb; closing
	// it closes them.
	err = errors.Join(err, a.rdb.Close())
	a.logger.Info("enqueuer stopped")
	return err
}
