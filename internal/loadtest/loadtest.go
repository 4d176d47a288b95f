// Package loadtest drives load at a verifyq front end and measures it: a
// closed loop of a fixed number of callers, or an open loop at a fixed rate,
// for a bounded time and a bounded number of requests, with latency
// percentiles and a count of every outcome.
//
// The drivers (HTTP, the legacy gRPC service, verifyq.v1) send code
// requests for distinct addresses, so the send limits of a production
// configuration never refuse one; see Addresses.
package loadtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// OK is the outcome of a request that did what was asked.
const OK = "ok"

// Request sends request number i (0, 1, 2, ...) and returns its outcome:
// OK, or a short label such as "rate_limited" or "unavailable".
type Request func(ctx context.Context, i int) string

// Config bounds a run.
type Config struct {
	// Concurrency is the number of callers. In a closed loop (Rate 0)
	// each sends its next request when the last one is answered; in an
	// open loop it bounds the requests in flight.
	Concurrency int
	// Rate is the open loop's requests per second; 0 means closed loop.
	Rate float64
	// Duration is the measured time, after Warmup.
	Duration time.Duration
	// Warmup is run first and not measured (connections, pools, JIT of
	// the scripts in Redis).
	Warmup time.Duration
	// MaxRequests bounds the requests of the whole run, warm-up included.
	// Zero means DefaultMaxRequests.
	MaxRequests int
	// Grace is how long requests in flight at the end may take before
	// they are cancelled. Zero means DefaultGrace.
	Grace time.Duration
}

// Defaults of Config.
const (
	DefaultMaxRequests = 2_000_000
	DefaultGrace       = 10 * time.Second
	// MaxDuration bounds Warmup + Duration of one run.
	MaxDuration = 10 * time.Minute
)

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Concurrency < 1 {
		errs = append(errs, errors.New("concurrency must be at least 1"))
	}
	if c.Rate < 0 {
		errs = append(errs, errors.New("rate must not be negative"))
	}
	if c.Duration <= 0 || c.Warmup < 0 || c.Warmup+c.Duration > MaxDuration {
		errs = append(errs, fmt.Errorf("duration must be positive and, with the warm-up, at most %s", MaxDuration))
	}
	if c.MaxRequests < 0 {
		errs = append(errs, errors.New("max requests must not be negative"))
	}
	return errors.Join(errs...)
}

// Result is what a run measured. Only requests started after the warm-up
// count.
type Result struct {
	// Requests is the number of measured requests, whatever their outcome.
	Requests int
	// Elapsed is from the end of the warm-up to the last measured answer.
	Elapsed time.Duration
	// Throughput is Requests per second of Elapsed.
	Throughput float64
	// OKThroughput counts only OK outcomes.
	OKThroughput float64
	// Latency of the measured requests, all outcomes. In an open loop it
	// is taken from when the request was due, not when a caller was free
	// to send it, so a saturated front end shows as latency instead of
	// silently lowering the rate.
	Latency Percentiles
	// Outcomes counts measured requests by outcome.
	Outcomes map[string]int
	// Capped is true when MaxRequests ended the run before its time.
	Capped bool
	// WarmupRequests counts the requests of the warm-up, not measured.
	WarmupRequests int
	// Latencies holds every measured latency, sorted.
	Latencies []time.Duration
}

// Merge combines the results of runs of the same load, taken one after
// the other: counts and times add up, and the percentiles are those of all
// their requests together.
func Merge(rs ...Result) Result {
	var m Result
	m.Outcomes = map[string]int{}
	for _, r := range rs {
		m.Requests += r.Requests
		m.WarmupRequests += r.WarmupRequests
		m.Elapsed += r.Elapsed
		m.Capped = m.Capped || r.Capped
		for k, v := range r.Outcomes {
			m.Outcomes[k] += v
		}
		m.Latencies = append(m.Latencies, r.Latencies...)
	}
	if m.Elapsed > 0 {
		m.Throughput = float64(m.Requests) / m.Elapsed.Seconds()
		m.OKThroughput = float64(m.Outcomes[OK]) / m.Elapsed.Seconds()
	}
	m.Latency = Summarise(m.Latencies)
	return m
}

// Percentiles summarises a latency distribution.
type Percentiles struct {
	P50, P90, P99, Max time.Duration
}

// Summarise returns the percentiles of d (nearest rank); d is sorted in
// place.
func Summarise(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	slices.Sort(d)
	at := func(q float64) time.Duration {
		i := int(q*float64(len(d))+0.5) - 1
		return d[min(max(i, 0), len(d)-1)]
	}
	return Percentiles{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: d[len(d)-1]}
}

