package redistest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Shared returns a deployment of the mode EnvMode names (see Mode) that
// the test has to itself until it ends, for suites that run against every
// mode and touch nothing but keys.
//
// In single mode it is a fresh server (Start), as cheap as ever. In sentinel
// and cluster mode it is leased from a pool of the test binary: when the
// test ends every master is emptied (FLUSHALL) and the deployment goes back
// to the pool for the next test, so a package pays a cluster's start-up
// (some two seconds) once for each test running at the same time rather
// than once for each test. Its sentinels count a primary down only after
// sharedDownAfter, not a second. Its Close does nothing; the pool's deployments
// are closed by ClosePool, which the package's TestMain calls after m.Run
// (and the kernel ends them with the test binary in any case).
//
// A test that kills or restarts a node, changes a server's configuration
// or ACL users, or must see a server no other test used, starts its own
// with StartMode or StartDeployment.
func Shared(t testing.TB) Deployment {
	t.Helper()
	mode := Mode()
	if err := CheckMode(mode); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	if mode == ModeSingle {
		return Start(t)
	}
	d, err := pool.take(mode)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(func() { pool.give(mode, d) })
	return leased{d}
}

// ClosePool closes every deployment Shared started and that no test holds.
// A TestMain calls it after m.Run (see Run).
func ClosePool() { pool.close() }

// Run runs a package's tests and closes the deployments they pooled; it
// returns m.Run's exit code, for a TestMain's os.Exit.
func Run(m *testing.M) int {
	code := m.Run()
	ClosePool()
	return code
}

// poolFlushTimeout bounds the FLUSHALL of a deployment going back to the
// pool.
const poolFlushTimeout = 10 * time.Second

// flusher is a deployment that can be emptied for the next test.
type flusher interface {
	Deployment
	FlushAll(ctx context.Context) error
}

// leased is a pooled deployment as a test sees it: Close is left to the
// pool.
type leased struct{ flusher }

// Close does nothing: the deployment goes back to the pool when the test
// ends.
func (leased) Close() {}

// sharedPool holds the idle deployments of each mode.
type sharedPool struct {
	mu   sync.Mutex
	idle map[string][]flusher
}

var pool = &sharedPool{idle: map[string][]flusher{}}

// sharedDownAfter is the down-after of the pool's Sentinel deployments. A
// test that leases one fails nothing over, so a failover there is always a
// false one, and it loses the writes the replica had not yet received: with
// the default second, a primary that answered the sentinels' ping a second
// late on a loaded machine (a CI run of the suites under -race) was failed
// over in the middle of an e2e test, which lost its send.
const sharedDownAfter = 5 * time.Second

// take returns an idle deployment of mode, or starts one.
func (p *sharedPool) take(mode string) (flusher, error) {
	p.mu.Lock()
	if n := len(p.idle[mode]); n > 0 {
		d := p.idle[mode][n-1]
		p.idle[mode] = p.idle[mode][:n-1]
		p.mu.Unlock()
		return d, nil
	}
	p.mu.Unlock()
	switch mode {
	case ModeSentinel:
		return NewSentinel(WithDownAfter(sharedDownAfter))
	case ModeCluster:
		return NewCluster()
	}
	return nil, fmt.Errorf("no pool for redis mode %q", mode)
}

// give empties d and makes it idle; a deployment that cannot be emptied
// is closed instead.
func (p *sharedPool) give(mode string, d flusher) {
	ctx, cancel := context.WithTimeout(context.Background(), poolFlushTimeout)
	defer cancel()
	if err := d.FlushAll(ctx); err != nil {
		d.Close()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.idle[mode] = append(p.idle[mode], d)
}

func (p *sharedPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle = map[string][]flusher{}
	p.mu.Unlock()
	for _, ds := range idle {
		for _, d := range ds {
			d.Close()
		}
	}
}
