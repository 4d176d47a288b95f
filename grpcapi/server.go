// Package grpcapi is verifyq's gRPC edge. One server carries:
//
//   - message.VarifyService, the old gateway's service, wire-compatible: every
//     outcome is an OK status with a legacy error number in the reply;
//   - verifyq.v1.CodeService for new callers, with gRPC status codes;
//   - grpc.health.v1.Health, whose status follows Redis readiness;
//   - server reflection, so grpcurl works without the .proto files.
//
// Every call of the two code services is admitted by the auth Guard first:
// v1 calls by their authorization metadata and the method's scope, the old
// service's by its key or else its peer's network (LEGACY_CALLERS).
// Every reply's legacy number, status code, reason and message come from
// the outcome table (package outcome), as on the HTTP edge. Every unary call
// runs under panic recovery, a deadline for callers that set none (as the
// old gateway does), and ends in one log line with the address masked (never
// the code) and one observation of the request metrics.
package grpcapi

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"net"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/stats"

	"github.com/verifyq/verifyq/auth"
	"github.com/verifyq/verifyq/clientip"
	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	messagepb "github.com/verifyq/verifyq/proto/message"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
	"github.com/verifyq/verifyq/service"
)

// Limits of every connection.
const (
	// MaxRecvMsgSize bounds a request message: the largest legitimate one
	// is an address and a code, a few hundred bytes.
	MaxRecvMsgSize = 16 << 10
	// MaxHeaderListSize bounds a call's metadata (its HTTP/2 header list,
	// as HPACK counts it), as the HTTP API bounds its request headers:
	// gRPC's default, 16 MB, would let every call that never sends its
	// message hold that much. The server advertises it; a call past it is
	// reset before any handler runs.
	MaxHeaderListSize = 16 << 10
	// DefaultCallTimeout is Config.CallTimeout when zero.
	DefaultCallTimeout = 5 * time.Second
)

// Service is what the gRPC edge needs (service.Service).
type Service interface {
	SendCode(ctx context.Context, req service.SendRequest) (service.Sent, error)
	VerifyCode(ctx context.Context, req service.VerifyRequest) error
	Status(ctx context.Context, id codes.ID) (delivery.Status, error)
}

var _ Service = (*service.Service)(nil)

// Config configures a Server.
type Config struct {
	// CallTimeout bounds a unary call whose client set no deadline.
	// Zero means DefaultCallTimeout.
	CallTimeout time.Duration
	// Ready reports whether the service can serve (Redis answers). The
	// health status follows it; nil means always ready.
	Ready func(ctx context.Context) error
	// ReadyInterval is how often Ready is checked. Zero means one second.
	ReadyInterval time.Duration
	// Metrics, when set, records every call of the two code services.
	Metrics RequestObserver
	// TrustedProxies are the peers whose x-forwarded-for and x-client-ip
	// metadata is believed; any other peer is the end user itself.
	TrustedProxies clientip.Trusted
	// Limits bound the streams and connections clients hold open.
	Limits Limits
	// Guard admits the callers of the code services; nil admits everyone
	// (auth.Anonymous).
	Guard *auth.Guard
	// TLS, when set, makes the server speak TLS with it (its client
	// certificates, if it asks for them, name the callers); nil is
	// plaintext.
	TLS *tls.Config
	// LegacyOnly serves the old message.VarifyService alone: no
	// verifyq.v1, health or reflection (the plaintext LEGACY_GRPC_ADDR
	// beside TLS listeners).
	LegacyOnly bool
	// StatsHandler, when set, sees every call (tracing.GRPC: a span per
	// call); nil adds none.
	StatsHandler stats.Handler
}

// RequestObserver records one answered request (metrics.Enqueuer), the same
// observer the HTTP edge reports to.
type RequestObserver interface {
	ObserveRequest(api, route, caller, outcome string, d time.Duration)
}

// Server is the gRPC server of the enqueuer.
type Server struct {
	svc    Service
	logger *slog.Logger
	cfg    Config
	grpc   *grpc.Server
	health *health.Server
	// watches counts the open health Watch and reflection streams.
	watches *watchLimit

	// stopping ends the readiness loop and open streams (health Watch,
	// reflection) when Shutdown begins.
	stopping context.Context
	stop     context.CancelFunc

	mu       sync.Mutex
	closed   bool
	loopDone chan struct{} // nil until Serve starts the readiness loop
}

// StreamWorkersPerCPU is the number of goroutines kept for calls per CPU,
// enough that the calls in flight seldom find them all busy. On 2 cores at
// 64 callers, 128 workers took about 13 % less CPU per call than 32 and
// 18 % less than none; at 8 callers the three did alike. An idle worker
// costs its stack, a few KB.
const StreamWorkersPerCPU = 64

func streamWorkers() uint32 {
	return uint32(min(StreamWorkersPerCPU*runtime.GOMAXPROCS(0), math.MaxUint16)) //nolint:gosec // G115: bounded just above
}

// healthNames are the names the health service reports: the whole server
// and each service.
var healthNames = []string{
	"",
	messagepb.VarifyService_ServiceDesc.ServiceName,
	verifyqv1.CodeService_ServiceDesc.ServiceName,
}

