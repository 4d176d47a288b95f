package grpcapi

import (
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Defaults of Limits, each used when its field is zero.
const (
	// DefaultMaxConcurrentStreams bounds the calls and streams open at once
	// on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); a client
	// queues the calls past it. 100 is HTTP/2's recommended least value.
	DefaultMaxConcurrentStreams = 100
	// DefaultMaxWatches bounds the long-lived streams (health Watch,
	// reflection) open at once across the server. A client that checks
	// health by Watch opens one per connection.
	DefaultMaxWatches = 1024
	// DefaultMaxWatchesPerConn bounds them on one connection.
	DefaultMaxWatchesPerConn = 8
	// DefaultMaxConnectionIdle closes a connection with no call open for
	// this long (a GOAWAY; clients reconnect on their next call), so that
	// idle connections hold a listener's slots for seconds, not minutes.
	// 30 s is twice HTTP's IdleTimeout and three of the client pings the
	// server allows (every 10 s): a client calling at least twice a
	// minute keeps its connection.
	DefaultMaxConnectionIdle = 30 * time.Second
	// DefaultMaxConnectionAge closes every connection after this long
	// (with some jitter), so that none is held forever.
	DefaultMaxConnectionAge = 30 * time.Minute
	// DefaultMaxConnectionAgeGrace is how long the calls and streams open
	// on a connection past its age may go on before it is cut.
	DefaultMaxConnectionAgeGrace = time.Minute
)

// HandshakeTimeout bounds the wait for a new connection's HTTP/2 preface:
// a connection that sends nothing is closed after it.
const HandshakeTimeout = 5 * time.Second

// Limits bound what clients can hold open on a Server. Each zero field
// takes its default.
type Limits struct {
	// MaxConcurrentStreams bounds the calls and streams open at once on
	// one connection.
	MaxConcurrentStreams uint32
	// MaxWatches bounds the health Watch and reflection streams open at
	// once across the server; one past it ends at once with
	// RESOURCE_EXHAUSTED.
	MaxWatches int
	// MaxWatchesPerConn bounds them on one connection, so that one client
	// cannot take them all.
	MaxWatchesPerConn int
	// MaxConnectionIdle closes a connection with no call open for this
	// long.
	MaxConnectionIdle time.Duration
	// MaxConnectionAge closes a connection this old.
	MaxConnectionAge time.Duration
	// MaxConnectionAgeGrace lets the calls open on a connection past its
	// age go on this long.
	MaxConnectionAgeGrace time.Duration
}

// withDefaults returns l with every zero field set to its default.
func (l Limits) withDefaults() Limits {
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if l.MaxWatches <= 0 {
		l.MaxWatches = DefaultMaxWatches
	}
	if l.MaxWatchesPerConn <= 0 {
		l.MaxWatchesPerConn = DefaultMaxWatchesPerConn
	}
	if l.MaxConnectionIdle <= 0 {
		l.MaxConnectionIdle = DefaultMaxConnectionIdle
	}
	if l.MaxConnectionAge <= 0 {
		l.MaxConnectionAge = DefaultMaxConnectionAge
	}
	if l.MaxConnectionAgeGrace <= 0 {
		l.MaxConnectionAgeGrace = DefaultMaxConnectionAgeGrace
	}
	return l
}

// errTooManyStreams ends a stream past a bound of watchLimit.
var errTooManyStreams = status.Error(codes.ResourceExhausted, "too many open streams: close one or retry later")

// watchLimit counts the long-lived streams open across the server and on
// each connection.
type watchLimit struct {
	max, perConn int

	mu     sync.Mutex
	total  int
	byConn map[string]int // by the peer's address: one per connection
}

func newWatchLimit(total, perConn int) *watchLimit {
	return &watchLimit{max: total, perConn: perConn, byConn: map[string]int{}}
}

// acquire takes a slot for a stream on conn, or reports false when a bound
// is reached.
func (l *watchLimit) acquire(conn string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max || l.byConn[conn] >= l.perConn {
		return false
	}
	l.total++
	l.byConn[conn]++
	return true
}

// release gives back a slot acquire took.
func (l *watchLimit) release(conn string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byConn[conn]--; l.byConn[conn] <= 0 {
		delete(l.byConn, conn)
	}
}

// boundWatches ends a stream (the server's streams are health Watch and
// reflection, open as long as the client likes) with RESOURCE_EXHAUSTED
// when MaxWatches streams are open, or MaxWatchesPerConn on its connection.
// MaxConcurrentStreams alone would let every connection hold that many.
func (s *Server) boundWatches(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	conn := ""
	if p, ok := peer.FromContext(ss.Context()); ok && p.Addr != nil {
		conn = p.Addr.String()
	}
	if !s.watches.acquire(conn) {
		return errTooManyStreams
	}
	defer s.watches.release(conn)
	return handler(srv, ss)
}