// String formats the percentiles in milliseconds.
func (p Percentiles) String() string {
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s", Millis(p.P50), Millis(p.P90), Millis(p.P99), Millis(p.Max))
}

// Millis formats d in milliseconds with two decimals.
func Millis(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

// OutcomeString lists outcomes by decreasing count: "ok=1000 rate_limited=3".
func OutcomeString(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}

// sample is one measured request.
type sample struct {
	latency time.Duration
	outcome string
}

// caller collects the samples of one goroutine, so that recording takes no
// lock.
type caller struct {
	samples []sample
	last    time.Time // when its last measured request was answered
	warmup  int       // requests of the warm-up
}

// Run sends requests with req as c says and measures them. It returns when
// the time is up or MaxRequests were sent, and the requests in flight were
// answered or cancelled after Grace; it returns early, with what was
// measured, if ctx ends.
func Run(ctx context.Context, c Config, req Request) (Result, error) {
	if err := c.Validate(); err != nil {
		return Result{}, err
	}
	if c.MaxRequests == 0 {
		c.MaxRequests = DefaultMaxRequests
	}
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	start := time.Now()
	measureFrom := start.Add(c.Warmup)
	end := measureFrom.Add(c.Duration)
	// Requests still out Grace after the end are cancelled.
	reqCtx, cancel := context.WithDeadline(ctx, end.Add(c.Grace))
	defer cancel()

	callers := make([]*caller, c.Concurrency)
	for i := range callers {
		callers[i] = &caller{samples: make([]sample, 0, 1024)}
	}
	var capped bool
	if c.Rate == 0 {
		capped = closedLoop(reqCtx, callers, c.MaxRequests, measureFrom, end, req)
	} else {
		capped = openLoop(reqCtx, callers, c, start, measureFrom, end, req)
	}

	res := Result{Outcomes: map[string]int{}, Capped: capped}
	var lat []time.Duration
	last := measureFrom
	for _, cl := range callers {
		for _, s := range cl.samples {
			lat = append(lat, s.latency)
			res.Outcomes[s.outcome]++
		}
		if cl.last.After(last) {
			last = cl.last
		}
		res.WarmupRequests += cl.warmup
	}
	res.Requests = len(lat)
	res.Elapsed = last.Sub(measureFrom)
	if res.Elapsed > 0 {
		res.Throughput = float64(res.Requests) / res.Elapsed.Seconds()
		res.OKThroughput = float64(res.Outcomes[OK]) / res.Elapsed.Seconds()
	}
	res.Latency = Summarise(lat)
	res.Latencies = lat
	return res, ctx.Err()
}

// closedLoop runs len(callers) goroutines that each send one request after
// another until end or until limit requests were sent.
func closedLoop(ctx context.Context, callers []*caller, limit int, measureFrom, end time.Time, req Request) (capped bool) {
	var (
		mu   sync.Mutex
		next int
	)
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if next >= limit {
			capped = true
			return 0, false
		}
		next++
		return next - 1, true
	}
	var wg sync.WaitGroup
	for _, cl := range callers {
		wg.Go(func() {
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				i, ok := take()
				if !ok {
					return
				}
				out := req(ctx, i)
				t1 := time.Now()
				if t0.Before(measureFrom) {
					cl.warmup++
				} else {
					cl.samples = append(cl.samples, sample{t1.Sub(t0), out})
					cl.last = t1
				}
			}
		})
	}
	wg.Wait()
	return capped
}

// openLoop schedules request i at start + i/rate and hands it to the first
// free caller.
func openLoop(ctx context.Context, callers []*caller, c Config, start, measureFrom, end time.Time, req Request) (capped bool) {
	interval := time.Duration(float64(time.Second) / c.Rate)
	due := func(i int) time.Time { return start.Add(time.Duration(i) * interval) }
	work := make(chan int, len(callers))
	var wg sync.WaitGroup
	for _, cl := range callers {
		wg.Go(func() {
			for i := range work {
				t0 := due(i)
				out := req(ctx, i)
				t1 := time.Now()
				if t0.Before(measureFrom) {
					cl.warmup++
				} else {
					cl.samples = append(cl.samples, sample{t1.Sub(t0), out})
					cl.last = t1
				}
			}
		})
	}
	defer wg.Wait()
	defer close(work)
	for i := 0; ; {
		if i >= c.MaxRequests {
			return true
		}
		t := due(i)
		if !t.Before(end) {
			return false
		}
		if d := time.Until(t); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return false
			}
		}
		// Hand out every request due by now; a full channel means all
		// callers are busy, and the wait shows in the latency.
		for now := time.Now(); i < c.MaxRequests && !due(i).After(now) && due(i).Before(end); i++ {
			select {
			case work <- i:
			case <-ctx.Done():
				return false
			}
		}
	}
}
