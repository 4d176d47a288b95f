// Package redistest starts real Redis deployments on free loopback ports for
// tests, and stops them, with their directories, when the test ends. It never
// touches the Redis a developer may already run on 6379.
//
// Three deployments, the three values of the service's REDIS_MODE:
//
//   - single: Start, one redis-server (Server).
//   - sentinel: StartSentinel, a primary, a replica and three sentinels
//     watching them (Sentinel), with KillPrimary and WaitFailover for
//     failover tests.
//   - cluster: StartCluster, a Redis Cluster of three masters, with
//     WithReplicas a replica for each (Cluster), with Kill and Restart of a
//     node for fault tests.
//
// StartMode starts the deployment that VERIFYQ_TEST_REDIS_MODE names
// (single when unset), so one suite runs against each in turn:
//
//	VERIFYQ_TEST_REDIS_MODE=cluster go test ./codes/
//
// The tests fail, rather than skip, when redis-server or redis-cli is not
// installed: integration tests are not optional here (.ci/run installs both).
package redistest

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server child process: the single deployment.
type Server struct {
	n *node
}

var _ Deployment = (*Server)(nil)

// Start starts a redis-server on a free loopback port and stops it when the
// test ends. The test fails if redis-server is not installed: integration
// tests are not optional here (.ci/run installs it).
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s, err := New(opts...)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// New starts a redis-server on a free loopback port. Callers must Close it.
// Of the options only WithAOF applies.
func New(opts ...Option) (*Server, error) {
	o := collect(opts)
	var err error
	for range portAttempts {
		var dir string
		if dir, err = os.MkdirTemp("", "verifyq-redis-*"); err != nil {
			return nil, err
		}
		var ports []int
		if ports, err = freePorts(1); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		n := &node{role: "redis-server", port: ports[0], dir: dir}
		n.args = dataArgs(n, o.aof)
		s := &Server{n: n}
		if err = n.start(); err == nil {
			return s, nil
		}
		s.Close()
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	return nil, err
}

// Addr is host:port of the server.
func (s *Server) Addr() string { return s.n.addr() }

// Masters is Addr, as the one master there is, for code that reads every
// master of a deployment of any mode (Cluster.Masters).
func (s *Server) Masters() ([]string, error) { return []string{s.Addr()}, nil }

// URL is a redis:// URL for database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Mode is ModeSingle.
func (s *Server) Mode() string { return ModeSingle }

// Client returns a go-redis client for the server, closed when the test ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// UniversalClient is Client as a redis.UniversalClient.
func (s *Server) UniversalClient(t testing.TB) redis.UniversalClient {
	t.Helper()
	return s.Client(t)
}

// Stop kills the server process ("Redis goes away"). Restart brings it back
// on the same port.
func (s *Server) Stop() { s.n.kill() }

// Restart starts the server again on the same port and waits until it
// answers PING.
func (s *Server) Restart() error {
	if err := s.n.start(); err != nil {
		return fmt.Errorf("redistest: %w", err)
	}
	return nil
}

// Close stops the server and removes its directory.
func (s *Server) Close() {
	s.Stop()
	_ = os.RemoveAll(s.n.dir)
}

// dataArgs are the redis-server arguments of a node that holds data: its
// port on 127.0.0.1, its directory and log, no RDB snapshots, an
// append-only file written through on every command when aof is set, and a
// full sync to a replica that starts at once (rather than after the default
// five seconds of waiting for more replicas).
func dataArgs(n *node, aof bool) []string {
	return []string{
		"--port", strconv.Itoa(n.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", yesNo(aof), "--appendfsync", "always",
		"--repl-diskless-sync-delay", "0",
		"--dir", n.dir, "--logfile", n.logPath(), "--daemonize", "no", "--loglevel", "notice",
	}
}

// Option configures a deployment. Each starter applies the options that
// concern it and says which those are.
type Option func(*options)

type options struct {
	aof       bool
	replicas  int
	delay     time.Duration
	downAfter time.Duration
}

func collect(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// WithAOF makes every node that holds data keep an append-only file,
// written through on every command, so that a kill and a restart lose
// nothing: a production Redis with AOF restarting.
func WithAOF() Option { return func(o *options) { o.aof = true } }

// WithReplicationDelay puts a link in front of a Sentinel deployment's
// first primary that holds the primary's replication stream d before the
// replica gets it, as a distant or busy replica would lag; everyone else
// (the sentinels, the clients, the replica's acknowledgements) passes at
// once. KillPrimary then drops what the link holds, as a crash of the
// primary's host loses the bytes in flight: the writes of the last d that
// the primary acknowledged are lost in the failover, unless a client
// waited for the replica (WAIT). Only StartSentinel reads it.
func WithReplicationDelay(d time.Duration) Option { return func(o *options) { o.delay = d } }

// WithDownAfter sets a Sentinel deployment's down-after-milliseconds to d
// (a second without it): how long a primary must be silent before the
// sentinels count it down and fail over. The sentinels ping every second
// (or every down-after, if shorter), so with a second one late reply is
// enough; a longer one makes a failover slower to begin and one the test
// did not cause less likely. A test that restarts the killed primary
// (Restart) should use several seconds: a second failover would make the
// restarted node the primary again. Only StartSentinel reads it.
func WithDownAfter(d time.Duration) Option { return func(o *options) { o.downAfter = d } }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
