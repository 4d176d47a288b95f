// Package replication makes a send wait until its writes reached enough
// replicas before it is answered (REDIS_MIN_REPLICAS): Redis WAIT,
// bounded, after a write of its own on the same connection, on each
// primary the send wrote to.
//
// WAIT blocks until the replicas acknowledged every write that its own
// connection made before it. A send's writes went over other pooled
// connections (the admission's pipeline, asynq's enqueue), but a
// primary's replication stream is one ordered stream: a write that
// completes after them comes after them in it, and a replica that
// acknowledged the later write acknowledged everything before it. So each
// wait is one pipeline, on one connection, of a SET of a key of
// verifyq's own on the primary (its marker) and WAIT: one more round
// trip per send.
package replication

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/internal/slot"
)

// ErrTooFew is matched by every *TooFewError.
var ErrTooFew = errors.New("too few replicas acknowledged the writes")

// TooFewError says that fewer replicas than wanted acknowledged a send's
// writes on a primary within the timeout.
type TooFewError struct {
	// Acked is how many did; Want how many were wanted.
	Acked, Want int
	// Timeout is how long WAIT waited.
	Timeout time.Duration
}

func (e *TooFewError) Error() string {
	return fmt.Sprintf("%d of %d replicas acknowledged the writes within %s", e.Acked, e.Want, e.Timeout)
}

// Is makes errors.Is(err, ErrTooFew) true.
func (e *TooFewError) Is(target error) bool { return target == ErrTooFew }

// MaxReplicas bounds REDIS_MIN_REPLICAS: more replicas than any
// deployment of verifyq runs.
const MaxReplicas = 16

// MarkerLife is how long a marker key lives: it is written only to be
// replicated, and read by nobody.
const MarkerLife = time.Minute

// markerKey is the marker of a primary of a single or Sentinel
// deployment.
const markerKey = "verifyq:replicated"

// MarkerKey is the marker of the slot of key, on a cluster: a key of
// verifyq's own in that slot, so on the primary that holds key; at most
// one per slot, whatever the keys.
func MarkerKey(key string) string { return "verifyq:{" + slot.Tag(slot.Of(key)) + "}:replicated" }

// Waiter waits for replicas on rdb.
type Waiter struct {
	rdb     redis.UniversalClient
	min     int
	timeout time.Duration
}

// New returns a Waiter that wants min replicas to acknowledge within
// timeout (min > 0, timeout > 0, below the client's read timeout: WAIT
// holds the connection's reply that long).
func New(rdb redis.UniversalClient, minReplicas int, timeout time.Duration) *Waiter {
	return &Waiter{rdb: rdb, min: minReplicas, timeout: timeout}
}

// Wait waits until the writes made so far to the slots of keys reached the
// replicas: on a single or Sentinel deployment the one primary, keys
// aside; on a cluster each primary that holds one of keys, at once. It
// returns a *TooFewError when a primary's replicas fell short, or the
// error of Redis.
func (w *Waiter) Wait(ctx context.Context, keys ...string) error {
	cluster, ok := w.rdb.(*redis.ClusterClient)
	if !ok {
		return w.waitOn(ctx, w.rdb, markerKey)
	}
	markers := map[string]string{} // primary's address -> marker
	nodes := map[string]*redis.Client{}
	for _, k := range keys {
		node, err := cluster.MasterForKey(ctx, k)
		if err != nil {
			return fmt.Errorf("wait for replicas: %w", err)
		}
		addr := node.Options().Addr
		if _, seen := nodes[addr]; !seen {
			nodes[addr], markers[addr] = node, MarkerKey(k)
		}
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for addr, node := range nodes {
		wg.Go(func() {
			if err := w.waitOn(ctx, node, markers[addr]); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", addr, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitOn writes marker and waits for the replicas of c's primary, in one
// pipeline on one connection.
func (w *Waiter) waitOn(ctx context.Context, c redis.Cmdable, marker string) error {
	var acked *redis.Cmd
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, marker, time.Now().UnixMilli(), MarkerLife)
		acked = p.Do(ctx, "WAIT", w.min, w.timeout.Milliseconds())
		return nil
	})
	if err != nil {
		return fmt.Errorf("wait for replicas: %w", err)
	}
	n64, err := acked.Int64()
	if err != nil {
		return fmt.Errorf("wait for replicas: %w", err)
	}
	if n := int(n64); n < w.min {
		return &TooFewError{Acked: n, Want: w.min, Timeout: w.timeout}
	}
	return nil
}