// New returns a server for svc. It reports NOT_SERVING until Serve's first
// readiness check passes.
func New(svc Service, logger *slog.Logger, cfg Config) *Server {
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.ReadyInterval <= 0 {
		cfg.ReadyInterval = time.Second
	}
	cfg.Limits = cfg.Limits.withDefaults()
	stopping, stop := context.WithCancel(context.Background())
	s := &Server{
		svc:      svc,
		logger:   logger,
		cfg:      cfg,
		health:   health.NewServer(),
		watches:  newWatchLimit(cfg.Limits.MaxWatches, cfg.Limits.MaxWatchesPerConn),
		stopping: stopping,
		stop:     stop,
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxRecvMsgSize),
		grpc.MaxHeaderListSize(MaxHeaderListSize),
		grpc.ForceServerCodecV2(newLenientCodec()),
		// Run calls on goroutines that are kept and keep their grown
		// stacks, not on a new goroutine per call: the chain of
		// interceptors and go-redis outgrows a new goroutine's stack, and
		// copying it costs a few per cent of the enqueuer's CPU
		// (BENCHMARKS.md, "no stream workers"). A call that finds every
		// worker busy still gets a goroutine of its own, so this bounds
		// nothing.
		grpc.NumStreamWorkers(streamWorkers()),
		// Bounds of what one client can hold open: streams per
		// connection, the wait for a new connection's preface, and
		// connections idle or old (Limits).
		grpc.MaxConcurrentStreams(cfg.Limits.MaxConcurrentStreams),
		grpc.ConnectionTimeout(HandshakeTimeout),
		// Clients may ping every 10 s, even between calls (the gateway
		// keeps one channel open); faster pingers are sent away.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             10 * time.Second,
			PermitWithoutStream: true,
		}),
		// Find dead peers after a minute of silence; close connections
		// idle or old.
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:                  time.Minute,
			Timeout:               20 * time.Second,
			MaxConnectionIdle:     cfg.Limits.MaxConnectionIdle,
			MaxConnectionAge:      cfg.Limits.MaxConnectionAge,
			MaxConnectionAgeGrace: cfg.Limits.MaxConnectionAgeGrace,
		}),
		grpc.ChainUnaryInterceptor(
			observe(logger, cfg.Metrics),
			recoverUnary(logger),
			defaultDeadline(cfg.CallTimeout),
			s.admit,
		),
		grpc.ChainStreamInterceptor(
			s.boundWatches,
			recoverStream(logger),
			s.endStreamOnStop,
		),
	}
	if cfg.TLS != nil {
		// The handshake runs on the accepted connection, within
		// HandshakeTimeout: a listener's connection cap counts raw TCP
		// connections.
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	if cfg.StatsHandler != nil {
		opts = append(opts, grpc.StatsHandler(cfg.StatsHandler))
	}
	s.grpc = grpc.NewServer(opts...)
	messagepb.RegisterVarifyServiceServer(s.grpc, legacyServer{s: s})
	if !cfg.LegacyOnly {
		verifyqv1.RegisterCodeServiceServer(s.grpc, codeServer{s: s})
		healthpb.RegisterHealthServer(s.grpc, s.health)
		reflection.Register(s.grpc)
	}
	s.setHealth(healthpb.HealthCheckResponse_NOT_SERVING)
	return s
}

// Serve starts the readiness loop and serves on ln until Shutdown. It
// returns nil after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return grpc.ErrServerStopped
	}
	if s.loopDone == nil {
		s.loopDone = make(chan struct{})
		go s.watchReadiness()
	}
	s.mu.Unlock()
	return s.grpc.Serve(ln)
}

// Shutdown reports NOT_SERVING, ends open streams, stops taking calls and
// waits for calls in flight until ctx ends; then it cuts them off and
// returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	loopDone := s.loopDone
	s.mu.Unlock()

	s.health.Shutdown()
	s.stop()
	if loopDone != nil {
		<-loopDone
	}
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		s.grpc.Stop()
		<-stopped
		return fmt.Errorf("grpc: calls cut off: %w", ctx.Err())
	}
}

// watchReadiness checks Ready now and then every ReadyInterval until
// Shutdown, and sets the health status of every name from it.
func (s *Server) watchReadiness() {
	defer close(s.loopDone)
	t := time.NewTicker(s.cfg.ReadyInterval)
	defer t.Stop()
	serving := false
	for first := true; ; first = false {
		err := s.checkReady()
		if s.stopping.Err() != nil {
			return
		}
		if now := err == nil; now != serving || first {
			serving = now
			if serving {
				s.setHealth(healthpb.HealthCheckResponse_SERVING)
				s.logger.Info("grpc health: serving")
			} else {
				s.setHealth(healthpb.HealthCheckResponse_NOT_SERVING)
				s.logger.Warn("grpc health: not serving", "err", err)
			}
		}
		select {
		case <-s.stopping.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) checkReady() error {
	if s.cfg.Ready == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(s.stopping, s.cfg.ReadyInterval)
	defer cancel()
	return s.cfg.Ready(ctx)
}

func (s *Server) setHealth(st healthpb.HealthCheckResponse_ServingStatus) {
	for _, name := range healthNames {
		s.health.SetServingStatus(name, st)
	}
}
