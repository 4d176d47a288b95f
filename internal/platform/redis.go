package platform

import (
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Modes of REDIS_MODE.
const (
	RedisSingle   = "single"   // one Redis (a primary, maybe behind a proxy)
	RedisSentinel = "sentinel" // a primary found through Redis Sentinel
	RedisCluster  = "cluster"  // Redis Cluster
)

// Redis says how to reach Redis: REDIS_MODE and REDIS_URL, parsed.
type Redis struct {
	mode     string
	single   *redis.Options
	failover *redis.FailoverOptions
	cluster  *redis.ClusterOptions
}

// ParseRedis parses REDIS_URL in the form of go-redis for mode: ParseURL
// for single (redis:// or rediss://), ParseFailoverURL for sentinel (the
// sentinels' addresses, master_name=NAME, more sentinels as addr=), and
// ParseClusterURL for cluster (seed nodes, more as addr=; a database other
// than 0 is refused, where go-redis ignores it). Errors name the variable
// and never repeat the URL, which may hold a password.
func ParseRedis(mode, rawURL string) (Redis, error) {
	r := Redis{mode: mode}
	var err error
	switch mode {
	case RedisSingle:
		r.single, err = redis.ParseURL(rawURL)
	case RedisSentinel:
		r.failover, err = redis.ParseFailoverURL(rawURL)
		if err == nil && r.failover.MasterName == "" {
			err = errors.New("no master_name")
		}
	case RedisCluster:
		r.cluster, err = redis.ParseClusterURL(rawURL)
		if err == nil && !clusterDatabase(rawURL) {
			return Redis{}, errors.New("REDIS_URL: Redis Cluster has only database 0: end the first address " +
				"with /0 or nothing")
		}
	default:
		return Redis{}, fmt.Errorf("REDIS_MODE: %q: want %s, %s or %s", mode, RedisSingle, RedisSentinel, RedisCluster)
	}
	if err != nil {
		return Redis{}, fmt.Errorf("REDIS_URL: not a valid URL for REDIS_MODE=%s (see go-redis's URL forms)", mode)
	}
	return r, nil
}

// clusterDatabase reports whether a cluster URL names no database or
// database 0, the only one Redis Cluster has: ParseClusterURL ignores the
// path.
func clusterDatabase(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	switch strings.Trim(u.Path, "/") {
	case "", "0":
		return true
	}
	return false
}

// Mode is REDIS_MODE.
func (r Redis) Mode() string { return r.mode }

// MinPoolSize is the least number of connections a client opens per node
// when REDIS_URL does not say (pool_size=N); go-redis's own default is 10
// per CPU, 20 on a 2-core machine. A send holds a connection for each of its
// two round trips and the API servers do not bound the requests in flight,
// so with fewer connections than requests in flight the requests queue for
// one in go-redis's pool, a hand-off and a wake-up each: on 2 cores at 64
// callers that cost the enqueuer about a sixth of its CPU per request.
// Connections are opened only when needed.
const MinPoolSize = 64

// Client returns the one client a process shares for codes, the queue, the
// dashboard and its readiness check, with timeouts fit for a request path (a
// request must fail fast, not hang, when Redis goes away), buffers of
// BufferSize unless the URL sizes a pipeline's and, unless the URL sets
// one, a pool of at least MinPoolSize connections per node.
func (r Redis) Client() redis.UniversalClient {
	pool := max(MinPoolSize, 10*runtime.GOMAXPROCS(0))
	switch r.mode {
	case RedisSentinel:
		o := *r.failover
		setTimeouts(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout)
		setBuffers(&o.ReadBufferSize, &o.WriteBufferSize, &o.PipelineReadBufferSize, &o.PipelineWriteBufferSize)
		if o.PoolSize == 0 {
			o.PoolSize = pool
		}
		return redis.NewFailoverClient(&o)
	case RedisCluster:
		o := *r.cluster
		setTimeouts(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout)
		setBuffers(&o.ReadBufferSize, &o.WriteBufferSize, &o.PipelineReadBufferSize, &o.PipelineWriteBufferSize)
		if o.PoolSize == 0 {
			o.PoolSize = pool
		}
		// go-redis learns of a new slot map on a MOVED reply, but not when
		// a primary stops answering: reload it every few seconds, not
		// every minute, so that a failover costs seconds of errors.
		if o.ClusterStateReloadInterval == 0 {
			o.ClusterStateReloadInterval = ClusterReloadInterval
		}
		return redis.NewClusterClient(&o)
	default:
		o := *r.single
		setTimeouts(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout)
		setBuffers(&o.ReadBufferSize, &o.WriteBufferSize, &o.PipelineReadBufferSize, &o.PipelineWriteBufferSize)
		if o.PoolSize == 0 {
			o.PoolSize = pool
		}
		return redis.NewClient(&o)
	}
}

// ReadTimeout is how long the client waits for a reply: REDIS_URL's
// read_timeout, else DefaultTimeout; 0 when the URL turns it off (-1,
// -2). A command that blocks on the server (WAIT) must return within it.
func (r Redis) ReadTimeout() time.Duration {
	var d time.Duration
	switch {
	case r.failover != nil:
		d = r.failover.ReadTimeout
	case r.cluster != nil:
		d = r.cluster.ReadTimeout
	case r.single != nil:
		d = r.single.ReadTimeout
	}
	switch {
	case d < 0:
		return 0
	case d == 0:
		return DefaultTimeout
	}
	return d
}

// ClusterReloadInterval is how often a cluster client reloads the slot map.
const ClusterReloadInterval = 3 * time.Second

// DefaultTimeout is the dial, read and write timeout of a client whose
// REDIS_URL sets none.
const DefaultTimeout = 2 * time.Second

// setTimeouts gives each unset timeout DefaultTimeout.
func setTimeouts(ds ...*time.Duration) {
	for _, d := range ds {
		if *d == 0 {
			*d = DefaultTimeout
		}
	}
}

// BufferSize is each connection's read buffer and its write buffer, a
// pipeline's connection's too. verifyq's commands and replies are well under
// a kilobyte, and a longer reply (a page of tasks for the dashboard) is read
// through the buffer in pieces. go-redis's own sizes, 32 KiB each way and 128
// KiB for a pipeline's connection, held 3.3 MB of the worker's heap at 100
// slots.
const BufferSize = 4 << 10

// setBuffers gives each unset buffer size BufferSize: the URL may size a
// pipeline's (pipeline_read_buffer_size=, pipeline_write_buffer_size=).
func setBuffers(sizes ...*int) {
	for _, n := range sizes {
		if *n == 0 {
			*n = BufferSize
		}
	}
}

// SharedRedis hands a process's one client to asynq components that take
// a connection option (the asynqmon dashboard), so they open no connections
// of their own. Closing such a component closes the client: the process
// closes it once, last.
type SharedRedis struct{ C redis.UniversalClient }

// MakeRedisClient returns the shared client (asynq.RedisConnOpt).
func (s SharedRedis) MakeRedisClient() any { return s.C }
